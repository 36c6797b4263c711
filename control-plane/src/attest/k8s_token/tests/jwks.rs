//! JWKS verification: each check refuses with its own error.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::*;
use crate::attest::k8s_token::jwks::{
    JwksError, JwksVerifier, KeySet, KeySource, MAX_KEY_AGE, MIN_RELOAD_INTERVAL,
};
use crate::attest::k8s_token::jwt::verify_with;
use crate::attest::k8s_token::{K8sTokenAttestor, K8sTokenError, MAX_TOKEN_BYTES};
use crate::kubernetes::client::testing::{FakeApiServer, Reply};

fn keyset(keys: &[&TestKey]) -> KeySet {
    KeySet::from_json(&jwks(keys)).unwrap()
}

fn verify(token: &str, keys: &KeySet) -> Result<String, K8sTokenError> {
    verify_with(token, keys, ISSUER, AUD, &td(), now()).map(|id| id.spiffe_id.to_string())
}

/// `claims()` with `path` (e.g. `/exp`) replaced by `value`, or removed if `Null`.
fn claims_with(path: &str, value: Value) -> Value {
    let mut c = claims();
    let (parent, leaf) = path.rsplit_once('/').unwrap();
    let obj = c.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    if value.is_null() {
        obj.remove(leaf);
    } else {
        obj.insert(leaf.to_string(), value);
    }
    c
}

#[test]
fn rsa_and_ec_tokens_in_the_api_servers_shape_are_accepted() {
    let (rsa, ec) = (TestKey::rsa(), TestKey::ec());
    let keys = keyset(&[&rsa, &ec]);
    for key in [&rsa, &ec] {
        let id = verify_with(&key.token(&claims()), &keys, ISSUER, AUD, &td(), now()).unwrap();
        assert_eq!(
            id.spiffe_id.to_string(),
            "spiffe://example.org/ns/shop/sa/web"
        );
        assert_eq!(id.namespace, "shop");
        assert_eq!(id.service_account, "web");
        assert_eq!(id.pod_name, "web-5d8f7b9c4-x2x9q");
        assert_eq!(id.pod_uid, "0f9e8d7c-0000-4000-8000-000000000002");
    }
    // A single-string `aud` is valid JWT too.
    let t = rsa.token(&claims_with("/aud", json!(AUD)));
    assert!(verify(&t, &keys).is_ok());
}

#[test]
fn wrong_audience_is_refused() {
    let key = TestKey::rsa();
    let t = key.token(&claims_with(
        "/aud",
        json!(["https://kubernetes.default.svc", "vault"]),
    ));
    let err = verify(&t, &keyset(&[&key])).unwrap_err();
    assert!(
        matches!(&err, K8sTokenError::WrongAudience { found, expected }
            if found.len() == 2 && expected == AUD),
        "{err:?}"
    );
}

#[test]
fn expiry_honours_the_leeway_and_no_more() {
    let key = TestKey::ec();
    let keys = keyset(&[&key]);
    // Expired 30 s ago: within the 60 s leeway.
    let t = key.token(&claims_with("/exp", json!(NOW - 30)));
    assert!(verify(&t, &keys).is_ok());
    let t = key.token(&claims_with("/exp", json!(NOW - 61)));
    let err = verify(&t, &keys).unwrap_err();
    assert!(
        matches!(err, K8sTokenError::Expired { exp, now } if exp == NOW - 61 && now == NOW),
        "{err:?}"
    );
    let t = key.token(&claims_with("/exp", Value::Null));
    assert!(matches!(
        verify(&t, &keys),
        Err(K8sTokenError::MissingClaim("exp"))
    ));
}

#[test]
fn not_yet_valid_and_future_issued_tokens_are_refused() {
    let key = TestKey::rsa();
    let keys = keyset(&[&key]);
    let t = key.token(&claims_with("/nbf", json!(NOW + 600)));
    let err = verify(&t, &keys).unwrap_err();
    assert!(
        matches!(err, K8sTokenError::NotYetValid { nbf, .. } if nbf == NOW + 600),
        "{err:?}"
    );
    let mut c = claims_with("/iat", json!(NOW + 600));
    c["nbf"] = json!(NOW);
    let err = verify(&key.token(&c), &keys).unwrap_err();
    assert!(
        matches!(err, K8sTokenError::IssuedInFuture { iat, .. } if iat == NOW + 600),
        "{err:?}"
    );
}

#[test]
fn wrong_issuer_is_refused() {
    let key = TestKey::rsa();
    let t = key.token(&claims_with("/iss", json!("https://other-cluster.example")));
    let err = verify(&t, &keyset(&[&key])).unwrap_err();
    assert!(
        matches!(&err, K8sTokenError::WrongIssuer { found, .. } if found == "https://other-cluster.example"),
        "{err:?}"
    );
}

#[test]
fn forged_and_altered_tokens_are_refused() {
    let (real, forger) = (TestKey::rsa(), TestKey::rsa());
    let keys = keyset(&[&real]);
    // Signed by another key claiming the cluster key's kid.
    let forged = forger.token_with_header(&json!({"alg": "RS256", "kid": real.kid}), &claims());
    assert!(matches!(
        verify(&forged, &keys),
        Err(K8sTokenError::BadSignature)
    ));
    // A real token whose claims were swapped for another namespace's.
    let good = real.token(&claims());
    let sig = good.rsplit('.').next().unwrap();
    let swapped = signing_input(
        &json!({"alg": "RS256", "kid": real.kid}),
        &claims_with("/kubernetes.io/namespace", json!("kube-system")),
    );
    let altered = format!("{swapped}.{sig}");
    assert!(matches!(
        verify(&altered, &keys),
        Err(K8sTokenError::BadSignature)
    ));
    // Same for EC keys.
    let (ec, ec_forger) = (TestKey::ec(), TestKey::ec());
    let forged = ec_forger.token_with_header(&json!({"alg": "ES256", "kid": ec.kid}), &claims());
    assert!(matches!(
        verify(&forged, &keyset(&[&ec])),
        Err(K8sTokenError::BadSignature)
    ));
}

#[test]
fn unknown_or_missing_key_ids_are_refused() {
    let (known, unknown) = (TestKey::rsa(), TestKey::rsa());
    let keys = keyset(&[&known]);
    let err = verify(&unknown.token(&claims()), &keys).unwrap_err();
    assert!(
        matches!(&err, K8sTokenError::UnknownKey { kid } if *kid == unknown.kid),
        "{err:?}"
    );
    let no_kid = known.token_with_header(&json!({"alg": "RS256"}), &claims());
    assert!(matches!(
        verify(&no_kid, &keys),
        Err(K8sTokenError::MissingKeyId)
    ));
}

#[test]
fn unsigned_tokens_are_refused() {
    let key = TestKey::rsa();
    for alg in ["none", "None", "NONE"] {
        let t = format!(
            "{}.",
            signing_input(&json!({"alg": alg, "kid": key.kid}), &claims())
        );
        assert!(
            matches!(verify(&t, &keyset(&[&key])), Err(K8sTokenError::Unsigned)),
            "{alg}"
        );
    }
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    // The classic algorithm-confusion attack: MAC the token with the (public) RSA key.
    let key = TestKey::rsa();
    let keys = keyset(&[&key]);
    for secret in [key.spki_der(), serde_json::to_vec(&key.jwk()).unwrap()] {
        let input = signing_input(&json!({"alg": "HS256", "kid": key.kid}), &claims());
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        let tag = aws_lc_rs::hmac::sign(&mac_key, input.as_bytes());
        let t = format!("{input}.{}", b64(tag.as_ref()));
        let err = verify(&t, &keys).unwrap_err();
        assert!(
            matches!(&err, K8sTokenError::SymmetricAlgorithm { alg } if alg == "HS256"),
            "{err:?}"
        );
    }
    // And a JWKS that offers a symmetric key never yields one.
    let oct = json!({"keys": [{"kty": "oct", "kid": "k", "k": b64(b"secret"), "alg": "HS256"}]});
    assert!(matches!(
        KeySet::from_json(&serde_json::to_vec(&oct).unwrap()),
        Err(JwksError::NoUsableKey)
    ));
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let (rsa, ec) = (TestKey::rsa(), TestKey::ec());
    let keys = keyset(&[&rsa, &ec]);
    // Header says RS256 but names the EC key.
    let t = rsa.token_with_header(&json!({"alg": "RS256", "kid": ec.kid}), &claims());
    let err = verify(&t, &keys).unwrap_err();
    assert!(
        matches!(err, K8sTokenError::AlgorithmMismatch { .. }),
        "{err:?}"
    );
    // PS256 on an RS256 key.
    let t = rsa.token_with_header(&json!({"alg": "PS256", "kid": rsa.kid}), &claims());
    let err = verify(&t, &keys).unwrap_err();
    assert!(
        matches!(err, K8sTokenError::AlgorithmMismatch { .. }),
        "{err:?}"
    );
    let t = rsa.token_with_header(&json!({"alg": "EdDSA", "kid": rsa.kid}), &claims());
    let err = verify(&t, &keys).unwrap_err();
    assert!(
        matches!(err, K8sTokenError::UnsupportedAlgorithm { .. }),
        "{err:?}"
    );
}

#[test]
fn missing_kubernetes_claims_are_refused() {
    let key = TestKey::ec();
    let keys = keyset(&[&key]);
    let cases = [
        ("/kubernetes.io", "kubernetes.io"),
        ("/kubernetes.io/namespace", "kubernetes.io.namespace"),
        (
            "/kubernetes.io/serviceaccount",
            "kubernetes.io.serviceaccount",
        ),
        // A token not bound to a pod (`kubectl create token`) is not a sidecar's.
        ("/kubernetes.io/pod", "kubernetes.io.pod"),
        ("/sub", "sub"),
        ("/iss", "iss"),
        ("/aud", "aud"),
    ];
    for (path, claim) in cases {
        let err = verify(&key.token(&claims_with(path, Value::Null)), &keys).unwrap_err();
        assert!(
            matches!(err, K8sTokenError::MissingClaim(c) if c == claim),
            "{path}: {err:?}"
        );
    }
}

#[test]
fn a_subject_that_disagrees_with_the_kubernetes_claim_is_refused() {
    let key = TestKey::rsa();
    let t = key.token(&claims_with(
        "/sub",
        json!("system:serviceaccount:kube-system:admin"),
    ));
    let err = verify(&t, &keyset(&[&key])).unwrap_err();
    assert!(
        matches!(&err, K8sTokenError::SubjectMismatch { expected, .. }
            if expected == "system:serviceaccount:shop:web"),
        "{err:?}"
    );
    // Names Kubernetes would never allow cannot become SPIFFE path segments either.
    let mut c = claims_with("/kubernetes.io/namespace", json!("Shop/.."));
    c["sub"] = json!("system:serviceaccount:Shop/..:web");
    let err = verify(&key.token(&c), &keyset(&[&key])).unwrap_err();
    assert!(
        matches!(
            err,
            K8sTokenError::InvalidName {
                what: "namespace",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_and_oversized_tokens_are_refused_before_any_check() {
    let key = TestKey::rsa();
    let attestor = file_attestor(&[&key]).1;
    for junk in ["", "abc", "a.b", "a.b.c.d", "a b.c.d", "eyJ.eyJ.sig"] {
        let err = attestor.attest(junk, now()).await.unwrap_err();
        assert!(
            matches!(err, K8sTokenError::Malformed(_)),
            "{junk:?}: {err:?}"
        );
    }
    let big = format!("{}.x", "a.".repeat(MAX_TOKEN_BYTES));
    let err = attestor.attest(&big, now()).await.unwrap_err();
    assert!(matches!(err, K8sTokenError::TooLarge), "{err:?}");
    // Surrounding whitespace (a token file's trailing newline) is fine.
    let t = format!("{}\n", key.token(&claims()));
    assert!(attestor.attest(&t, now()).await.is_ok());
}

fn file_attestor(keys: &[&TestKey]) -> (tempfile::TempDir, K8sTokenAttestor, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).unwrap();
    let initial = KeySet::from_file(&path).unwrap();
    let verifier = JwksVerifier::new(ISSUER.into(), KeySource::File(path.clone()), Some(initial));
    (
        dir,
        K8sTokenAttestor::jwks(td(), AUD.into(), verifier),
        path,
    )
}

#[tokio::test(start_paused = true)]
async fn rotated_keys_are_picked_up_and_removed_keys_age_out() {
    let (old, new) = (TestKey::rsa(), TestKey::ec());
    let (_dir, attestor, path) = file_attestor(&[&old]);
    assert!(attestor.attest(&old.token(&claims()), now()).await.is_ok());

    // The cluster adds a key. Reloads are rate-limited, so right after start-up the new
    // kid is still unknown...
    std::fs::write(&path, jwks(&[&old, &new])).unwrap();
    let err = attestor
        .attest(&new.token(&claims()), now())
        .await
        .unwrap_err();
    assert!(matches!(err, K8sTokenError::UnknownKey { .. }), "{err:?}");
    // ...and once the interval has passed, an unknown kid triggers a reload.
    tokio::time::advance(MIN_RELOAD_INTERVAL).await;
    assert!(attestor.attest(&new.token(&claims()), now()).await.is_ok());

    // The old key is withdrawn: it stays trusted only until the keys age out.
    std::fs::write(&path, jwks(&[&new])).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(attestor.attest(&old.token(&claims()), now()).await.is_ok());
    tokio::time::advance(MAX_KEY_AGE).await;
    let err = attestor
        .attest(&old.token(&claims()), now())
        .await
        .unwrap_err();
    assert!(matches!(err, K8sTokenError::UnknownKey { .. }), "{err:?}");
}

#[tokio::test]
async fn keys_are_fetched_from_the_api_server() {
    let key = TestKey::rsa();
    let doc: Value = serde_json::from_slice(&jwks(&[&key])).unwrap();
    let server = FakeApiServer::start(move |req| match req.path.as_str() {
        "/openid/v1/jwks" => Reply::json(200, doc.clone()),
        _ => Reply::raw(404, "{}"),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "control-plane-token").unwrap();
    let verifier = JwksVerifier::new(
        ISSUER.into(),
        KeySource::Api(server.client(Some(token))),
        None,
    );
    let attestor = K8sTokenAttestor::jwks(td(), AUD.into(), verifier);
    let id = attestor.attest(&key.token(&claims()), now()).await.unwrap();
    assert_eq!(
        id.spiffe_id.to_string(),
        "spiffe://example.org/ns/shop/sa/web"
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "fetched once, then cached");
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some("Bearer control-plane-token")
    );
}

#[tokio::test]
async fn an_unreachable_jwks_endpoint_is_unavailable_not_a_bad_token() {
    let key = TestKey::rsa();
    let server = FakeApiServer::start(|_| {
        Reply::json(
            403,
            json!({"kind": "Status", "reason": "Forbidden", "message": "no RBAC"}),
        )
    })
    .await;
    let verifier = JwksVerifier::new(ISSUER.into(), KeySource::Api(server.client(None)), None);
    let attestor = K8sTokenAttestor::jwks(td(), AUD.into(), verifier);
    let err = attestor
        .attest(&key.token(&claims()), now())
        .await
        .unwrap_err();
    assert!(matches!(err, K8sTokenError::Unavailable(_)), "{err:?}");
    assert_eq!(err.reason(), "k8s_api_unavailable");
}

#[tokio::test]
async fn tokens_are_refused_when_attestation_is_off() {
    let tmp = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&tmp.path().join("data")).unwrap();
    let cred = crate::attest::Credential::K8sSaToken(TestKey::rsa().token(&claims()));
    assert_eq!(format!("{cred:?}"), "K8sSaToken([redacted])");
    assert_eq!(cred.kind(), "k8s_sa_token");
    let err = crate::attest::attest(&store, None, &cred, now(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            crate::attest::AttestError::K8s(K8sTokenError::Disabled)
        ),
        "{err:?}"
    );
}
