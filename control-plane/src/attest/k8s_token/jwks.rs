//! The cluster's token signing keys (JWKS) and the verifier that uses them.
//!
//! Each key's algorithm is derived from the key itself (`kty`/`crv`, and a declared `alg`
//! must agree); symmetric (`oct`) keys are never loaded, so a JWKS cannot turn into a
//! shared secret. The token checks themselves are in [`super::jwt`].
//!
//! Keys come from a file or from the API server's `/openid/v1/jwks` ([`KeySource`]).
//! They are reloaded when older than [`MAX_KEY_AGE`] and when a token names an unknown
//! `kid` (at most every [`MIN_RELOAD_INTERVAL`], so junk tokens cannot hammer the API
//! server). If a reload fails the previous keys stay in use; with none, attestation
//! answers "unavailable".

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use spiffe::TrustDomain;
use tokio::time::Instant;

use super::jwt::verify_with;
use super::{K8sTokenError, ServiceAccountIdentity};
use crate::kubernetes::client::KubeClient;

/// Keys older than this are reloaded before use.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(300);
/// Reloads triggered by unknown `kid`s (or failures) are at least this far apart.
pub const MIN_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// The API server's JWKS endpoint (service-account issuer discovery).
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Largest JWKS file read.
const MAX_JWKS_FILE_BYTES: u64 = 1024 * 1024;

/// A JWKS document that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS document: {0}")]
    Json(String),
    /// No key in it is usable for verifying service-account tokens.
    #[error("no usable signing key (RSA, or EC P-256/P-384, with a kid)")]
    NoUsableKey,
    /// Reading the file failed.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// The usable public keys of a JWKS, by `kid`.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys that can verify service-account tokens
    /// (skipped ones are logged): RSA keys (RS256 unless their `alg` says another RSA
    /// algorithm), EC P-256 (ES256) and P-384 (ES384) keys; each needs a `kid` and, if
    /// present, `use: sig`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JwksError> {
        let raw = serde_json::from_slice(bytes).map_err(|e| JwksError::Json(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// [`Self::from_json`] for a document already decoded (the API server's answer).
    pub fn from_value(doc: serde_json::Value) -> Result<Self, JwksError> {
        let raw = serde_json::from_value(doc).map_err(|e| JwksError::Json(e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawSet) -> Result<Self, JwksError> {
        let mut keys = HashMap::new();
        for (i, value) in raw.keys.into_iter().enumerate() {
            match usable_key(value) {
                Ok((kid, alg, key)) => {
                    keys.insert(kid, (alg, key));
                }
                Err(why) => tracing::warn!(index = i, why, "JWKS key skipped"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(Self { keys })
    }

    /// Reads and parses a JWKS file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, JwksError> {
        use std::io::Read as _;
        let read = |error| JwksError::Read {
            path: path.to_path_buf(),
            error,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_JWKS_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        Self::from_json(&bytes)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key with id `kid`, and the algorithm it verifies.
    pub(super) fn get(&self, kid: &str) -> Option<&(Algorithm, DecodingKey)> {
        self.keys.get(kid)
    }

    /// Whether there are none (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn usable_key(value: serde_json::Value) -> Result<(String, Algorithm, DecodingKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK")?;
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key (use != sig)");
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::try_from(a).map_err(|_| "alg is not a signature algorithm")?),
    };
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match declared {
            None => Algorithm::RS256,
            Some(
                a @ (Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512),
            ) => a,
            Some(_) => return Err("RSA key declares a non-RSA alg"),
        },
        AlgorithmParameters::EllipticCurve(p) => {
            let alg = match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err("unsupported curve"),
            };
            if declared.is_some_and(|d| d != alg) {
                return Err("EC key declares an alg that does not fit its curve");
            }
            alg
        }
        // Symmetric keys would turn the JWKS into shared secrets: never.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (oct) key"),
        _ => return Err("unsupported key type"),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "malformed key parameters")?;
    Ok((kid, alg, key))
}

/// Where the cluster's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS file (e.g. a ConfigMap holding the output of `kubectl get --raw /openid/v1/jwks`).
    File(PathBuf),
    /// The API server's [`JWKS_PATH`].
    Api(KubeClient),
}

/// Verifies tokens of one issuer against a [`KeySource`], reloading as described above.
pub struct JwksVerifier {
    issuer: String,
    source: KeySource,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    loaded_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl JwksVerifier {
    /// Tokens must carry `iss == issuer`. `initial` keys (e.g. the file already read at
    /// start-up) are used until they age out.
    pub fn new(issuer: String, source: KeySource, initial: Option<KeySet>) -> Self {
        let loaded = initial.is_some().then(Instant::now);
        Self {
            issuer,
            source,
            state: tokio::sync::Mutex::new(State {
                keys: initial.map(Arc::new),
                loaded_at: loaded,
                last_attempt: loaded,
            }),
        }
    }

    /// Verifies `token` for `audience` at `now`.
    pub async fn verify(
        &self,
        token: &str,
        audience: &str,
        td: &TrustDomain,
        now: SystemTime,
    ) -> Result<ServiceAccountIdentity, K8sTokenError> {
        let keys = self.keys(false).await?;
        match verify_with(token, &keys, &self.issuer, audience, td, now) {
            Err(K8sTokenError::UnknownKey { .. }) => {
                // Perhaps the cluster rotated its keys: reload (rate-limited), try again.
                let keys = self.keys(true).await?;
                verify_with(token, &keys, &self.issuer, audience, td, now)
            }
            other => other,
        }
    }

    async fn keys(&self, unknown_kid: bool) -> Result<Arc<KeySet>, K8sTokenError> {
        let mut state = self.state.lock().await;
        let fresh = state.loaded_at.is_some_and(|t| t.elapsed() < MAX_KEY_AGE);
        let recently_tried = state
            .last_attempt
            .is_some_and(|t| t.elapsed() < MIN_RELOAD_INTERVAL);
        let want = state.keys.is_none() || !fresh || unknown_kid;
        if want && !recently_tried {
            state.last_attempt = Some(Instant::now());
            match self.load().await {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "cluster JWKS loaded");
                    state.keys = Some(Arc::new(keys));
                    state.loaded_at = Some(Instant::now());
                }
                Err(e) if state.keys.is_some() => {
                    tracing::warn!(error = %e, "reloading the cluster JWKS failed; keeping the previous keys");
                }
                Err(e) => return Err(e),
            }
        }
        state.keys.clone().ok_or_else(|| {
            K8sTokenError::KeysUnavailable("the cluster JWKS has not been loaded yet".into())
        })
    }

    async fn load(&self) -> Result<KeySet, K8sTokenError> {
        match &self.source {
            KeySource::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || KeySet::from_file(&path))
                    .await
                    .map_err(|e| K8sTokenError::KeysUnavailable(e.to_string()))?
                    .map_err(|e| K8sTokenError::KeysUnavailable(e.to_string()))
            }
            KeySource::Api(client) => {
                let doc: serde_json::Value = client
                    .get_json(JWKS_PATH)
                    .await
                    .map_err(K8sTokenError::Unavailable)?;
                KeySet::from_value(doc).map_err(|e| K8sTokenError::KeysUnavailable(e.to_string()))
            }
        }
    }
}
