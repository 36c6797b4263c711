//! Authorization on the inbound side: may this peer reach this port?
//!
//! Until policy documents are streamed from the control plane, decisions come from the
//! mesh default (`allow-authenticated` unless configured otherwise). Decisions are
//! fail-closed: anything not explicitly allowed is denied.

use std::net::IpAddr;

use spiffe::SpiffeId;

/// Who is on the other end of an inbound connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A mesh peer whose SPIFFE ID was verified in the mTLS handshake.
    Authenticated(SpiffeId),
    /// A plaintext client on a permissive port.
    Unauthenticated(IpAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Authenticated(id) => write!(f, "{id}"),
            Self::Unauthenticated(ip) => write!(f, "unauthenticated({ip})"),
        }
    }
}

/// The mesh-wide default decision when no policy selects a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeshDefault {
    /// Deny everything not explicitly allowed.
    Deny,
    /// Allow any peer with a valid mesh identity.
    #[default]
    AllowAuthenticated,
    /// Allow everyone, including plaintext clients on permissive ports.
    AllowAll,
}

impl std::str::FromStr for MeshDefault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(Self::Deny),
            "allow-authenticated" => Ok(Self::AllowAuthenticated),
            "allow-all" => Ok(Self::AllowAll),
            _ => Err(format!(
                "{s:?}: expected deny, allow-authenticated or allow-all"
            )),
        }
    }
}

/// An authorization decision with the reason, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection/request may proceed.
    pub allow: bool,
    /// Which policy decided (`mesh-default` when none did).
    pub policy: String,
    /// Index of the deciding rule within the policy, if a rule decided.
    pub rule: Option<usize>,
    /// Stable, machine-readable reason.
    pub reason: &'static str,
}

/// Evaluates decisions for the inbound side.
#[derive(Debug, Clone)]
pub struct Authorizer {
    default: MeshDefault,
}

impl Authorizer {
    /// An authorizer applying only the mesh default.
    pub fn new(default: MeshDefault) -> Self {
        Self { default }
    }

    /// Decides whether `peer` may open a connection to application port `port`.
    pub fn connection(&self, peer: &Peer, _port: u16) -> Decision {
        let allow = match (self.default, peer) {
            (MeshDefault::AllowAll, _) => true,
            (MeshDefault::AllowAuthenticated, Peer::Authenticated(_)) => true,
            (MeshDefault::AllowAuthenticated, Peer::Unauthenticated(_)) => false,
            (MeshDefault::Deny, _) => false,
        };
        let reason = match (allow, peer) {
            (true, _) => "mesh_default_allow",
            (false, Peer::Unauthenticated(_)) => "unauthenticated",
            (false, Peer::Authenticated(_)) => "mesh_default_deny",
        };
        Decision {
            allow,
            policy: "mesh-default".into(),
            rule: None,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_defaults() {
        let id = Peer::Authenticated(SpiffeId::new("spiffe://td/ns/a/sa/b").unwrap());
        let anon = Peer::Unauthenticated("10.0.0.1".parse().unwrap());
        let a = Authorizer::new(MeshDefault::AllowAuthenticated);
        assert!(a.connection(&id, 80).allow);
        assert!(!a.connection(&anon, 80).allow);
        let d = Authorizer::new(MeshDefault::Deny);
        assert!(!d.connection(&id, 80).allow);
        let all = Authorizer::new(MeshDefault::AllowAll);
        assert!(all.connection(&anon, 80).allow);
        assert_eq!(
            "allow-all".parse::<MeshDefault>(),
            Ok(MeshDefault::AllowAll)
        );
        assert!("allow".parse::<MeshDefault>().is_err());
    }
}
