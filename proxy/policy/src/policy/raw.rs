//! The document form, field for field: what `serde` reads from YAML or JSON before
//! validation, and what a validated [`Policy`] serialises back to.
//!
//! Values are kept as strings so that validation, not `serde`, explains what is wrong
//! with them (and can report every problem of a document at once). Unknown fields are
//! refused at every level. The `rename`s give `serde` messages readable type names.

use serde::{Deserialize, Serialize};

use super::{Action, Policy, Rule, SourceMatcher};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    rename = "AuthorizationPolicy",
    expecting = "an AuthorizationPolicy document (a mapping with apiVersion, kind, metadata and spec)",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct RawPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: RawMetadata,
    pub spec: RawSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    rename = "metadata",
    expecting = "a mapping with name and, optionally, namespace",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct RawMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    rename = "spec",
    expecting = "a mapping with selector, action and rules",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct RawSpec {
    pub selector: RawSelector,
    pub action: String,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    rename = "selector",
    expecting = "a mapping with spiffeId and, optionally, ports",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct RawSelector {
    pub spiffe_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    rename = "rule",
    expecting = "a rule: a mapping with from and/or to",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct RawRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RawSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<RawTo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    rename = "source",
    expecting = "a source: a mapping with one of spiffeId, spiffeIdPrefix, trustDomain, authenticated, unauthenticated",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct RawSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    rename = "to",
    expecting = "a mapping with methods and/or paths",
    deny_unknown_fields,
    rename_all = "camelCase"
)]
pub(crate) struct RawTo {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// The canonical document form of a validated policy (prefixes end in `/`, wildcard
/// selectors in `/*`, CIDRs are `address/length`, trust domains lower-case).
impl From<&Policy> for RawPolicy {
    fn from(policy: &Policy) -> Self {
        Self {
            api_version: super::API_VERSION.into(),
            kind: super::KIND.into(),
            metadata: RawMetadata {
                name: policy.name.clone(),
                namespace: policy.namespace.clone(),
            },
            spec: RawSpec {
                selector: RawSelector {
                    spiffe_id: policy.selector.workloads.to_string(),
                    ports: policy.selector.ports.clone(),
                },
                action: match policy.action {
                    Action::Allow => "ALLOW".into(),
                    Action::Deny => "DENY".into(),
                },
                rules: policy.rules.iter().map(RawRule::from).collect(),
            },
        }
    }
}

impl From<&Rule> for RawRule {
    fn from(rule: &Rule) -> Self {
        Self {
            from: rule.from.iter().map(RawSource::from).collect(),
            to: rule.to.as_ref().map(|to| RawTo {
                methods: to.methods.iter().map(ToString::to_string).collect(),
                paths: to.paths.iter().map(ToString::to_string).collect(),
            }),
        }
    }
}

impl From<&SourceMatcher> for RawSource {
    fn from(source: &SourceMatcher) -> Self {
        let mut raw = Self::default();
        match source {
            SourceMatcher::SpiffeId(id) => raw.spiffe_id = Some(id.to_string()),
            SourceMatcher::SpiffeIdPrefix(prefix) => {
                raw.spiffe_id_prefix = Some(prefix.to_string())
            }
            SourceMatcher::TrustDomain(td) => raw.trust_domain = Some(td.to_string()),
            SourceMatcher::Authenticated => raw.authenticated = Some(true),
            SourceMatcher::Unauthenticated { cidrs } => {
                raw.unauthenticated = Some(true);
                if !cidrs.is_empty() {
                    raw.cidrs = Some(cidrs.iter().map(ToString::to_string).collect());
                }
            }
        }
        raw
    }
}
