//! Verification of one projected service-account token (compact JWS) against known keys:
//! header, signature, then the claims.
//!
//! The JWS signature is checked by the `jsonwebtoken` crate (aws-lc-rs backend). The
//! algorithm is never taken on trust from the token: the header's `alg` must be one
//! Kubernetes signs with (RS256/ES256/ES384, plus the other RSA variants) and must equal
//! the algorithm of the key its `kid` selects. `none` and HMAC algorithms are refused
//! before any key is looked at, so a public key can never serve as an HMAC secret.
//! Claims are checked here, against the caller's clock: `iss`, `aud`, `exp`/`nbf`/`iat`
//! (integer NumericDates, as Kubernetes writes them) with [`LEEWAY`], and the
//! `kubernetes.io` claim, which must agree with `sub`.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use spiffe::TrustDomain;

use super::jwks::KeySet;
use super::{K8sTokenError, LEEWAY, ServiceAccountIdentity, identity};

/// The JOSE header fields we look at.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The claims of a projected service-account token. Everything is optional here so a
/// missing claim is reported by name rather than as a parse error.
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct KubernetesClaim {
    namespace: Option<String>,
    serviceaccount: Option<ObjectRef>,
    pod: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

/// Verifies `token` against `keys` (no reloading): header, signature, then claims.
pub fn verify_with(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    audience: &str,
    td: &TrustDomain,
    now: SystemTime,
) -> Result<ServiceAccountIdentity, K8sTokenError> {
    let malformed = |m: &str| K8sTokenError::Malformed(m.to_string());
    let (header_b64, _) = token
        .split_once('.')
        .ok_or_else(|| malformed("no header"))?;
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|_| malformed("header is not a JOSE header"))?;
    if header.crit.is_some() {
        return Err(malformed("critical header extensions are not supported"));
    }
    match header.alg.as_str() {
        a if a.eq_ignore_ascii_case("none") => return Err(K8sTokenError::Unsigned),
        a if a.starts_with("HS") => {
            return Err(K8sTokenError::SymmetricAlgorithm { alg: a.to_string() });
        }
        _ => {}
    }
    let alg = match header.alg.parse::<Algorithm>() {
        Ok(a) if a != Algorithm::EdDSA => a,
        _ => {
            return Err(K8sTokenError::UnsupportedAlgorithm {
                alg: header.alg.clone(),
            });
        }
    };
    let kid = header.kid.ok_or(K8sTokenError::MissingKeyId)?;
    let (key_alg, key) = keys
        .get(&kid)
        .ok_or_else(|| K8sTokenError::UnknownKey { kid: kid.clone() })?;
    if *key_alg != alg {
        return Err(K8sTokenError::AlgorithmMismatch {
            kid,
            alg: header.alg,
            key_alg: format!("{key_alg:?}"),
        });
    }
    // The crate checks the signature only; the claims are checked below against `now`.
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => K8sTokenError::BadSignature,
            jsonwebtoken::errors::ErrorKind::Json(_) => {
                malformed("claims are not the expected JSON")
            }
            jsonwebtoken::errors::ErrorKind::Base64(_) => malformed("a part is not base64url"),
            _ => K8sTokenError::BadSignature,
        })?
        .claims;
    check_claims(claims, issuer, audience, td, now)
}

fn check_claims(
    c: Claims,
    issuer: &str,
    audience: &str,
    td: &TrustDomain,
    now: SystemTime,
) -> Result<ServiceAccountIdentity, K8sTokenError> {
    let iss = c.iss.ok_or(K8sTokenError::MissingClaim("iss"))?;
    if iss != issuer {
        return Err(K8sTokenError::WrongIssuer {
            found: iss,
            expected: issuer.to_string(),
        });
    }
    let auds = match c.aud.ok_or(K8sTokenError::MissingClaim("aud"))? {
        Audience::One(a) => vec![a],
        Audience::Many(v) => v,
    };
    if !auds.iter().any(|a| a == audience) {
        return Err(K8sTokenError::WrongAudience {
            found: auds,
            expected: audience.to_string(),
        });
    }
    let now = unix(now);
    let leeway = LEEWAY.as_secs() as i64;
    let exp = c.exp.ok_or(K8sTokenError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(K8sTokenError::Expired { exp, now });
    }
    if let Some(nbf) = c.nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(K8sTokenError::NotYetValid { nbf, now });
    }
    if let Some(iat) = c.iat
        && iat > now.saturating_add(leeway)
    {
        return Err(K8sTokenError::IssuedInFuture { iat, now });
    }
    let k8s = c
        .kubernetes
        .ok_or(K8sTokenError::MissingClaim("kubernetes.io"))?;
    let ns = k8s
        .namespace
        .filter(|n| !n.is_empty())
        .ok_or(K8sTokenError::MissingClaim("kubernetes.io.namespace"))?;
    let sa = k8s
        .serviceaccount
        .filter(|s| !s.name.is_empty())
        .ok_or(K8sTokenError::MissingClaim("kubernetes.io.serviceaccount"))?;
    let pod = k8s
        .pod
        .filter(|p| !p.name.is_empty())
        .ok_or(K8sTokenError::MissingClaim("kubernetes.io.pod"))?;
    let expected_sub = format!("system:serviceaccount:{ns}:{}", sa.name);
    let sub = c.sub.ok_or(K8sTokenError::MissingClaim("sub"))?;
    if sub != expected_sub {
        return Err(K8sTokenError::SubjectMismatch {
            sub,
            expected: expected_sub,
        });
    }
    identity(td, &ns, &sa.name, &pod.name, &pod.uid)
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}
