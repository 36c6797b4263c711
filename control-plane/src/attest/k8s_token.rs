//! Kubernetes service-account token attestation.
//!
//! A proxy in a pod presents the projected service-account token the kubelet mounted for
//! it (audience `ferrule`, short expiry). The control plane verifies it and grants
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. Two verifiers:
//!
//! * **JWKS** ([`jwks`], [`jwt`]): the token's JWS signature is checked against the cluster's
//!   public keys (a JWKS file, or `/openid/v1/jwks` from the API server, refreshed), its
//!   issuer must be the configured one, its audiences must include ours, and
//!   `exp`/`nbf`/`iat` must hold within [`LEEWAY`]. The identity comes from the signed
//!   `kubernetes.io` claim, which must agree with `sub`. For clusters where the control
//!   plane may not call TokenReview. It cannot see that a pod was deleted: a stolen
//!   token stays usable until it expires (keep projected token lifetimes short).
//! * **TokenReview** ([`token_review`]): the API server itself authenticates the token
//!   for our audience, which also refuses tokens of deleted pods.
//!
//! Both demand a **pod-bound** token (the `kubernetes.io.pod` claim, or the pod-name
//! extra in TokenReview): a token minted by hand with `kubectl create token` for a
//! service account is not a sidecar's credential, and is refused (fail closed).
//! Errors never contain the token.

pub mod jwks;
pub mod jwt;
pub mod token_review;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use spiffe::{SpiffeId, TrustDomain};

use crate::config::ConfigError;
use crate::config::kubernetes::{K8sAttestation, KubeConfig};
use crate::kubernetes::client::KubeError;

/// Largest token accepted, in bytes (projected tokens are ~1-2 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// Audience proxies request for their projected token, unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "ferrule";

/// What a verified token says about its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountIdentity {
    /// The identity to issue: `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
    pub spiffe_id: SpiffeId,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's service account.
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// That pod's UID (empty if the API server did not say).
    pub pod_uid: String,
}

/// Why a service-account token was refused. One variant per check, so tests and logs
/// can tell them apart; none carries the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sTokenError {
    /// This control plane runs with `--k8s-attestation off`.
    #[error("kubernetes service-account attestation is not enabled on this control plane")]
    Disabled,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not a compact JWS (`header.payload.signature`), or its parts do not decode.
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// `alg: none`: an unsigned token.
    #[error("unsigned token (alg \"none\") refused")]
    Unsigned,
    /// `HS256` and friends: a MAC keyed with something public (algorithm confusion).
    #[error(
        "symmetric algorithm {alg} refused: service-account tokens are signed with the cluster's private key"
    )]
    SymmetricAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// An asymmetric algorithm Kubernetes does not use, or unknown.
    #[error("unsupported signature algorithm {alg:?}")]
    UnsupportedAlgorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// The header names no key (`kid`); Kubernetes always sets one.
    #[error("token header has no key id (kid)")]
    MissingKeyId,
    /// The `kid` is not in the cluster's key set (even after a refresh).
    #[error("no key {kid:?} in the cluster's JWKS")]
    UnknownKey {
        /// The header's `kid`.
        kid: String,
    },
    /// The key with this `kid` is for another algorithm than the header's.
    #[error("key {kid:?} verifies {key_alg}, but the token says {alg}")]
    AlgorithmMismatch {
        /// The header's `kid`.
        kid: String,
        /// The header's `alg`.
        alg: String,
        /// The algorithm of the key.
        key_alg: String,
    },
    /// The signature does not verify: forged or altered.
    #[error("token signature does not verify")]
    BadSignature,
    /// `iss` is not the cluster's issuer.
    #[error("issuer {found:?} is not the configured {expected:?}")]
    WrongIssuer {
        /// The token's `iss`.
        found: String,
        /// The configured issuer.
        expected: String,
    },
    /// The token (or the TokenReview answer) does not include our audience.
    #[error("token audiences {found:?} do not include {expected:?}")]
    WrongAudience {
        /// Audiences in the token / confirmed by the API server.
        found: Vec<String>,
        /// The configured audience.
        expected: String,
    },
    /// `exp` (plus leeway) has passed.
    #[error("token expired at {exp} (now {now}, leeway {}s)", LEEWAY.as_secs())]
    Expired {
        /// The token's `exp` (Unix seconds).
        exp: i64,
        /// The verifier's clock (Unix seconds).
        now: i64,
    },
    /// `nbf` is still ahead (beyond leeway).
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf` (Unix seconds).
        nbf: i64,
        /// The verifier's clock (Unix seconds).
        now: i64,
    },
    /// `iat` is in the future (beyond leeway).
    #[error("token issued in the future ({iat}; now {now})")]
    IssuedInFuture {
        /// The token's `iat` (Unix seconds).
        iat: i64,
        /// The verifier's clock (Unix seconds).
        now: i64,
    },
    /// A required claim (or TokenReview field) is absent or empty.
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// `sub` is not `system:serviceaccount:<ns>:<sa>` of the `kubernetes.io` claim.
    #[error("subject {sub:?} does not match the kubernetes.io claim ({expected})")]
    SubjectMismatch {
        /// The token's `sub`.
        sub: String,
        /// What the `kubernetes.io` claim implies.
        expected: String,
    },
    /// A namespace or service-account name that Kubernetes would not allow.
    #[error("invalid {what} {value:?}")]
    InvalidName {
        /// `namespace` or `service account`.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// TokenReview: the API server did not authenticate the token.
    #[error("the API server did not authenticate the token: {0}")]
    NotAuthenticated(String),
    /// TokenReview: the authenticated user is not a service account.
    #[error("authenticated user {0:?} is not a service account")]
    NotServiceAccount(String),
    /// The Kubernetes API could not be asked (unreachable, refused our own credentials,
    /// or answered nonsense). Not the caller's fault; retry later.
    #[error("kubernetes API unavailable: {0}")]
    Unavailable(#[source] KubeError),
    /// No usable signing keys are known yet (JWKS not loaded).
    #[error("cluster signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl K8sTokenError {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        use K8sTokenError as E;
        match self {
            E::Disabled => "k8s_attestation_disabled",
            E::TooLarge | E::Malformed(_) => "k8s_malformed_token",
            E::Unsigned | E::SymmetricAlgorithm { .. } | E::UnsupportedAlgorithm { .. } => {
                "k8s_bad_algorithm"
            }
            E::MissingKeyId | E::UnknownKey { .. } | E::AlgorithmMismatch { .. } => {
                "k8s_unknown_key"
            }
            E::BadSignature => "k8s_bad_signature",
            E::WrongIssuer { .. } => "k8s_wrong_issuer",
            E::WrongAudience { .. } => "k8s_wrong_audience",
            E::Expired { .. } => "k8s_expired_token",
            E::NotYetValid { .. } | E::IssuedInFuture { .. } => "k8s_token_not_yet_valid",
            E::MissingClaim(_) | E::SubjectMismatch { .. } | E::InvalidName { .. } => {
                "k8s_bad_claims"
            }
            E::NotAuthenticated(_) | E::NotServiceAccount(_) => "k8s_not_authenticated",
            E::Unavailable(_) | E::KeysUnavailable(_) => "k8s_api_unavailable",
        }
    }
}

/// The configured verifier for service-account tokens.
pub struct K8sTokenAttestor {
    trust_domain: TrustDomain,
    audience: String,
    verifier: Verifier,
}

enum Verifier {
    Jwks(jwks::JwksVerifier),
    TokenReview(token_review::TokenReviewer),
}

impl K8sTokenAttestor {
    /// Verifies signatures against the cluster's JWKS, for tokens issued by `verifier`'s
    /// issuer to `audience`.
    pub fn jwks(trust_domain: TrustDomain, audience: String, verifier: jwks::JwksVerifier) -> Self {
        Self {
            trust_domain,
            audience,
            verifier: Verifier::Jwks(verifier),
        }
    }

    /// Asks the API server (TokenReview) about each token.
    pub fn token_review(
        trust_domain: TrustDomain,
        audience: String,
        reviewer: token_review::TokenReviewer,
    ) -> Self {
        Self {
            trust_domain,
            audience,
            verifier: Verifier::TokenReview(reviewer),
        }
    }

    /// Builds the attestor the configuration asks for; `None` when attestation is off.
    pub fn from_config(
        trust_domain: &TrustDomain,
        cfg: &KubeConfig,
    ) -> Result<Option<Self>, ConfigError> {
        let td = trust_domain.clone();
        Ok(match &cfg.attestation {
            K8sAttestation::Off => None,
            K8sAttestation::TokenReview { audience } => Some(Self::token_review(
                td,
                audience.clone(),
                token_review::TokenReviewer::new(cfg.client()?),
            )),
            K8sAttestation::Jwks {
                audience,
                issuer,
                file,
            } => {
                let (source, initial) = match file {
                    Some((path, keys)) => (jwks::KeySource::File(path.clone()), Some(keys.clone())),
                    None => (jwks::KeySource::Api(cfg.client()?), None),
                };
                Some(Self::jwks(
                    td,
                    audience.clone(),
                    jwks::JwksVerifier::new(issuer.clone(), source, initial),
                ))
            }
        })
    }

    /// `jwks` or `token-review`.
    pub fn mode(&self) -> &'static str {
        match self.verifier {
            Verifier::Jwks(_) => "jwks",
            Verifier::TokenReview(_) => "token-review",
        }
    }

    /// Verifies `token` at `now` and returns the identity it grants.
    pub async fn attest(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<ServiceAccountIdentity, K8sTokenError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(K8sTokenError::TooLarge);
        }
        // Both paths want a compact JWS; do not forward junk to the API server.
        if token.split('.').count() != 3 || token.bytes().any(|b| !is_jws_byte(b)) {
            return Err(K8sTokenError::Malformed(
                "expected three base64url parts separated by dots".into(),
            ));
        }
        let id = match &self.verifier {
            Verifier::Jwks(v) => {
                v.verify(token, &self.audience, &self.trust_domain, now)
                    .await?
            }
            Verifier::TokenReview(r) => r.review(token, &self.audience, &self.trust_domain).await?,
        };
        // The audit trail of who got an identity: which pod presented the token.
        tracing::info!(
            spiffe_id = %id.spiffe_id,
            pod = %id.pod_name,
            pod_uid = %id.pod_uid,
            verifier = self.mode(),
            "service-account token verified"
        );
        Ok(id)
    }
}

fn is_jws_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Builds the identity of service account `sa` in `namespace`, checking both are names
/// Kubernetes allows (so they are valid SPIFFE path segments too).
pub(crate) fn identity(
    trust_domain: &TrustDomain,
    namespace: &str,
    sa: &str,
    pod_name: &str,
    pod_uid: &str,
) -> Result<ServiceAccountIdentity, K8sTokenError> {
    if !is_dns_label(namespace) {
        return Err(K8sTokenError::InvalidName {
            what: "namespace",
            value: namespace.to_string(),
        });
    }
    if !is_dns_subdomain(sa) {
        return Err(K8sTokenError::InvalidName {
            what: "service account",
            value: sa.to_string(),
        });
    }
    if pod_name.is_empty() {
        return Err(K8sTokenError::MissingClaim("pod name"));
    }
    let spiffe_id = SpiffeId::from_segments(trust_domain.clone(), &["ns", namespace, "sa", sa])
        .map_err(|_| K8sTokenError::InvalidName {
            what: "service account",
            value: sa.to_string(),
        })?;
    Ok(ServiceAccountIdentity {
        spiffe_id,
        namespace: namespace.to_string(),
        service_account: sa.to_string(),
        pod_name: pod_name.to_string(),
        pod_uid: pod_uid.to_string(),
    })
}

/// `system:serviceaccount:<ns>:<sa>` → `(ns, sa)`.
pub(crate) fn parse_sa_username(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
}

/// RFC 1123 label (namespaces): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 chars.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain (service accounts): dot-separated labels, at most 253 chars.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}
