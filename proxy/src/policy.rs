//! Where inbound authorization is decided: the compiled policy set streamed from the
//! control plane (`ferrule-policy`, the same engine the control plane explains with).
//!
//! * Until the first policy arrives every inbound connection is denied (`no_policy`) and
//!   `/ready` says so: the proxy never guesses.
//! * The last good policy stays in force while the control plane is unreachable; a
//!   proxy never falls back to allow-all because it lost its stream.
//! * Each new policy bumps a watch so long-lived connections are re-evaluated.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use ferrule_policy::{HttpRequest, PolicySet, Request, Source};
use ferrule_tls::IdentityHandle;
use spiffe::SpiffeId;
use tokio::sync::watch;

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
            Self::Unauthenticated(_) => f.write_str("unauthenticated"),
        }
    }
}

/// An authorization decision with the reason, for logs, metrics and 403 headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection/request may proceed.
    pub allow: bool,
    /// Which policy decided (`mesh-default` when none did, `-` before any policy).
    pub policy: String,
    /// Index of the deciding rule within the policy, if a rule decided.
    pub rule: Option<usize>,
    /// Stable, machine-readable reason.
    pub reason: &'static str,
    /// A sentence for logs (empty for allowed decisions).
    pub explanation: String,
}

impl Decision {
    fn refused(reason: &'static str, explanation: &str) -> Self {
        Self {
            allow: false,
            policy: "-".into(),
            rule: None,
            reason,
            explanation: explanation.into(),
        }
    }
}

/// Evaluates inbound decisions against the current policy set (cheap to clone).
#[derive(Clone)]
pub struct Authorizer {
    set: Arc<ArcSwapOption<PolicySet>>,
    identity: IdentityHandle,
    changed: watch::Sender<u64>,
}

impl Authorizer {
    /// An authorizer with no policy yet (everything denied until one arrives).
    pub fn new(identity: IdentityHandle) -> Self {
        Self {
            set: Arc::new(ArcSwapOption::empty()),
            identity,
            changed: watch::Sender::new(0),
        }
    }

    /// Installs a new policy set; live connections are re-evaluated.
    pub fn install(&self, set: PolicySet) {
        let version = set.version();
        self.set.store(Some(Arc::new(set)));
        self.changed.send_replace(version);
    }

    /// The version in force, if any policy arrived.
    pub fn version(&self) -> Option<u64> {
        self.set.load().as_ref().map(|s| s.version())
    }

    /// Notified on every policy change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Decides a connection (opaque port) or, with `http`, one request.
    pub fn decide(&self, peer: &Peer, port: u16, http: Option<(&str, &str)>) -> Decision {
        let Some(set) = self.set.load_full() else {
            return Decision::refused("no_policy", "no policy received from the control plane yet");
        };
        let Some(creds) = self.identity.credentials() else {
            return Decision::refused("no_certificate", "this proxy has no identity yet");
        };
        let source = match peer {
            Peer::Authenticated(id) => Source::Authenticated(id),
            Peer::Unauthenticated(ip) => Source::Unauthenticated(*ip),
        };
        let d = set.evaluate(&Request {
            source,
            destination: creds.spiffe_id(),
            port,
            http: http.map(|(method, path)| HttpRequest { method, path }),
        });
        Decision {
            allow: d.allow,
            policy: d.policy.clone().unwrap_or_else(|| {
                match d.reason.as_str() {
                    "mesh_default_allow" | "mesh_default_deny" | "unauthenticated_by_default" => {
                        "mesh-default"
                    }
                    _ => "-",
                }
                .into()
            }),
            rule: d.rule,
            reason: d.reason.as_str(),
            // Only denials are logged with their explanation; skip the formatting on
            // the allow path (it runs for every request on http ports).
            explanation: if d.allow { String::new() } else { d.explain() },
        }
    }
}
