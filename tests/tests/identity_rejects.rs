//! Every bad input to the identity API gets a precise gRPC status and nothing is issued.
//! Real control plane process, real TLS, real CSRs.

use std::process::Command;
use std::time::Duration;

use ferrule_proto::identity::v1 as pb;
use ferrule_tests::pki::{
    certify_with_token, credentials, csr, handle_for, identity_client, obtain,
};
use ferrule_tests::{ControlPlane, CpOptions};
use tonic::Code;

const WEB: &str = "spiffe://demo.local/ns/default/sa/web";
const API: &str = "spiffe://demo.local/ns/default/sa/api";

fn start_cp() -> ControlPlane {
    ControlPlane::start(CpOptions::default()).expect("control plane starts")
}

/// Certificates the control plane has issued so far.
fn issued(cp: &ControlPlane) -> usize {
    let out = cp.ctl_ok(&["certs", "-o", "json"]).unwrap();
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut out = vec![];
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::URI(u) => out.push(u.to_string()),
                other => out.push(format!("non-uri:{other:?}")),
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_sans_and_ca_flag_are_ignored_only_the_attested_identity_is_issued() {
    // Consul CVE-2022-40716: a CSR with several URI SANs must not smuggle identities.
    let cp = start_cp();
    let token = cp.create_token(WEB, 1, "5m").unwrap();
    let mut client = identity_client(&cp, &handle_for(&cp, None).unwrap())
        .await
        .unwrap();
    let (_key, der) = csr(
        &[API, "spiffe://demo.local/ferrule/control-plane", WEB],
        true,
    )
    .unwrap();
    let resp = certify_with_token(&mut client, der, &token, "")
        .await
        .unwrap();
    assert_eq!(uri_sans(&resp.leaf_der), vec![WEB.to_string()]);
    let (_, cert) = x509_parser::parse_x509_certificate(&resp.leaf_der).unwrap();
    let bc = cert.basic_constraints().unwrap();
    assert!(bc.is_none_or(|b| !b.value.ca), "leaf must not be a CA");
    assert_eq!(resp.spiffe_id, WEB);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_csr_bad_signature_and_weak_keys_are_refused_without_spending_the_token() {
    let cp = start_cp();
    let token = cp.create_token(WEB, 1, "5m").unwrap();
    let mut client = identity_client(&cp, &handle_for(&cp, None).unwrap())
        .await
        .unwrap();

    // Garbage.
    let e = certify_with_token(&mut client, b"not a csr".to_vec(), &token, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Empty.
    let e = certify_with_token(&mut client, vec![], &token, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Bad signature: flip a bit in the signature (the last byte of the DER).
    let (_k, mut der) = csr(&[], false).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let e = certify_with_token(&mut client, der, &token, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().to_lowercase().contains("signature"), "{e:?}");
    // Weak key: RSA-1024, made by openssl.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weak.der");
    let st = Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=weak", "-outform", "DER",
            "-keyout",
        ])
        .arg(dir.path().join("weak.key"))
        .arg("-out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let e = certify_with_token(&mut client, std::fs::read(&out).unwrap(), &token, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Oversized.
    let e = certify_with_token(&mut client, vec![0x30; 64 * 1024], &token, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    assert_eq!(issued(&cp), 0, "nothing may be issued");
    // The token was not spent by any of the refused requests.
    let (_k, der) = csr(&[], false).unwrap();
    certify_with_token(&mut client, der, &token, "")
        .await
        .expect("token still usable");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_with_precise_statuses() {
    let cp = start_cp();
    let mut client = identity_client(&cp, &handle_for(&cp, None).unwrap())
        .await
        .unwrap();
    let fresh_csr = || csr(&[], false).unwrap().1;

    // Unknown (well-formed but never issued) and malformed tokens.
    let real = cp.create_token(WEB, 1, "5m").unwrap();
    let mut forged = real.clone();
    let n = forged.len();
    forged.replace_range(n - 4.., "AAAA");
    for t in [forged.as_str(), "fjt_nope", "", "x"] {
        let e = certify_with_token(&mut client, fresh_csr(), t, "")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "token {t:?}: {e:?}");
        assert!(!e.message().contains(&real), "status must not echo secrets");
    }

    // Token for another identity than the caller expects.
    let e = certify_with_token(&mut client, fresh_csr(), &real, API)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("expected"), "{e:?}");

    // Used up.
    certify_with_token(&mut client, fresh_csr(), &real, WEB)
        .await
        .unwrap();
    let e = certify_with_token(&mut client, fresh_csr(), &real, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Expired.
    let short = cp.create_token(WEB, 5, "1s").unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = certify_with_token(&mut client, fresh_csr(), &short, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().to_lowercase().contains("expired"), "{e:?}");

    // Revoked.
    let revoked = cp.create_token(WEB, 5, "5m").unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["token", "list", "-o", "json"]).unwrap()).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["uses_left"] == 5
                && t["expires_at"].as_i64().unwrap() > 0
                && revoked.contains(t["id"].as_str().unwrap())
        })
        .expect("token listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    cp.ctl_ok(&["token", "revoke", &id]).unwrap();
    let e = certify_with_token(&mut client, fresh_csr(), &revoked, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // No credential and no client certificate.
    let e = client
        .certify(pb::CertifyRequest {
            csr_der: fresh_csr(),
            credential: None,
            expected_spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    assert_eq!(issued(&cp), 1, "only the one good request was issued");
    // The control plane's log never contains a token.
    let log = cp.log();
    for t in [&real, &short, &revoked] {
        assert!(!log.contains(t.as_str()), "token leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_only_with_own_valid_certificate() {
    let cp = ControlPlane::start(CpOptions {
        svid_ttl: "6s".into(),
        ..Default::default()
    })
    .unwrap();
    let creds = obtain(&cp, WEB).await.unwrap();

    // Renewal over mTLS with a valid certificate: same identity only.
    let handle = handle_for(&cp, Some(creds)).unwrap();
    let mut client = identity_client(&cp, &handle).await.unwrap();
    let (key, der) = csr(&[API], false).unwrap();
    let renewed = client
        .certify(pb::CertifyRequest {
            csr_der: der,
            credential: None,
            expected_spiffe_id: String::new(),
        })
        .await
        .expect("renewal works")
        .into_inner();
    assert_eq!(uri_sans(&renewed.leaf_der), vec![WEB.to_string()]);
    let _ = credentials(&renewed, &key).unwrap();
    // Asking to renew into another identity is refused.
    let (_k, der) = csr(&[], false).unwrap();
    let e = client
        .certify(pb::CertifyRequest {
            csr_der: der,
            credential: None,
            expected_spiffe_id: API.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A certificate from a foreign CA with the same SPIFFE ID: refused.
    let foreign_cp = ControlPlane::start(CpOptions::default()).unwrap();
    let foreign = obtain(&foreign_cp, WEB).await.unwrap();
    let handle = handle_for(&cp, Some(foreign)).unwrap();
    let mut client = identity_client(&cp, &handle).await.unwrap();
    let (_k, der) = csr(&[], false).unwrap();
    let e = client
        .certify(pb::CertifyRequest {
            csr_der: der,
            credential: None,
            expected_spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("unknown_ca"), "{e:?}");

    // An expired certificate: refused.
    let old = obtain(&cp, WEB).await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let handle = handle_for(&cp, Some(old)).unwrap();
    let mut client = identity_client(&cp, &handle).await.unwrap();
    let (_k, der) = csr(&[], false).unwrap();
    let e = client
        .certify(pb::CertifyRequest {
            csr_der: der,
            credential: None,
            expected_spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("expired"), "{e:?}");
}

#[test]
fn admin_api_rejects_bad_requests_with_clear_errors() {
    let cp = start_cp();
    let cases: &[(&[&str], &str)] = &[
        (
            &["token", "create", "--spiffe-id", "not-a-spiffe-id"],
            "InvalidArgument",
        ),
        (
            &[
                "token",
                "create",
                "--spiffe-id",
                "spiffe://other.domain/ns/a/sa/b",
            ],
            "trust domain",
        ),
        (
            &[
                "token",
                "create",
                "--spiffe-id",
                "spiffe://demo.local/ferrule/control-plane",
            ],
            "reserved",
        ),
        (
            &["token", "create", "--spiffe-id", WEB, "--uses", "0"],
            "uses",
        ),
        (&["token", "revoke", "nope"], "NotFound"),
        (&["ca", "activate", "nope"], "NotFound"),
    ];
    for (args, needle) in cases {
        let out = cp.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Usage errors exit 64; an unreachable control plane exits 69.
    let out = cp.ctl(&["token", "create"]);
    assert_eq!(out.status.code(), Some(64), "usage error: {out:?}");
    let out = ferrule_tests::ctl_output(
        std::path::Path::new("/nonexistent/admin.sock"),
        &["ca", "status"],
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
}

#[test]
fn admin_socket_and_data_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let cp = start_cp();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cp.admin_socket()), 0o600);
    assert_eq!(mode(&cp.data_dir()), 0o700);
}

#[test]
fn refuses_to_start_with_group_readable_key_material() {
    use std::os::unix::fs::PermissionsExt;
    let mut cp = start_cp();
    cp.stop();
    std::fs::set_permissions(cp.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cp.run_to_exit(&[]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(cp.data_dir().to_str().unwrap()), "{err}");

    // A KEK file readable by others is refused too.
    std::fs::set_permissions(cp.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let kek = cp.dir.path().join("kek");
    std::fs::write(&kek, "00".repeat(32)).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cp
        .run_to_exit(&["--kek-file", kek.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kek"),
        "{out:?}"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(ferrule_tests::bin_path("ferrule-control-plane"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--trust-domain", "spiffe://x/y"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FERRULE_TRUST_DOMAIN"),
        "{out:?}"
    );
    let out = run(&["--trust-domain", "demo.local", "--svid-ttl", "1s"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FERRULE_SVID_TTL"),
        "{out:?}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing created on a config error"
    );
}

#[test]
fn proxy_refuses_a_control_plane_with_the_wrong_identity_or_an_unknown_ca() {
    use ferrule_tests::{Proxy, ProxyOptions};
    let cp = start_cp();
    let token = cp.create_token(WEB, 1, "5m").unwrap();
    // Expecting another SPIFFE ID for the control plane: the proxy must not talk to it.
    let p = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(token.clone()),
            extra_args: vec![
                "--control-plane-id".into(),
                "spiffe://demo.local/ferrule/impostor".into(),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let err = ferrule_tests::process::wait_for(Duration::from_secs(10), || {
        p.identity().ok()?["last_error"]
            .as_str()
            .map(str::to_string)
    })
    .expect("an error is reported");
    assert!(
        p.admin_get("/ready").unwrap().0 == 503,
        "must not become ready"
    );
    assert!(err.contains("unreachable"), "{err}");
    assert!(
        p.log().contains("identity_mismatch")
            || p.log().contains("IdentityMismatch")
            || p.log().contains("not the expected"),
        "{}",
        p.log()
    );
    // The token was never sent to the impostor, so it still works with the real one.
    let list: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["token", "list", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(list[0]["uses_left"], 1, "{list}");
}
