//! Attestation: turning a credential presented by a caller into the SPIFFE ID it may get.
//!
//! The identity API calls [`attest`] *before* the CA signs anything; the CA then puts the
//! returned ID — never anything the caller wrote into its CSR — into the certificate.
//!
//! Two attestors:
//! * [join tokens](join_token): single- or few-use secrets an operator creates for one
//!   identity;
//! * [Kubernetes service-account tokens](k8s_token): a pod's projected token, verified
//!   with the cluster's JWKS or the TokenReview API, granting
//!   `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
//!
//! Adding one means: a [`Credential`] variant, a module next to `join_token.rs` that
//! verifies it, a match arm in [`attest`], and error variants here.

pub mod join_token;
pub mod k8s_token;

#[cfg(test)]
mod tests;

use std::time::SystemTime;

use spiffe::SpiffeId;

use self::k8s_token::{K8sTokenAttestor, K8sTokenError};
use crate::store::{Store, StoreError};

/// A credential presented by a caller to prove which identity it should receive.
///
/// `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// A join token string (`fjt_<id>_<secret>`), created with [`join_token::create`].
    JoinToken(String),
    /// A Kubernetes projected service-account token (a JWT), see [`k8s_token`].
    K8sSaToken(String),
}

impl Credential {
    /// A short, stable name of the credential kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::JoinToken(_) => "join_token",
            Credential::K8sSaToken(_) => "k8s_sa_token",
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::JoinToken(_) => f.write_str("JoinToken([redacted])"),
            Credential::K8sSaToken(_) => f.write_str("K8sSaToken([redacted])"),
        }
    }
}

/// Why a credential was refused. Messages never contain the credential itself; they may
/// name a join token's public id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The credential is not shaped like a join token (`fjt_<16 hex>_<43 base64url>`).
    #[error("malformed join token")]
    Malformed,
    /// No join token matches (unknown id, or the secret part is wrong). The two cases are
    /// deliberately indistinguishable to the caller.
    #[error("unknown join token")]
    UnknownToken,
    /// The token's lifetime has passed.
    #[error("join token {id} has expired")]
    Expired {
        /// Public id of the token.
        id: String,
    },
    /// The token has no uses left.
    #[error("join token {id} has been used up")]
    UsedUp {
        /// Public id of the token.
        id: String,
    },
    /// An operator revoked the token.
    #[error("join token {id} has been revoked")]
    Revoked {
        /// Public id of the token.
        id: String,
    },
    /// The token is bound to another identity than the caller expects; not consumed.
    #[error("join token {id} is bound to {bound}, not the expected {expected}")]
    IdentityMismatch {
        /// Public id of the token.
        id: String,
        /// The identity the token grants.
        bound: String,
        /// The identity the caller asked for.
        expected: String,
    },
    /// The store failed; the credential was not consumed.
    #[error("attestation store error: {0}")]
    Store(#[from] StoreError),
    /// A Kubernetes service-account token was refused (or cannot be checked right now).
    #[error("service-account token refused: {0}")]
    K8s(#[from] K8sTokenError),
}

/// Verifies `credential` at time `now` and returns the identity it grants; with
/// `expected`, a credential for another identity is refused without being consumed. Consumes one use
/// of a join token (atomically: of two concurrent redemptions of a last use, exactly one
/// succeeds). A service-account token is not consumed and `expected` is left to the
/// caller (`identity_api` refuses any attested identity other than the expected one).
/// Service-account tokens need `k8s` (`None`: attestation is off, and they
/// are refused with [`K8sTokenError::Disabled`]).
pub async fn attest(
    store: &Store,
    k8s: Option<&K8sTokenAttestor>,
    credential: &Credential,
    now: SystemTime,
    expected: Option<&SpiffeId>,
) -> Result<SpiffeId, AttestError> {
    match credential {
        Credential::JoinToken(token) => join_token::redeem_expecting(store, token, now, expected),
        Credential::K8sSaToken(token) => {
            // Nothing is consumed, so `expected` is compared by the caller afterwards.
            let attestor = k8s.ok_or(K8sTokenError::Disabled)?;
            Ok(attestor.attest(token, now).await?.spiffe_id)
        }
    }
}
