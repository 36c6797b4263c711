//! What evaluation returns: the verdict, who decided it, and why, with a stable label
//! for metrics and a sentence for humans (logs, `ferrulectl` Explain).

use crate::mesh_default::MeshDefault;
use crate::path::PathError;

/// The outcome of [`PolicySet::evaluate`](crate::PolicySet::evaluate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request (or opaque connection) may proceed.
    pub allow: bool,
    /// The policy whose rule decided, when one did.
    pub policy: Option<String>,
    /// The index of that rule in the policy's `spec.rules`.
    pub rule: Option<usize>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// A human sentence: see [`Reason::explain`].
    pub fn explain(&self) -> String {
        self.reason.explain()
    }
}

/// Why a decision was made. [`as_str`](Self::as_str) is a stable label for metrics and
/// structured logs; [`explain`](Self::explain) is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A rule of a DENY policy selecting the destination matched (step 1).
    DeniedByRule(RuleMatch),
    /// A rule of an ALLOW policy selecting the destination matched, and no DENY rule
    /// did (step 2).
    AllowedByRule(RuleMatch),
    /// ALLOW policies select the destination and port, but none of their rules matched
    /// (step 2): once any ALLOW policy applies, only its rules can admit a request.
    NoAllowRuleMatched {
        /// The ALLOW policies that selected the destination and port, in evaluation
        /// order.
        policies: Vec<String>,
    },
    /// No ALLOW policy selects the destination and port, and the mesh default
    /// (`allow-all`, or `allow-authenticated` for an authenticated peer) allows (step 3).
    MeshDefaultAllow(MeshDefault),
    /// No ALLOW policy selects the destination and port, and the mesh default is `deny`.
    MeshDefaultDeny,
    /// No ALLOW policy selects the destination and port, the mesh default is
    /// `allow-authenticated`, and the peer is a plaintext one.
    UnauthenticatedByDefault,
    /// The HTTP request path was refused by [`normalize_path`](crate::normalize_path);
    /// such a request is denied before any policy is consulted.
    InvalidPath(PathError),
    /// The HTTP request method is not an HTTP token; denied before any policy is
    /// consulted.
    InvalidMethod,
}

/// Which rule matched, and what in it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The policy's name.
    pub policy: String,
    /// The rule's index in `spec.rules`.
    pub rule: usize,
    /// One clause per condition of the rule, e.g. `source spiffe://td/ns/a/sa/b matches
    /// spiffeIdPrefix spiffe://td/ns/` or `path /admin/ matches /admin`.
    pub conditions: Vec<String>,
}

impl Reason {
    /// The stable label: `denied_by_rule`, `allowed_by_rule`, `no_allow_rule_matched`,
    /// `mesh_default_allow`, `mesh_default_deny`, `unauthenticated_by_default`,
    /// `invalid_path` or `invalid_method`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DeniedByRule(_) => "denied_by_rule",
            Self::AllowedByRule(_) => "allowed_by_rule",
            Self::NoAllowRuleMatched { .. } => "no_allow_rule_matched",
            Self::MeshDefaultAllow(_) => "mesh_default_allow",
            Self::MeshDefaultDeny => "mesh_default_deny",
            Self::UnauthenticatedByDefault => "unauthenticated_by_default",
            Self::InvalidPath(_) => "invalid_path",
            Self::InvalidMethod => "invalid_method",
        }
    }

    /// A sentence explaining the decision, e.g. `DENY rule 0 of policy 'block-admin'
    /// matched: source spiffe://td/ns/web/sa/app matches spiffeIdPrefix
    /// spiffe://td/ns/web/; path /admin matches /admin`.
    pub fn explain(&self) -> String {
        match self {
            Self::DeniedByRule(m) => rule_sentence("DENY", m),
            Self::AllowedByRule(m) => rule_sentence("ALLOW", m),
            Self::NoAllowRuleMatched { policies } => format!(
                "no rule of the ALLOW policies selecting this destination and port matched \
                 (policies: {}); once an ALLOW policy applies, only its rules admit requests",
                quoted(policies)
            ),
            Self::MeshDefaultAllow(default) => format!(
                "no ALLOW policy selects this destination and port, and no DENY rule \
                 matched; the mesh default {default} allows it"
            ),
            Self::MeshDefaultDeny => "no ALLOW policy selects this destination and port, and \
                 the mesh default deny refuses it"
                .into(),
            Self::UnauthenticatedByDefault => "no ALLOW policy selects this destination and \
                 port, and the mesh default allow-authenticated refuses unauthenticated \
                 (plaintext) peers"
                .into(),
            Self::InvalidPath(e) => {
                format!("the request path was refused before any policy was consulted: {e}")
            }
            Self::InvalidMethod => "the request method is not a valid HTTP token; refused \
                 before any policy was consulted"
                .into(),
        }
    }
}

fn rule_sentence(action: &str, m: &RuleMatch) -> String {
    format!(
        "{action} rule {} of policy '{}' matched: {}",
        m.rule,
        m.policy,
        m.conditions.join("; ")
    )
}

fn quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    quoted.join(", ")
}
