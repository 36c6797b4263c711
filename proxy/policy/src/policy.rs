//! The validated policy model: what an `AuthorizationPolicy` document means once it
//! has been parsed and checked.
//!
//! A [`Policy`] can only be obtained by validation ([`crate::parse_documents`] for
//! YAML, or `serde` deserialisation, which runs the same checks), so holding one means
//! every SPIFFE ID, prefix, method, path pattern and CIDR in it is well formed. It
//! serialises back to the document form (`apiVersion`, `kind`, `metadata`, `spec`, in
//! camelCase), which is how the control plane stores and streams it as JSON.

mod raw;
mod validate;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use spiffe::{SpiffeId, TrustDomain};

use crate::cidr::Cidr;
use crate::evaluate::Source;
use crate::http::{Method, PathPattern};
use crate::identity::{IdPrefix, IdSelector};

pub(crate) use raw::RawPolicy;
pub(crate) use validate::validate;

/// The only `apiVersion` this crate accepts.
pub const API_VERSION: &str = "ferrule.dev/v1alpha1";
/// The only `kind` this crate accepts.
pub const KIND: &str = "AuthorizationPolicy";
/// The prefix of the names the control plane gives the policies it reads from
/// Kubernetes `AuthorizationPolicy` resources: `k8s/<namespace>/<name>`. Operators'
/// policies (DNS-1123 labels) can never take such a name.
pub const KUBERNETES_NAME_PREFIX: &str = "k8s/";

/// One validated `AuthorizationPolicy` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) selector: Selector,
    pub(crate) action: Action,
    pub(crate) rules: Vec<Rule>,
}

impl Policy {
    /// `metadata.name`: a DNS-1123 label, the policy's unique key; or
    /// `k8s/<namespace>/<name>` for a policy read from a Kubernetes resource.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `metadata.namespace`: an optional label for humans; it does not scope the name
    /// and takes no part in evaluation.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// `spec.selector`: the destination workloads and ports the policy applies to.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// `spec.action`.
    pub fn action(&self) -> Action {
        self.action
    }

    /// `spec.rules`, in document order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Serialises to the document form (the same fields and names as the YAML).
impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawPolicy::from(self).serialize(serializer)
    }
}

/// Deserialises the document form and validates it, exactly as
/// [`crate::parse_documents`] does (a JSON policy from the store is re-checked).
impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawPolicy::deserialize(deserializer)?;
        validate(raw).map_err(|errors| {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            de::Error::custom(all.join("; "))
        })
    }
}

/// `spec.selector`: which destinations a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `spiffeId`: one workload, or every workload under a prefix.
    pub workloads: IdSelector,
    /// `ports`: the destination (application) ports; empty means every port.
    pub ports: Vec<u16>,
}

impl Selector {
    /// Whether the policy applies to `destination` on `port`.
    pub fn selects(&self, destination: &SpiffeId, port: u16) -> bool {
        self.workloads.matches(destination) && self.selects_port(port)
    }

    /// Whether the policy applies on `port` (any port when `ports` is empty).
    pub fn selects_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }
}

/// `spec.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Requests to the selected destinations must match a rule of some ALLOW policy.
    Allow,
    /// Requests matching a rule are denied, whatever any ALLOW policy says.
    Deny,
}

impl Action {
    /// `ALLOW` or `DENY`, as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `spec.rules`: it matches when *all* its given fields match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `from`: the rule matches a source matching *any* entry; empty means any source,
    /// unauthenticated (plaintext) peers included.
    pub from: Vec<SourceMatcher>,
    /// `to`: HTTP conditions; `None` means any request (and any opaque connection).
    pub to: Option<RequestMatcher>,
}

/// One entry of a rule's `from`. Exactly one kind per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatcher {
    /// `spiffeId`: exactly this authenticated peer.
    SpiffeId(SpiffeId),
    /// `spiffeIdPrefix`: any authenticated peer whose ID lies under the prefix.
    SpiffeIdPrefix(IdPrefix),
    /// `trustDomain`: any authenticated peer of this trust domain.
    TrustDomain(TrustDomain),
    /// `authenticated: true`: any peer that proved a SPIFFE ID in mTLS (from any trust
    /// domain the proxy trusts).
    Authenticated,
    /// `unauthenticated: true`: a plaintext peer on a permissive port, optionally only
    /// from these address blocks (`cidrs`; empty means any address).
    Unauthenticated {
        /// `cidrs`; empty means any address.
        cidrs: Vec<Cidr>,
    },
}

impl SourceMatcher {
    /// Whether the request's source matches this entry.
    pub fn matches(&self, source: &Source<'_>) -> bool {
        match (self, source) {
            (Self::SpiffeId(want), Source::Authenticated(id)) => want == *id,
            (Self::SpiffeIdPrefix(prefix), Source::Authenticated(id)) => prefix.matches(id),
            (Self::TrustDomain(td), Source::Authenticated(id)) => id.is_member_of(td),
            (Self::Authenticated, Source::Authenticated(_)) => true,
            (Self::Unauthenticated { cidrs }, Source::Unauthenticated(ip)) => {
                cidrs.is_empty() || cidrs.iter().any(|cidr| cidr.contains(*ip))
            }
            _ => false,
        }
    }
}

/// As written in a document: `spiffeIdPrefix spiffe://td/ns/prod/`.
impl fmt::Display for SourceMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SpiffeId(id) => write!(f, "spiffeId {id}"),
            Self::SpiffeIdPrefix(prefix) => write!(f, "spiffeIdPrefix {prefix}"),
            Self::TrustDomain(td) => write!(f, "trustDomain {td}"),
            Self::Authenticated => f.write_str("authenticated"),
            Self::Unauthenticated { cidrs } if cidrs.is_empty() => f.write_str("unauthenticated"),
            Self::Unauthenticated { cidrs } => {
                let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                write!(f, "unauthenticated from [{}]", cidrs.join(", "))
            }
        }
    }
}

/// A rule's `to`: HTTP conditions, all of which must match. At least one of the two
/// lists is non-empty; an empty list means "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMatcher {
    /// `methods`: the request method must be one of these (empty: any method).
    pub methods: Vec<Method>,
    /// `paths`: the normalised path must match one of these (empty: any path).
    pub paths: Vec<PathPattern>,
}
