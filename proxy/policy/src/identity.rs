//! SPIFFE ID matchers: the exact-or-wildcard [`IdSelector`] that picks destination
//! workloads, and the [`IdPrefix`] that both wildcards and `spiffeIdPrefix` sources use.
//!
//! A prefix is always a whole-segment prefix: `spiffe://td/ns/prod/` (or the wildcard
//! form `spiffe://td/ns/prod/*`) means "an ID in trust domain `td` whose path starts
//! with `/ns/prod/`". A bare `spiffe://td/ns/prod` is refused as a prefix because as a
//! string prefix it would also match `spiffe://td/ns/production`.

use std::fmt;

use spiffe::{SpiffeId, TrustDomain};

/// A whole-segment SPIFFE ID prefix: a trust domain and a path prefix ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdPrefix {
    trust_domain: TrustDomain,
    /// Starts and ends with `/` (`/` alone for the whole trust domain).
    path: String,
}

impl IdPrefix {
    /// Parses `spiffe://td/ns/prod/` or `spiffe://td/ns/prod/*` (the two are the same
    /// prefix). `*` is allowed only as the whole last segment.
    pub fn parse(s: &str) -> Result<Self, String> {
        let base = if let Some(base) = s.strip_suffix("/*") {
            base
        } else if let Some(base) = s.strip_suffix('/') {
            base
        } else {
            return Err(format!(
                "prefix {s:?} must end with '/' or '/*' (as a plain string prefix it would \
                 also match IDs such as \"{s}-other\")"
            ));
        };
        if base.contains('*') {
            return Err(format!(
                "{s:?}: '*' is allowed only as the whole last segment (spiffe://td/ns/prod/*)"
            ));
        }
        let id = SpiffeId::new(base).map_err(|e| format!("{s:?} is not a valid prefix: {e}"))?;
        Ok(Self {
            trust_domain: id.trust_domain().clone(),
            path: format!("{}/", id.path()),
        })
    }

    /// The trust domain the prefix lies in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path prefix, starting and ending with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether `id` lies under this prefix.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        id.trust_domain() == &self.trust_domain && id.path().starts_with(&self.path)
    }
}

/// The `spiffe://td/ns/prod/` form.
impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

/// Parses an exact SPIFFE ID in a source entry, pointing wildcards at `spiffeIdPrefix`.
pub(crate) fn parse_exact_source(s: &str) -> Result<SpiffeId, String> {
    if s.contains('*') {
        return Err(format!(
            "{s:?}: spiffeId takes an exact ID; use spiffeIdPrefix for a prefix \
             (spiffe://td/ns/prod/)"
        ));
    }
    SpiffeId::new(s).map_err(|e| {
        let hint = if s.ends_with('/') {
            "; use spiffeIdPrefix for a prefix"
        } else {
            ""
        };
        format!("{s:?} is not a valid SPIFFE ID: {e}{hint}")
    })
}

/// Which destination workloads a policy applies to: one exact SPIFFE ID, or every ID
/// under a prefix (written `spiffe://td/ns/prod/*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdSelector {
    /// Exactly this workload.
    Exact(SpiffeId),
    /// Every workload under this prefix.
    Prefix(IdPrefix),
}

impl IdSelector {
    /// Parses `spiffe://td/ns/prod/sa/api` or `spiffe://td/ns/prod/*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.contains('*') {
            return match s.strip_suffix("/*") {
                Some(base) if !base.contains('*') => IdPrefix::parse(s).map(Self::Prefix),
                _ => Err(format!(
                    "{s:?}: '*' is allowed only as the whole last segment \
                     (spiffe://td/ns/prod/*)"
                )),
            };
        }
        SpiffeId::new(s).map(Self::Exact).map_err(|e| {
            let hint = if s.ends_with('/') {
                "; to select by prefix, end it with '/*'"
            } else {
                ""
            };
            format!("{s:?} is not a valid SPIFFE ID: {e}{hint}")
        })
    }

    /// Whether the selector picks the workload `id`.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(exact) => exact == id,
            Self::Prefix(prefix) => prefix.matches(id),
        }
    }
}

/// The exact ID, or the `spiffe://td/ns/prod/*` form.
impl fmt::Display for IdSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn prefixes() {
        let p = IdPrefix::parse("spiffe://td/ns/prod/").unwrap();
        assert_eq!(p, IdPrefix::parse("spiffe://td/ns/prod/*").unwrap());
        assert_eq!(p.to_string(), "spiffe://td/ns/prod/");
        assert_eq!(p.path(), "/ns/prod/");
        assert!(p.matches(&id("spiffe://td/ns/prod/sa/api")));
        assert!(p.matches(&id("spiffe://td/ns/prod/x")));
        assert!(!p.matches(&id("spiffe://td/ns/prod")));
        assert!(!p.matches(&id("spiffe://td/ns/production/sa/api")));
        assert!(!p.matches(&id("spiffe://other/ns/prod/sa/api")));
        // Trust domains are case-insensitive and canonicalised.
        assert!(
            IdPrefix::parse("spiffe://TD/ns/prod/")
                .unwrap()
                .matches(&id("spiffe://td/ns/prod/a"))
        );

        let whole = IdPrefix::parse("spiffe://td/*").unwrap();
        assert_eq!(whole.to_string(), "spiffe://td/");
        assert!(whole.matches(&id("spiffe://td/a")));
        assert!(!whole.matches(&id("spiffe://td2/a")));

        for (bad, want) in [
            ("spiffe://td/ns/prod", "must end with '/' or '/*'"),
            ("spiffe://td/ns/*/sa/api/", "whole last segment"),
            ("spiffe://td/ns/prod*/", "whole last segment"),
            ("spiffe://td/ns/prod**", "must end with"),
            ("spiffe://td/ns//", "not a valid prefix"),
            ("http://td/ns/", "not a valid prefix"),
            ("spiffe:///ns/", "not a valid prefix"),
        ] {
            let err = IdPrefix::parse(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn selectors() {
        let exact = IdSelector::parse("spiffe://td/ns/prod/sa/api").unwrap();
        assert!(matches!(exact, IdSelector::Exact(_)));
        assert!(exact.matches(&id("spiffe://td/ns/prod/sa/api")));
        assert!(!exact.matches(&id("spiffe://td/ns/prod/sa/api2")));
        let wild = IdSelector::parse("spiffe://td/ns/prod/*").unwrap();
        assert_eq!(wild.to_string(), "spiffe://td/ns/prod/*");
        assert!(wild.matches(&id("spiffe://td/ns/prod/sa/api")));

        for (bad, want) in [
            ("spiffe://td/ns/*/sa/api", "whole last segment"),
            ("spiffe://td/ns/prod*", "whole last segment"),
            ("spiffe://td/ns/prod/", "end it with '/*'"),
            ("spiffe://td/*/x/*", "whole last segment"),
            ("td/ns/prod", "not a valid SPIFFE ID"),
            ("", "not a valid SPIFFE ID"),
        ] {
            let err = IdSelector::parse(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
