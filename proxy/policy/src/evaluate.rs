//! Where a request meets the policies: [`PolicySet::evaluate`].
//!
//! The order is the same in the proxy and in the control plane's Explain:
//!
//! 0. an HTTP request whose path [`normalize_path`] refuses, or whose method is not an
//!    HTTP token, is denied (`invalid_path`, `invalid_method`);
//! 1. any matching rule of a DENY policy selecting the destination and port denies;
//! 2. if any ALLOW policy selects the destination and port, a rule of one of them must
//!    match, or the request is denied (`no_allow_rule_matched`);
//! 3. otherwise the mesh default decides.
//!
//! Opaque connections (`http: None`) are decided once, at L4: rule `to` conditions
//! cannot be checked there, so an ALLOW rule with `to` never matches and a DENY rule
//! with `to` matches on its `from` alone, for the whole connection (fail closed).

use std::fmt;
use std::net::IpAddr;

use spiffe::SpiffeId;

use crate::decision::{Decision, Reason, RuleMatch};
use crate::http::is_token;
use crate::mesh_default::MeshDefault;
use crate::path::normalize_path;
use crate::policy::{Action, Policy, Rule};
use crate::policy_set::PolicySet;

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A peer whose SPIFFE ID was verified in the mTLS handshake.
    Authenticated(&'a SpiffeId),
    /// A plaintext peer on a permissive port, known only by its address.
    Unauthenticated(IpAddr),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authenticated(id) => write!(f, "{id}"),
            Self::Unauthenticated(ip) => write!(f, "unauthenticated peer {ip}"),
        }
    }
}

/// The HTTP part of a request, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The request method as received (compared as if upper-cased).
    pub method: &'a str,
    /// The raw request-target path, query included; it is normalised (or refused)
    /// inside [`PolicySet::evaluate`].
    pub path: &'a str,
}

/// What is being authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The peer.
    pub source: Source<'a>,
    /// The local workload being reached (the proxy's own workload, inbound).
    pub destination: &'a SpiffeId,
    /// The destination (application) port.
    pub port: u16,
    /// `Some` for each request on an HTTP port; `None` for the one connection-level
    /// decision on an opaque port.
    pub http: Option<HttpRequest<'a>>,
}

/// An HTTP request after normalisation.
struct Http<'a> {
    method: &'a str,
    path: String,
}

/// What in a rule matched, recorded cheaply and rendered only for the decision.
struct Hit {
    /// The matching `from` entry (`None`: the rule has no `from`).
    source: Option<usize>,
    request: RequestHit,
}

enum RequestHit {
    /// The rule has no `to`.
    Any,
    /// A DENY rule with `to` on an opaque connection.
    OpaqueDeny,
    /// The `to` matched: whether methods were checked, and the matching path pattern.
    Http { methods: bool, path: Option<usize> },
}

impl PolicySet {
    /// Decides one request (HTTP) or one connection (opaque), in the order given in
    /// the [crate documentation](crate#evaluation): invalid path or method, DENY rules,
    /// ALLOW policies, mesh default.
    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        let http = match request.http {
            None => None,
            Some(h) => {
                let path = match normalize_path(h.path) {
                    Ok(path) => path,
                    Err(e) => return refused(Reason::InvalidPath(e)),
                };
                if !is_token(h.method) {
                    return refused(Reason::InvalidMethod);
                }
                Some(Http {
                    method: h.method,
                    path,
                })
            }
        };

        let mut allow_selects = false;
        let mut allowed: Option<(&Policy, usize, Hit)> = None;
        for policy in self.selecting(request.destination) {
            if !policy.selector().selects_port(request.port) {
                continue;
            }
            match policy.action() {
                Action::Deny => {
                    if let Some((rule, hit)) = first_match(policy, request, http.as_ref()) {
                        return rule_decision(policy, rule, &hit, request, http.as_ref());
                    }
                }
                Action::Allow => {
                    allow_selects = true;
                    if allowed.is_none() {
                        allowed = first_match(policy, request, http.as_ref())
                            .map(|(rule, hit)| (policy, rule, hit));
                    }
                }
            }
        }

        if let Some((policy, rule, hit)) = allowed {
            return rule_decision(policy, rule, &hit, request, http.as_ref());
        }
        if allow_selects {
            let policies = self
                .selecting(request.destination)
                .filter(|p| p.action() == Action::Allow)
                .filter(|p| p.selector().selects_port(request.port))
                .map(|p| p.name().to_owned())
                .collect();
            return refused(Reason::NoAllowRuleMatched { policies });
        }
        let (allow, reason) = match (self.mesh_default(), request.source) {
            (MeshDefault::AllowAll, _) => (true, Reason::MeshDefaultAllow(MeshDefault::AllowAll)),
            (MeshDefault::AllowAuthenticated, Source::Authenticated(_)) => (
                true,
                Reason::MeshDefaultAllow(MeshDefault::AllowAuthenticated),
            ),
            (MeshDefault::AllowAuthenticated, Source::Unauthenticated(_)) => {
                (false, Reason::UnauthenticatedByDefault)
            }
            (MeshDefault::Deny, _) => (false, Reason::MeshDefaultDeny),
        };
        Decision {
            allow,
            policy: None,
            rule: None,
            reason,
        }
    }
}

fn refused(reason: Reason) -> Decision {
    Decision {
        allow: false,
        policy: None,
        rule: None,
        reason,
    }
}

/// The first rule of `policy` (in document order) matching the request.
fn first_match(
    policy: &Policy,
    request: &Request<'_>,
    http: Option<&Http<'_>>,
) -> Option<(usize, Hit)> {
    policy
        .rules()
        .iter()
        .enumerate()
        .find_map(|(i, rule)| match_rule(rule, policy.action(), request, http).map(|hit| (i, hit)))
}

fn match_rule(
    rule: &Rule,
    action: Action,
    request: &Request<'_>,
    http: Option<&Http<'_>>,
) -> Option<Hit> {
    let source = if rule.from.is_empty() {
        None
    } else {
        Some(rule.from.iter().position(|m| m.matches(&request.source))?)
    };
    let request = match (&rule.to, http) {
        (None, _) => RequestHit::Any,
        // L4: HTTP conditions cannot be checked. ALLOW fails closed by not matching;
        // DENY fails closed by applying to the whole connection.
        (Some(_), None) => match action {
            Action::Allow => return None,
            Action::Deny => RequestHit::OpaqueDeny,
        },
        (Some(to), Some(http)) => {
            let methods = !to.methods.is_empty();
            if methods && !to.methods.iter().any(|m| m.matches(http.method)) {
                return None;
            }
            let path = if to.paths.is_empty() {
                None
            } else {
                // DENY compares paths ignoring case, ALLOW exactly: both fail closed.
                Some(to.paths.iter().position(|p| match action {
                    Action::Deny => p.matches_ignore_case(&http.path),
                    Action::Allow => p.matches(&http.path),
                })?)
            };
            RequestHit::Http { methods, path }
        }
    };
    Some(Hit { source, request })
}

fn rule_decision(
    policy: &Policy,
    index: usize,
    hit: &Hit,
    request: &Request<'_>,
    http: Option<&Http<'_>>,
) -> Decision {
    let rule = &policy.rules()[index];
    let mut conditions = Vec::with_capacity(3);
    conditions.push(match hit.source {
        None => "any source (the rule has no from)".to_owned(),
        Some(j) => format!("source {} matches {}", request.source, rule.from[j]),
    });
    match (&hit.request, &rule.to, http) {
        (RequestHit::Any, _, _) => conditions.push("any request (the rule has no to)".into()),
        (RequestHit::OpaqueDeny, _, _) => conditions.push(
            "its HTTP conditions cannot be checked on an opaque connection, so the DENY \
             applies to the whole connection"
                .into(),
        ),
        (RequestHit::Http { methods, path }, Some(to), Some(http)) => {
            if *methods {
                let list: Vec<&str> = to.methods.iter().map(|m| m.as_str()).collect();
                conditions.push(format!(
                    "method {} is one of [{}]",
                    http.method,
                    list.join(", ")
                ));
            }
            if let Some(k) = path {
                conditions.push(format!("path {} matches {}", http.path, to.paths[*k]));
            }
        }
        (RequestHit::Http { .. }, _, _) => {}
    }
    let reason_match = RuleMatch {
        policy: policy.name().to_owned(),
        rule: index,
        conditions,
    };
    let (allow, reason) = match policy.action() {
        Action::Deny => (false, Reason::DeniedByRule(reason_match)),
        Action::Allow => (true, Reason::AllowedByRule(reason_match)),
    };
    Decision {
        allow,
        policy: Some(policy.name().to_owned()),
        rule: Some(index),
        reason,
    }
}

#[cfg(test)]
mod tests;
