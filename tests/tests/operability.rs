//! Operability end to end: `ferrulectl check` and the control plane's `/metrics`, against
//! the real binaries. An issuer that expires within 14 days must fail the check and show
//! in the metrics; a healthy mesh passes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferrule_tests::process::wait_for;
use ferrule_tests::{ControlPlane, CpOptions, Proxy, ProxyOptions};

const WEB: &str = "spiffe://demo.local/ns/default/sa/web";

fn sh(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An external issuer (root 10 years, intermediate `days` days) made with openssl.
fn external_issuer(dir: &Path, days: u32) {
    sh(
        dir,
        &format!(
            r#"
cat > ext.cnf <<'X'
[froot]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[fint]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
X
openssl ecparam -name prime256v1 -genkey -noout -out root.key
openssl req -x509 -new -key root.key -subj "/O=demo.local/CN=External Root" -days 3650 -sha256 -extensions froot -config <(cat /etc/ssl/openssl.cnf ext.cnf) -out root.pem
openssl ecparam -name prime256v1 -genkey -noout -out int.key.sec1
openssl pkcs8 -topk8 -nocrypt -in int.key.sec1 -out int.key
openssl req -new -key int.key -subj "/O=demo.local/CN=External Issuer" -out int.csr
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -days {days} -sha256 -extfile ext.cnf -extensions fint -out int.pem
cat int.pem root.pem > chain.pem
chmod 600 int.key
"#
        ),
    );
}

fn check(cp: &ControlPlane) -> (i32, String) {
    let out = cp.ctl(&["check"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A proxy with web's identity, enrolled through `cp` and ready.
fn ready_web(cp: &ControlPlane) -> Proxy {
    let token = cp.create_token(WEB, 1, "5m").unwrap();
    let p = Proxy::start(
        cp,
        ProxyOptions {
            token: Some(token),
            ..Default::default()
        },
    )
    .unwrap();
    p.wait_ready(Duration::from_secs(20)).unwrap();
    p
}

#[test]
fn check_passes_on_a_healthy_mesh_and_metrics_show_issuance() {
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    // Kept running: `check` and `workloads` count it as connected.
    let _proxy = ready_web(&cp);
    // A refused request to count.
    let _ = cp.ctl(&["token", "revoke", "nope"]);
    let (code, out) = check(&cp);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("[PASS]")).count(),
        5,
        "{out}"
    );
    assert!(
        out.contains("1 connected proxy(ies) renewed on time"),
        "{out}"
    );

    let workloads = cp.ctl_ok(&["workloads", "-o", "json"]).unwrap();
    let w: serde_json::Value = serde_json::from_str(&workloads).unwrap();
    assert_eq!(w[0]["spiffe_id"], WEB);
    assert_eq!(w[0]["connected"], true);
    assert!(w[0]["cert_not_after"].as_i64().unwrap() > 0);

    let metrics = wait_for(Duration::from_secs(10), || {
        let (code, body) = ferrule_tests::http::get(cp.metrics_addr, "/metrics").ok()?;
        (code == 200 && body.contains("ferrule_cp_ca_expiring_soon")).then_some(body)
    })
    .expect("control-plane metrics");
    assert!(
        metrics.contains("ferrule_cp_certificates_issued_total{attestation=\"join_token\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrule_cp_connected_proxies 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kind=\"issuer\",state=\"active\"} 0"),
        "issuer not expiring: {metrics}"
    );
    assert_eq!(
        ferrule_tests::http::get(cp.metrics_addr, "/healthz")
            .unwrap()
            .0,
        200
    );
}

#[test]
fn check_fails_when_the_issuer_expires_within_14_days() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    external_issuer(dir.path(), 10);
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let cp = ControlPlane::start(CpOptions {
        extra_args: vec![
            "--issuer-cert".into(),
            p("chain.pem"),
            "--issuer-key".into(),
            p("int.key"),
        ],
        ..Default::default()
    })
    .unwrap();
    let (code, out) = check(&cp);
    assert_eq!(code, 1, "must fail, not warn: {out}");
    assert!(
        out.contains("[FAIL] nothing expires within 14 days"),
        "{out}"
    );
    assert!(out.contains("issuer expires in 9 day(s)"), "{out}");
    // The chain itself is fine.
    assert!(out.contains("[PASS] CA chain valid"), "{out}");

    let metrics = wait_for(Duration::from_secs(10), || {
        let (_, body) = ferrule_tests::http::get(cp.metrics_addr, "/metrics").ok()?;
        body.contains("ferrule_cp_ca_expiring_soon{")
            .then_some(body)
    })
    .expect("metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ferrule_cp_ca_expiring_soon{") && l.contains("kind=\"issuer\""))
        .unwrap();
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        cp.log().contains("expires within 14 days"),
        "warning logged"
    );

    // The external issuer still signs: proxies get certificates chaining to its root.
    ready_web(&cp);
}

/// Sends one raw HTTP/1.1 request to `addr` and returns the status code.
fn raw_status(addr: std::net::SocketAddr, method: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The proxy's admin port is read-only (Linkerd CVE-2024-40632: an unauthenticated
/// shutdown endpoint): every method but GET is refused (PUT only on `/log-level`), no
/// shutdown-style path exists, and the proxy keeps serving afterwards.
#[test]
fn the_admin_port_cannot_shut_the_proxy_down() {
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    let p = ready_web(&cp);
    for path in ["/shutdown", "/quitquitquit", "/drain", "/live", "/ready"] {
        for method in ["POST", "PUT", "DELETE"] {
            assert_eq!(
                raw_status(p.admin, method, path),
                405,
                "{method} {path} must be refused"
            );
        }
    }
    for path in [
        "/shutdown",
        "/quitquitquit",
        "/drain_listeners",
        "/admin/shutdown",
    ] {
        assert_eq!(raw_status(p.admin, "GET", path), 404, "GET {path}");
    }
    assert_eq!(p.admin_get("/live").unwrap().0, 200);
    assert_eq!(p.admin_get("/ready").unwrap().0, 200, "{}", p.log());
}
