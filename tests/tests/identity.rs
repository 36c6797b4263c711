//! End-to-end identity lifecycle with the real binaries: issuance, renewal, control-plane
//! restarts and outages, CA rotation. (Bad inputs are in `identity_rejects.rs`.)

use std::process::Command;
use std::time::Duration;

use ferrule_tests::process::wait_for;
use ferrule_tests::{ControlPlane, CpOptions, Proxy, ProxyOptions};

const WEB: &str = "spiffe://demo.local/ns/default/sa/web";

fn cp_with_ttl(ttl: &str) -> ControlPlane {
    ControlPlane::start(CpOptions {
        svid_ttl: ttl.into(),
        ..Default::default()
    })
    .expect("control plane starts")
}

fn proxy_with_token(cp: &ControlPlane, token: String) -> Proxy {
    let p = Proxy::start(
        cp,
        ProxyOptions {
            token: Some(token),
            ..Default::default()
        },
    )
    .expect("proxy starts");
    p.wait_ready(Duration::from_secs(20)).expect("proxy ready");
    p
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Splits a PEM chain into (leaf, rest).
fn split_chain(pem: &str) -> (String, String) {
    let end = "-----END CERTIFICATE-----\n";
    let i = pem.find(end).expect("a certificate") + end.len();
    (pem[..i].to_string(), pem[i..].to_string())
}

#[test]
fn proxy_obtains_svid_for_token_identity_verified_with_openssl() {
    let cp = cp_with_ttl("1h");
    let token = cp.create_token(WEB, 1, "10m").unwrap();
    let proxy = proxy_with_token(&cp, token);

    let (code, pem) = proxy.admin_get("/identity/cert.pem").unwrap();
    assert_eq!(code, 200);
    let dir = proxy.dir();
    let (leaf, intermediates) = split_chain(&pem);
    std::fs::write(dir.join("leaf.pem"), &leaf).unwrap();
    std::fs::write(dir.join("inter.pem"), &intermediates).unwrap();
    let leaf_path = dir.join("leaf.pem");
    let leaf_path = leaf_path.to_str().unwrap();

    let text = openssl(&["x509", "-in", leaf_path, "-noout", "-text"]);
    // Exactly one URI SAN, the token's identity; nothing else in the SAN.
    let san = openssl(&["x509", "-in", leaf_path, "-noout", "-ext", "subjectAltName"]);
    let san_line = san.lines().nth(1).unwrap().trim();
    assert_eq!(san_line, format!("URI:{WEB}"), "SAN was {san}");
    // X.509-SVID profile.
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(
        text.contains("X509v3 Key Usage: critical\n                Digital Signature"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    // It chains to the bundle the control plane publishes.
    let bundle = cp.bundle_file();
    let verify = openssl(&[
        "verify",
        "-CAfile",
        bundle.to_str().unwrap(),
        "-untrusted",
        dir.join("inter.pem").to_str().unwrap(),
        leaf_path,
    ]);
    assert!(verify.contains(": OK"), "{verify}");
    // The intermediate carries a path-length constraint and is a CA.
    let inter_text = openssl(&[
        "x509",
        "-in",
        dir.join("inter.pem").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(inter_text.contains("CA:TRUE, pathlen:0"), "{inter_text}");

    // The control plane's view agrees.
    let certs = cp.ctl_ok(&["certs", "-o", "json"]).unwrap();
    let certs: serde_json::Value = serde_json::from_str(&certs).unwrap();
    let ident = proxy.identity().unwrap();
    assert_eq!(certs[0]["spiffe_id"], WEB);
    assert_eq!(certs[0]["serial"], ident["serial"]);
    assert_eq!(ident["spiffe_id"], WEB);
}

#[test]
fn renews_over_many_cycles_without_losing_readiness() {
    let cp = cp_with_ttl("6s");
    let token = cp.create_token(WEB, 1, "10m").unwrap();
    let proxy = proxy_with_token(&cp, token);
    let mut serials = vec![proxy.serial().expect("serial")];
    // Five renewals at ~3 s each; the single-use token is spent, so these are mTLS renewals.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while serials.len() < 6 && std::time::Instant::now() < deadline {
        let (code, body) = proxy.admin_get("/ready").unwrap();
        assert_eq!(code, 200, "lost readiness between renewals: {body}");
        if let Some(s) = proxy.serial()
            && serials.last() != Some(&s)
        {
            serials.push(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        serials.len() >= 6,
        "only {} certificates: {}",
        serials.len(),
        proxy.log()
    );
    let ident = proxy.identity().unwrap();
    assert_eq!(ident["spiffe_id"], WEB);
    assert_eq!(ident["renewals_failed"], 0, "{}", proxy.log());
}

#[test]
fn control_plane_restart_keeps_ca_and_tokens() {
    let mut cp = cp_with_ttl("1h");
    let token = cp.create_token(WEB, 2, "10m").unwrap();
    let before: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["ca", "status", "-o", "json"]).unwrap()).unwrap();
    let _p1 = proxy_with_token(&cp, token.clone());

    cp.restart().unwrap();
    let after: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["ca", "status", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(
        before["authorities"][0]["root_fingerprint"], after["authorities"][0]["root_fingerprint"],
        "the CA changed across a restart"
    );
    let tokens: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["token", "list", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(tokens[0]["uses_left"], 1, "{tokens}");

    // The remaining use still works after the restart ...
    let _p2 = proxy_with_token(&cp, token.clone());
    // ... and then the token is spent.
    let p3 = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(token),
            ..Default::default()
        },
    )
    .unwrap();
    let refused = wait_for(Duration::from_secs(10), || {
        p3.identity()
            .ok()
            .and_then(|v| v["last_error"].as_str().map(str::to_string))
    })
    .expect("third proxy reports an error");
    assert!(
        refused.contains("used up") || refused.contains("UsedUp") || refused.contains("uses"),
        "{refused}"
    );
    assert_ne!(p3.admin_get("/ready").unwrap().0, 200);
}

#[test]
fn control_plane_down_during_renewal_then_recovers() {
    let mut cp = cp_with_ttl("10s");
    let token = cp.create_token(WEB, 1, "10m").unwrap();
    let proxy = proxy_with_token(&cp, token);
    let first = proxy.serial().unwrap();
    let ident = proxy.identity().unwrap();
    let not_after = ident["not_after"].as_u64().unwrap();

    cp.kill();
    // Renewal (at ~5 s) fails, the proxy retries and keeps serving on its certificate.
    let failed = wait_for(Duration::from_secs(12), || {
        let v = proxy.identity().ok()?;
        (v["renewals_failed"].as_u64()? > 0).then_some(())
    });
    assert!(failed.is_some(), "no failed renewal seen: {}", proxy.log());
    assert_eq!(proxy.serial().as_deref(), Some(first.as_str()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now + 1 < not_after {
        assert_eq!(
            proxy.admin_get("/ready").unwrap().0,
            200,
            "must stay ready until expiry"
        );
    }

    cp.restart().unwrap();
    let renewed = wait_for(Duration::from_secs(30), || {
        proxy.serial().filter(|s| *s != first)
    });
    assert!(
        renewed.is_some(),
        "no renewal after the control plane returned: {}",
        proxy.log()
    );
    proxy.wait_ready(Duration::from_secs(5)).unwrap();
}

#[test]
fn certificate_expires_while_control_plane_is_down_fails_closed() {
    let mut cp = cp_with_ttl("6s");
    let token = cp.create_token(WEB, 2, "10m").unwrap();
    let proxy = proxy_with_token(&cp, token);
    cp.kill();
    let expired = wait_for(Duration::from_secs(15), || {
        let (code, body) = proxy.admin_get("/ready").ok()?;
        (code == 503 && body.contains("certificate")).then_some(body)
    });
    assert!(
        expired.is_some(),
        "proxy did not fail closed after expiry: {}",
        proxy.log()
    );
    // The expired certificate is withdrawn (no longer presented) at the next retry.
    let withdrawn = wait_for(Duration::from_secs(5), || {
        (proxy.admin_get("/identity/cert.pem").ok()?.0 == 404).then_some(())
    });
    assert!(
        withdrawn.is_some(),
        "expired certificate still held: {}",
        proxy.log()
    );
    // Back: the proxy re-bootstraps with the token's remaining use.
    cp.restart().unwrap();
    proxy.wait_ready(Duration::from_secs(40)).unwrap();
}

#[test]
fn ca_rotation_reaches_proxies_without_restart() {
    let cp = cp_with_ttl("6s");
    let token = cp.create_token(WEB, 1, "10m").unwrap();
    let proxy = proxy_with_token(&cp, token);
    let status = |cp: &ControlPlane| -> serde_json::Value {
        serde_json::from_str(&cp.ctl_ok(&["ca", "status", "-o", "json"]).unwrap()).unwrap()
    };
    let old = status(&cp)["authorities"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v0 = proxy.identity().unwrap()["bundle_version"]
        .as_u64()
        .unwrap();

    // 1. Prepare: the new root joins every proxy's bundle.
    let prepared: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["ca", "prepare", "-o", "json"]).unwrap()).unwrap();
    let new = prepared["id"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    wait_for(Duration::from_secs(10), || {
        let v = proxy.identity().ok()?;
        (v["bundle_roots"].as_u64()? == 2 && v["bundle_version"].as_u64()? > v0).then_some(())
    })
    .unwrap_or_else(|| panic!("bundle did not reach the proxy: {}", proxy.log()));

    // 2. Activate: the next renewal chains to the new authority.
    cp.ctl_ok(&["ca", "activate", &new]).unwrap();
    // Retiring the old one now is refused: live certificates still chain to it.
    let out = cp.ctl(&["ca", "retire", &old]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FailedPrecondition"),
        "{out:?}"
    );

    let issued_by_new = wait_for(Duration::from_secs(15), || {
        let certs: serde_json::Value =
            serde_json::from_str(&cp.ctl_ok(&["certs", "-o", "json"]).ok()?).ok()?;
        let serial = proxy.serial()?;
        let c = certs
            .as_array()?
            .iter()
            .find(|c| c["serial"] == serial.as_str())?;
        (c["authority"] == new.as_str()).then_some(())
    });
    assert!(
        issued_by_new.is_some(),
        "proxy never renewed from the new authority: {}",
        proxy.log()
    );

    // 3. Retire the old authority once nothing valid chains to it (6 s lifetimes).
    let retired = wait_for(Duration::from_secs(20), || {
        cp.ctl(&["ca", "retire", &old])
            .status
            .success()
            .then_some(())
    });
    assert!(retired.is_some());
    wait_for(Duration::from_secs(10), || {
        (proxy.identity().ok()?["bundle_roots"].as_u64()? == 1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "old root not removed from the proxy's bundle: {}",
            proxy.log()
        )
    });
    // The proxy keeps renewing against the rotated control plane.
    let s = proxy.serial().unwrap();
    wait_for(Duration::from_secs(15), || {
        proxy.serial().filter(|x| *x != s)
    })
    .unwrap_or_else(|| panic!("no renewal after rotation: {}", proxy.log()));
    proxy.wait_ready(Duration::from_secs(5)).unwrap();
}
