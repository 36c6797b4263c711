//! Kubernetes service-account token attestation end to end: the real control plane
//! verifies projected tokens (JWKS mode, keys from a file as `kubectl get --raw
//! /openid/v1/jwks` prints them), and a real proxy bootstraps with `--sa-token-file`.
//!
//! There is no API server here: the tokens are real JWTs in the exact shape the API
//! server issues, signed by a cluster key generated per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrule_proto::identity::v1 as pb;
use ferrule_tests::pki::{csr, handle_for, identity_client};
use ferrule_tests::process::{free_port, wait_for};
use ferrule_tests::{ControlPlane, CpOptions, Proxy, ProxyOptions};
use serde_json::{Value, json};
use tonic::Code;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const WEB: &str = "spiffe://demo.local/ns/shop/sa/web";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A cluster's service-account signing key (EC P-256, ES256).
struct ClusterKey {
    key: EcdsaKeyPair,
    kid: String,
}

impl ClusterKey {
    fn new() -> Self {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        Self {
            key,
            kid: b64(digest.as_ref()),
        }
    }

    /// The JWKS document the API server would publish for this key.
    fn jwks(&self) -> Value {
        let p = self.key.public_key().as_ref();
        json!({"keys": [{"use": "sig", "kty": "EC", "crv": "P-256", "kid": self.kid,
                         "alg": "ES256", "x": b64(&p[1..33]), "y": b64(&p[33..65])}]})
    }

    /// A projected token for pod `web-0` of service account `<ns>/<sa>`, audience `aud`,
    /// valid from now for an hour, with header `kid` (normally this key's).
    fn token_with(&self, kid: &str, ns: &str, sa: &str, aud: &str) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "aud": [aud], "exp": now + 3600, "iat": now, "nbf": now, "iss": ISSUER,
            "jti": "8c1f8c9e-2f7a-4c53-9d1e-5b3f2a7c9e10",
            "kubernetes.io": {
                "namespace": ns,
                "node": {"name": "node-a", "uid": "11111111-2222-4333-8444-555555555555"},
                "pod": {"name": "web-0", "uid": "66666666-7777-4888-9999-000000000000"},
                "serviceaccount": {"name": sa, "uid": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"}
            },
            "sub": format!("system:serviceaccount:{ns}:{sa}")
        });
        let header = json!({"alg": "ES256", "kid": kid});
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn token(&self, ns: &str, sa: &str) -> String {
        self.token_with(&self.kid, ns, sa, "ferrule")
    }
}

/// A control plane verifying tokens of `key`'s cluster; the tempdir holds the JWKS file.
fn start_cp(key: &ClusterKey) -> (tempfile::TempDir, ControlPlane) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&key.jwks()).unwrap()).unwrap();
    let cp = ControlPlane::start(CpOptions {
        extra_args: vec![
            "--k8s-attestation".into(),
            "jwks".into(),
            "--k8s-issuer".into(),
            ISSUER.into(),
            "--k8s-jwks-file".into(),
            jwks.to_str().unwrap().into(),
        ],
        ..Default::default()
    })
    .expect("control plane starts");
    (dir, cp)
}

/// A proxy bootstrapping with the service-account token file `token` (as injected:
/// `FERRULE_SA_TOKEN_FILE` and `FERRULE_SPIFFE_ID`).
fn start_proxy(cp: &ControlPlane, token: &Path, spiffe_id: &str) -> Proxy {
    Proxy::start(
        cp,
        ProxyOptions {
            spiffe_id: Some(spiffe_id.into()),
            extra_args: vec!["--sa-token-file".into(), token.to_str().unwrap().into()],
            ..Default::default()
        },
    )
    .expect("proxy starts")
}

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("sa-token");
    std::fs::write(&path, token).unwrap();
    path
}

fn metrics(cp: &ControlPlane) -> String {
    ferrule_tests::http::get(cp.metrics_addr, "/metrics")
        .unwrap()
        .1
}

#[test]
fn a_proxy_with_a_projected_token_gets_its_service_account_identity() {
    let key = ClusterKey::new();
    let (dir, cp) = start_cp(&key);
    let token = token_file(dir.path(), &key.token("shop", "web"));
    let proxy = start_proxy(&cp, &token, WEB);
    proxy.wait_ready(Duration::from_secs(20)).unwrap();
    assert_eq!(proxy.identity().unwrap()["spiffe_id"], WEB);

    let m = metrics(&cp);
    assert!(
        m.contains("ferrule_cp_certificates_issued_total{attestation=\"k8s_sa_token\"} 1"),
        "{m}"
    );
    assert!(
        cp.log().contains("service-account token verified"),
        "{}",
        cp.log()
    );
    // The token never reaches a log.
    let secret_part = std::fs::read_to_string(&token).unwrap();
    let sig = secret_part.rsplit('.').next().unwrap();
    assert!(!cp.log().contains(sig) && !proxy.log().contains(sig));
}

#[test]
fn a_forged_token_is_refused_and_the_proxy_stays_not_ready_until_a_valid_one_appears() {
    let key = ClusterKey::new();
    let forger = ClusterKey::new();
    let (dir, cp) = start_cp(&key);
    // Signed by the forger's key but naming the cluster key.
    let token = token_file(
        dir.path(),
        &forger.token_with(&key.kid, "shop", "web", "ferrule"),
    );
    let proxy = start_proxy(&cp, &token, WEB);

    let err = wait_for(Duration::from_secs(20), || {
        let id = proxy.identity().ok()?;
        id["last_error"].as_str().map(str::to_string)
    })
    .expect("a refused attempt");
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(err.contains("signature"), "{err}");
    let (code, _) = proxy.admin_get("/ready").unwrap();
    assert_ne!(code, 200, "no certificate, not ready");
    assert!(proxy.identity().unwrap()["spiffe_id"].is_null());
    let m = metrics(&cp);
    assert!(m.contains("reason=\"k8s_bad_signature\""), "{m}");
    assert!(
        !m.contains("attestation=\"k8s_sa_token\""),
        "nothing issued: {m}"
    );

    // The kubelet rotates the file; the next attempt reads the new (valid) token.
    std::fs::write(&token, key.token("shop", "web")).unwrap();
    proxy.wait_ready(Duration::from_secs(60)).unwrap();
    assert_eq!(proxy.identity().unwrap()["spiffe_id"], WEB);
}

async fn certify(
    cp: &ControlPlane,
    token: String,
    expected: &str,
) -> Result<String, tonic::Status> {
    let mut client = identity_client(cp, &handle_for(cp, None).unwrap())
        .await
        .unwrap();
    let (_key, der) = csr(&[], false).unwrap();
    client
        .certify(pb::CertifyRequest {
            csr_der: der,
            credential: Some(pb::certify_request::Credential::K8sSaToken(token)),
            expected_spiffe_id: expected.into(),
        })
        .await
        .map(|r| r.into_inner().spiffe_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_refusal_has_a_precise_grpc_status() {
    let key = ClusterKey::new();
    let (_dir, cp) = start_cp(&key);
    assert_eq!(
        certify(&cp, key.token("shop", "web"), "").await.unwrap(),
        WEB
    );

    let wrong_aud = key.token_with(&key.kid, "shop", "web", "vault");
    let err = certify(&cp, wrong_aud, "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("audiences"), "{err:?}");

    let err = certify(&cp, "not.a.jwt".into(), "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A valid token for shop/web cannot obtain another workload's identity.
    let err = certify(
        &cp,
        key.token("shop", "web"),
        "spiffe://demo.local/ns/shop/sa/admin",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Attestation off (the default): FAILED_PRECONDITION, not "unknown token".
    let plain = ControlPlane::start(CpOptions::default()).unwrap();
    let err = certify(&plain, key.token("shop", "web"), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Keys fetched from an API server that is down: UNAVAILABLE (retry), not a verdict.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_cert = rcgen::CertificateParams::new(vec!["k8s.test".into()])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let closed_port = free_port();
    let down = ControlPlane::start(CpOptions {
        extra_args: [
            "--k8s-attestation",
            "jwks",
            "--k8s-issuer",
            ISSUER,
            "--k8s-api-url",
            &format!("https://127.0.0.1:{closed_port}"),
            "--k8s-api-ca-file",
            ca.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .unwrap();
    let err = certify(&down, key.token("shop", "web"), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[test]
fn bad_kubernetes_flags_are_refused_at_start_up_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let bad_jwks = dir.path().join("bad.json");
    std::fs::write(
        &bad_jwks,
        r#"{"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}"#,
    )
    .unwrap();
    let bad = bad_jwks.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--k8s-attestation", "jwks", "--k8s-jwks-file", bad],
            "--k8s-issuer",
        ),
        (
            &[
                "--k8s-attestation",
                "jwks",
                "--k8s-issuer",
                ISSUER,
                "--k8s-jwks-file",
                bad,
            ],
            "--k8s-jwks-file",
        ),
        (&["--k8s-jwks-file", bad], "--k8s-jwks-file"),
        (&["--k8s-attestation", "maybe"], "--k8s-attestation"),
        (
            &[
                "--k8s-attestation",
                "token-review",
                "--k8s-token-audience",
                " ",
            ],
            "--k8s-token-audience",
        ),
        // Not in a pod, and no --k8s-api-url: no API server to ask.
        (&["--k8s-attestation", "token-review"], "--k8s-api-url"),
        (
            &["--k8s-api-url", "https://127.0.0.1:6443"],
            "--k8s-api-ca-file",
        ),
    ];
    for (args, flag) in cases {
        let out = Command::new(ferrule_tests::bin_path("ferrule-control-plane"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--trust-domain", "demo.local", "--listen", "127.0.0.1:0"])
            .args(*args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?} should name {flag}: {err}");
    }
}

#[test]
fn the_proxy_refuses_a_join_token_and_a_service_account_token_together() {
    let out = Command::new(ferrule_tests::bin_path("ferrule-proxy"))
        .args([
            "run",
            "--trust-domain",
            "demo.local",
            "--control-plane",
            "127.0.0.1:1",
        ])
        .args(["--bundle-file", "/dev/null", "--join-token", "fjt_x"])
        .args(["--sa-token-file", "/var/run/secrets/ferrule/token"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--sa-token-file"), "{err}");
}
