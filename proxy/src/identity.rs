//! The proxy's workload identity: its private key, its X.509-SVID, and their renewal.
//!
//! The key is generated in memory (`identity::manager`) and never leaves the process.
//! Until the first certificate arrives every mesh handshake fails closed, and the admin
//! endpoint's `/ready` says so.

pub mod manager;

pub use manager::{IdentityManager, IdentityStatus};

use std::path::PathBuf;

/// How the proxy proves who it is when it has no valid certificate to renew with.
#[derive(Debug, Clone)]
pub enum BootstrapCredential {
    /// An operator-issued join token.
    JoinToken(JoinToken),
    /// A Kubernetes projected service-account token, read from this file at every
    /// bootstrap attempt (the kubelet rotates it) and sent as `k8s_sa_token`.
    SaTokenFile(PathBuf),
}

/// A join token: a secret bootstrap credential. `Debug` never prints it.
#[derive(Clone)]
pub struct JoinToken(String);

impl JoinToken {
    /// Wraps the secret.
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret, for sending to the control plane only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}
