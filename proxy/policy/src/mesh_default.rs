//! The mesh-wide decision for destinations that no policy selects.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What happens to a request when no policy selects its destination and port
/// (step 3 of evaluation). Written in kebab-case: `deny`, `allow-authenticated`,
/// `allow-all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeshDefault {
    /// Deny everything no ALLOW policy admits: a zero-trust mesh.
    Deny,
    /// Allow any peer that proved a SPIFFE ID in mTLS; deny plaintext peers. The
    /// default: turning the mesh on changes nothing for mesh traffic.
    #[default]
    AllowAuthenticated,
    /// Allow everyone, plaintext peers on permissive ports included (migration only).
    AllowAll,
}

impl MeshDefault {
    /// The kebab-case name, as in configuration and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::AllowAuthenticated => "allow-authenticated",
            Self::AllowAll => "allow-all",
        }
    }
}

impl fmt::Display for MeshDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mesh default that is none of `deny`, `allow-authenticated`, `allow-all`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a mesh default: expected deny, allow-authenticated or allow-all")]
pub struct ParseMeshDefaultError(pub String);

impl FromStr for MeshDefault {
    type Err = ParseMeshDefaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(Self::Deny),
            "allow-authenticated" => Ok(Self::AllowAuthenticated),
            "allow-all" => Ok(Self::AllowAll),
            _ => Err(ParseMeshDefaultError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(MeshDefault::default(), MeshDefault::AllowAuthenticated);
        for d in [
            MeshDefault::Deny,
            MeshDefault::AllowAuthenticated,
            MeshDefault::AllowAll,
        ] {
            assert_eq!(d.as_str().parse::<MeshDefault>(), Ok(d));
            assert_eq!(d.to_string(), d.as_str());
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{d}\""));
            assert_eq!(serde_json::from_str::<MeshDefault>(&json).unwrap(), d);
        }
        for bad in ["allow", "Deny", "allow_all", ""] {
            let err = bad.parse::<MeshDefault>().unwrap_err();
            assert!(err.to_string().contains("expected deny"), "{err}");
        }
    }
}
