//! From the document form to a [`Policy`]: every semantic check, each failure reported
//! with the field it concerns (`spec.rules[1].to.paths[0]`) and why, all at once.

use std::fmt;

use spiffe::TrustDomain;

use super::raw::{RawPolicy, RawRule, RawSource, RawTo};
use super::{
    API_VERSION, Action, KIND, KUBERNETES_NAME_PREFIX, Policy, RequestMatcher, Rule, Selector,
    SourceMatcher,
};
use crate::cidr::Cidr;
use crate::http::{Method, PathPattern};
use crate::identity::{IdPrefix, IdSelector, parse_exact_source};

/// One problem in one document: the field path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Records the error of `result` under `field`, if any, and passes the value on.
    fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.push(field, reason)).ok()
    }
}

/// The longest DNS-1123 label.
const MAX_LABEL: usize = 63;

/// Validates one document. On failure, returns every problem found, in document order.
pub(crate) fn validate(raw: RawPolicy) -> Result<Policy, Vec<FieldError>> {
    let mut errors = Errors::default();

    if raw.api_version != API_VERSION {
        errors.push(
            "apiVersion",
            format!("must be {API_VERSION:?}, found {:?}", raw.api_version),
        );
    }
    if raw.kind != KIND {
        errors.push("kind", format!("must be {KIND:?}, found {:?}", raw.kind));
    }
    let name = errors.check("metadata.name", policy_name(&raw.metadata.name));
    let namespace = match &raw.metadata.namespace {
        None => Some(None),
        Some(ns) => errors
            .check("metadata.namespace", dns_label("namespace", ns))
            .map(Some),
    };

    let spec = raw.spec;
    let workloads = errors.check(
        "spec.selector.spiffeId",
        IdSelector::parse(&spec.selector.spiffe_id),
    );
    for (i, port) in spec.selector.ports.iter().enumerate() {
        if *port == 0 {
            errors.push(
                format!("spec.selector.ports[{i}]"),
                "port 0 is not a destination port",
            );
        }
    }
    let action = errors.check("spec.action", action(&spec.action));
    let rules: Vec<Option<Rule>> = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| validate_rule(&mut errors, &format!("spec.rules[{i}]"), rule))
        .collect();

    // A failed check always records an error; a value missing without one would still
    // refuse the document rather than panic.
    match (name, namespace, workloads, action) {
        (Some(name), Some(namespace), Some(workloads), Some(action)) if errors.0.is_empty() => {
            Ok(Policy {
                name,
                namespace,
                selector: Selector {
                    workloads,
                    ports: spec.selector.ports,
                },
                action,
                rules: rules.into_iter().flatten().collect(),
            })
        }
        _ => Err(errors.0),
    }
}

/// A policy name: a DNS-1123 label, or `k8s/<namespace>/<name>` (both DNS-1123 labels)
/// for a policy read from a Kubernetes resource, so that it can never collide with an
/// operator's policy or with a resource of the same name in another namespace.
fn policy_name(s: &str) -> Result<String, String> {
    let Some(rest) = s.strip_prefix(KUBERNETES_NAME_PREFIX) else {
        return dns_label("name", s);
    };
    match rest.split_once('/') {
        Some((namespace, name)) => {
            dns_label("namespace in name", namespace)?;
            dns_label("name", name)?;
            Ok(s.to_owned())
        }
        None => Err(format!(
            "name {s:?}: names starting with {KUBERNETES_NAME_PREFIX:?} take the form \
             k8s/<namespace>/<name>"
        )),
    }
}

fn dns_label(what: &str, s: &str) -> Result<String, String> {
    let valid_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if s.is_empty() {
        Err(format!("{what} is empty"))
    } else if s.len() > MAX_LABEL {
        Err(format!(
            "{what} {s:?} is {} characters long; at most {MAX_LABEL} are allowed (DNS-1123 label)",
            s.len()
        ))
    } else if !valid_chars || s.starts_with('-') || s.ends_with('-') {
        Err(format!(
            "{what} {s:?} is not a DNS-1123 label: lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    } else {
        Ok(s.to_owned())
    }
}

fn action(s: &str) -> Result<Action, String> {
    match s {
        "ALLOW" => Ok(Action::Allow),
        "DENY" => Ok(Action::Deny),
        _ if s.eq_ignore_ascii_case("allow") || s.eq_ignore_ascii_case("deny") => Err(format!(
            "unknown action {s:?}: actions are upper-case, write {:?}",
            s.to_ascii_uppercase()
        )),
        _ => Err(format!("unknown action {s:?}: expected ALLOW or DENY")),
    }
}

fn validate_rule(errors: &mut Errors, field: &str, rule: &RawRule) -> Option<Rule> {
    let mut ok = true;
    let mut from = Vec::with_capacity(rule.from.len());
    for (j, source) in rule.from.iter().enumerate() {
        match validate_source(errors, &format!("{field}.from[{j}]"), source) {
            Some(source) => from.push(source),
            None => ok = false,
        }
    }
    let to = match &rule.to {
        None => Some(None),
        Some(to) => validate_to(errors, &format!("{field}.to"), to).map(Some),
    };
    match (ok, to) {
        (true, Some(to)) => Some(Rule { from, to }),
        _ => None,
    }
}

const SOURCE_KINDS: &str =
    "spiffeId, spiffeIdPrefix, trustDomain, authenticated or unauthenticated";

fn validate_source(errors: &mut Errors, field: &str, source: &RawSource) -> Option<SourceMatcher> {
    let given: Vec<&str> = [
        ("spiffeId", source.spiffe_id.is_some()),
        ("spiffeIdPrefix", source.spiffe_id_prefix.is_some()),
        ("trustDomain", source.trust_domain.is_some()),
        ("authenticated", source.authenticated.is_some()),
        ("unauthenticated", source.unauthenticated.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();

    let before = errors.0.len();
    if given.len() > 1 {
        errors.push(
            field,
            format!(
                "a source entry takes exactly one of {SOURCE_KINDS}; found {} (use separate \
                 entries to match either)",
                given.join(" and ")
            ),
        );
    } else if given.is_empty() && source.cidrs.is_none() {
        errors.push(
            field,
            format!("empty source entry: give one of {SOURCE_KINDS}"),
        );
    }
    if source.cidrs.is_some() && source.unauthenticated != Some(true) {
        errors.push(
            format!("{field}.cidrs"),
            "cidrs applies only to `unauthenticated: true` entries (authenticated peers are \
             matched by SPIFFE ID, not by address)",
        );
    }
    if errors.0.len() > before {
        return None;
    }

    if let Some(id) = &source.spiffe_id {
        errors
            .check(format!("{field}.spiffeId"), parse_exact_source(id))
            .map(SourceMatcher::SpiffeId)
    } else if let Some(prefix) = &source.spiffe_id_prefix {
        errors
            .check(format!("{field}.spiffeIdPrefix"), IdPrefix::parse(prefix))
            .map(SourceMatcher::SpiffeIdPrefix)
    } else if let Some(td) = &source.trust_domain {
        errors
            .check(format!("{field}.trustDomain"), trust_domain(td))
            .map(SourceMatcher::TrustDomain)
    } else if let Some(authenticated) = source.authenticated {
        if authenticated {
            Some(SourceMatcher::Authenticated)
        } else {
            errors.push(
                format!("{field}.authenticated"),
                "`authenticated: false` is not a source: write `authenticated: true`, or \
                 `unauthenticated: true` for plaintext peers",
            );
            None
        }
    } else if source.unauthenticated == Some(true) {
        let cidrs = match &source.cidrs {
            None => Some(Vec::new()),
            Some(cidrs) if cidrs.is_empty() => {
                errors.push(
                    format!("{field}.cidrs"),
                    "cidrs is empty: omit it to match unauthenticated peers from any address",
                );
                None
            }
            Some(cidrs) => {
                let parsed: Vec<Option<Cidr>> = cidrs
                    .iter()
                    .enumerate()
                    .map(|(k, c)| errors.check(format!("{field}.cidrs[{k}]"), Cidr::parse(c)))
                    .collect();
                parsed.into_iter().collect()
            }
        };
        cidrs.map(|cidrs| SourceMatcher::Unauthenticated { cidrs })
    } else {
        errors.push(
            format!("{field}.unauthenticated"),
            "`unauthenticated: false` is not a source: write `unauthenticated: true`, or \
             `authenticated: true` for mesh peers",
        );
        None
    }
}

fn trust_domain(s: &str) -> Result<TrustDomain, String> {
    if s.contains(':') || s.contains('/') {
        return Err(format!(
            "{s:?}: give the bare trust-domain name (example.org), not a SPIFFE ID"
        ));
    }
    TrustDomain::new(s).map_err(|e| format!("{s:?} is not a valid trust domain: {e}"))
}

fn validate_to(errors: &mut Errors, field: &str, to: &RawTo) -> Option<RequestMatcher> {
    if to.methods.is_empty() && to.paths.is_empty() {
        errors.push(
            field,
            "`to` needs methods or paths (omit `to` to match any request)",
        );
        return None;
    }
    let methods: Vec<Option<Method>> = to
        .methods
        .iter()
        .enumerate()
        .map(|(k, m)| errors.check(format!("{field}.methods[{k}]"), Method::parse(m)))
        .collect();
    let paths: Vec<Option<PathPattern>> = to
        .paths
        .iter()
        .enumerate()
        .map(|(k, p)| errors.check(format!("{field}.paths[{k}]"), PathPattern::parse(p)))
        .collect();
    Some(RequestMatcher {
        methods: methods.into_iter().collect::<Option<_>>()?,
        paths: paths.into_iter().collect::<Option<_>>()?,
    })
}
