//! Authorization policy end to end with the real binaries: `ferrulectl apply` → control
//! plane → mesh session → proxy enforcement, at L7 (HTTP port) and L4 (opaque port).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrule_tests::apps::{AppServer, Behaviour};
use ferrule_tests::process::{free_port, wait_for};
use ferrule_tests::{ControlPlane, CpOptions, Proxy, ProxyOptions, bin_path};

const WEB: &str = "spiffe://demo.local/ns/default/sa/web";
const API: &str = "spiffe://demo.local/ns/default/sa/api";

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Mesh {
    cp: ControlPlane,
    web: Proxy,
    api: Proxy,
    http_up: SocketAddr,
    tcp_up: SocketAddr,
    _app: KillOnDrop,
    _echo: AppServer,
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn mesh() -> Mesh {
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    let app_addr = lo(free_port());
    let app = KillOnDrop(
        Command::new(bin_path("ferrulectl"))
            .args([
                "demo",
                "serve",
                "--listen",
                &app_addr.to_string(),
                "--name",
                "api",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let echo = AppServer::start(Behaviour::Echo);
    let (api_in, http_up, tcp_up) = (lo(free_port()), lo(free_port()), lo(free_port()));
    let api = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(API, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: api\ninbound:\n  listen: {api_in}\n  ports:\n    - port: 8080\n      app: {app_addr}\n      protocol: http\n    - port: 9090\n      app: {}\n",
                echo.addr
            )),
            ..Default::default()
        },
    )
    .unwrap();
    let web = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(WEB, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: web\ninbound:\n  listen: {}\noutbound:\n  upstreams:\n    - listen: {http_up}\n      service: api\n      port: 8080\n    - listen: {tcp_up}\n      service: api\n      port: 9090\n",
                lo(free_port())
            )),
            ..Default::default()
        },
    )
    .unwrap();
    api.wait_ready(Duration::from_secs(20)).unwrap();
    web.wait_ready(Duration::from_secs(20)).unwrap();
    wait_for(Duration::from_secs(10), || {
        (web.identity().ok()?["workloads_known"].as_u64()? >= 2).then_some(())
    })
    .expect("discovery converged");
    wait_for(Duration::from_secs(10), || {
        TcpStream::connect(app_addr).ok().map(|_| ())
    })
    .expect("demo app listening");
    Mesh {
        cp,
        web,
        api,
        http_up,
        tcp_up,
        _app: app,
        _echo: echo,
    }
}

/// One HTTP/1.1 request through `addr`; returns (status, deny-reason header, body).
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, Option<String>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, None, text);
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let reason = head.lines().find_map(|l| {
        l.strip_prefix("x-ferrule-deny-reason: ")
            .map(str::to_string)
    });
    (code, reason, body.to_string())
}

fn apply(cp: &ControlPlane, yaml: &str) -> std::process::Output {
    let path = cp.dir.path().join(format!("policy-{}.yaml", free_port()));
    std::fs::write(&path, yaml).unwrap();
    cp.ctl(&["apply", "-f", path.to_str().unwrap()])
}

fn doc(name: &str, action: &str, rules: &str) -> String {
    doc_ports(name, action, "[]", rules)
}

fn doc_ports(name: &str, action: &str, ports: &str, rules: &str) -> String {
    format!(
        "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    spiffeId: {API}\n    ports: {ports}\n  action: {action}\n  rules:\n{rules}"
    )
}

#[test]
fn l7_rules_deny_takes_effect_fast_closes_long_lived_connections_and_recovers() {
    let m = mesh();
    // Baseline: allowed by the mesh default.
    let (code, _, body) = request(m.http_up, "GET", "/public/x");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from api"), "{body}");

    // ALLOW GET /public/* from web; DENY POST /admin.
    let out = apply(
        &m.cp,
        &format!(
            "{}\n---\n{}",
            // Selects only the HTTP port: an ALLOW with HTTP conditions would (by design,
            // fail closed) admit nothing on the opaque port.
            doc_ports(
                "api-public",
                "ALLOW",
                "[8080]",
                &format!(
                    "    - from: [{{spiffeId: {WEB}}}]\n      to: {{methods: [GET], paths: [\"/public/*\"]}}\n    - from: [{{spiffeId: {WEB}}}]\n      to: {{methods: [POST], paths: [/admin]}}\n"
                )
            ),
            doc_ports(
                "api-no-admin-post",
                "DENY",
                "[8080]",
                "    - to: {methods: [POST], paths: [/admin]}\n"
            ),
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let v1 = wait_for(Duration::from_secs(10), || {
        m.api.identity().ok()?["policy_version"]
            .as_u64()
            .filter(|v| *v >= 1)
    });
    assert!(
        v1.is_some(),
        "api never applied the policy: {}",
        m.api.log()
    );
    assert_eq!(request(m.http_up, "GET", "/public/x").0, 200);
    let (code, reason, _) = request(m.http_up, "POST", "/admin");
    assert_eq!((code, reason.as_deref()), (403, Some("denied_by_rule")));
    // Bypass attempts against the DENY never reach the application as /admin.
    for path in [
        "//admin",
        "/admin/",
        "/./admin",
        "/public/../admin",
        "/%61dmin",
        "/ADMIN",
        "/admin?x=1",
    ] {
        assert_eq!(request(m.http_up, "POST", path).0, 403, "POST {path}");
    }
    for path in [
        "/admin%2F",
        "/%2e%2e/admin",
        "/admin;x=1",
        "/public/%2E%2E/admin",
    ] {
        let (code, reason, _) = request(m.http_up, "GET", path);
        assert_eq!(
            (code, reason.as_deref()),
            (403, Some("invalid_path")),
            "GET {path}"
        );
    }
    // Not allowed by any ALLOW rule.
    let (code, reason, _) = request(m.http_up, "GET", "/private");
    assert_eq!(
        (code, reason.as_deref()),
        (403, Some("no_allow_rule_matched"))
    );

    // Metrics: the denial by policy and rule, and HTTP requests by status class.
    let (_, metrics) = m.api.admin_get("/metrics").unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("ferrule_proxy_authz_decisions_total{decision=\"deny\",policy=\"api-no-admin-post\",rule=\"0\",reason=\"denied_by_rule\"}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrule_proxy_http_requests_total{port=\"8080\",status=\"4xx\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrule_proxy_http_requests_total{port=\"8080\",status=\"2xx\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrule_proxy_http_request_duration_seconds_bucket{"),
        "{metrics}"
    );

    // Explain agrees with the proxy.
    let out =
        m.cp.ctl_ok(&[
            "explain", "--from", WEB, "--to", API, "--port", "8080", "--method", "POST", "--path",
            "/admin", "-o", "json",
        ])
        .unwrap();
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["allow"], false);
    assert_eq!(e["policy"], "api-no-admin-post");
    assert_eq!(e["rule"], 0);
    assert_eq!(e["reason"], "denied_by_rule");

    // A long-lived opaque connection, then a DENY for web on every port.
    let mut conn = TcpStream::connect(m.tcp_up).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    conn.read_exact(&mut b).unwrap_or_else(|e| {
        panic!(
            "opaque port refused before any DENY: {e}\napi:\n{}\nweb:\n{}",
            m.api.log(),
            m.web.log()
        )
    });
    let started = Instant::now();
    assert!(
        apply(
            &m.cp,
            &doc(
                "deny-web",
                "DENY",
                &format!("    - from: [{{spiffeId: {WEB}}}]\n")
            )
        )
        .status
        .success()
    );
    let refused = wait_for(Duration::from_secs(10), || {
        (request(m.http_up, "GET", "/public/x").0 == 403).then_some(started.elapsed())
    })
    .expect("DENY never took effect");
    println!(
        "policy propagation, apply to enforcement: {} ms",
        refused.as_millis()
    );
    // The established connection is closed by the new DENY.
    let mut rest = [0u8; 16];
    let r = conn.read(&mut rest);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "long-lived connection survived the DENY: {r:?}"
    );
    // New opaque connections are refused too.
    let mut c2 = TcpStream::connect(m.tcp_up).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c2.write_all(b"x");
    assert!(matches!(c2.read(&mut rest), Ok(0) | Err(_)));

    // Delete restores access.
    m.cp.ctl_ok(&["delete", "deny-web"]).unwrap();
    wait_for(Duration::from_secs(10), || {
        (request(m.http_up, "GET", "/public/x").0 == 200).then_some(())
    })
    .expect("access not restored after delete");

    // Audit: who and what.
    let audit: serde_json::Value =
        serde_json::from_str(&m.cp.ctl_ok(&["audit", "-o", "json"]).unwrap()).unwrap();
    let actions: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap(),
                a["target"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        actions.contains(&"policy.delete deny-web".to_string()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"policy.create api-public".to_string()),
        "{actions:?}"
    );
    assert!(
        audit[0]["who"].as_str().unwrap().starts_with("uid:"),
        "{audit}"
    );
}

#[test]
fn control_plane_outage_keeps_enforcing_and_restart_converges() {
    let mut m = mesh();
    assert!(
        apply(
            &m.cp,
            &doc(
                "deny-web",
                "DENY",
                &format!("    - from: [{{spiffeId: {WEB}}}]\n")
            )
        )
        .status
        .success()
    );
    wait_for(Duration::from_secs(10), || {
        (request(m.http_up, "GET", "/").0 == 403).then_some(())
    })
    .expect("deny applied");
    let version = m.api.identity().unwrap()["policy_version"]
        .as_u64()
        .unwrap();
    m.cp.kill();
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        assert_eq!(
            request(m.http_up, "GET", "/").0,
            403,
            "policy dropped while the control plane is down"
        );
    }
    m.cp.restart().unwrap();
    // Both proxies resynchronise and acknowledge the current version.
    let converged = wait_for(Duration::from_secs(30), || {
        let w: serde_json::Value =
            serde_json::from_str(&m.cp.ctl_ok(&["workloads", "-o", "json"]).ok()?).ok()?;
        let all = w.as_array()?;
        (all.len() == 2
            && all
                .iter()
                .all(|x| x["connected"] == true && x["policy_version"] == version))
        .then_some(())
    });
    assert!(converged.is_some(), "mesh did not converge: {}", m.cp.log());
    let (code, out) = {
        let o = m.cp.ctl(&["check"]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(request(m.http_up, "GET", "/").0, 403);
    drop(m.web);
}

#[test]
fn invalid_documents_are_refused_naming_document_field_and_reason() {
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: Bad_Name}\nspec: {selector: {spiffeId: \"spiffe://demo.local/x\"}, action: ALLOW}\n",
            "metadata.name",
        ),
        (
            "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {selector: {spiffeId: \"not-an-id\"}, action: ALLOW}\n",
            "spec.selector.spiffeId",
        ),
        (
            "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {selector: {spiffeId: \"spiffe://demo.local/x\"}, action: MAYBE}\n",
            "spec.action",
        ),
        (
            "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {selector: {spiffeId: \"spiffe://demo.local/x\"}, action: DENY, rules: [{to: {paths: [admin]}}]}\n",
            "spec.rules[0].to.paths[0]",
        ),
        (
            "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {selector: {spiffeId: \"spiffe://demo.local/x\"}, action: DENY, colour: red}\n",
            "colour",
        ),
    ];
    for (yaml, field) in cases {
        let out = apply(&cp, yaml);
        assert_eq!(out.status.code(), Some(1), "{yaml}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("InvalidArgument") && err.contains("document 0") && err.contains(field),
            "{yaml}\n{err}"
        );
    }
    // One bad document in a batch: nothing is applied.
    let good = "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: good}\nspec: {selector: {spiffeId: \"spiffe://demo.local/x\"}, action: DENY}\n";
    let out = apply(&cp, &format!("{good}---\n{}", cases[2].0));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("document 1"),
        "{out:?}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["list", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(list["version"], 0, "{list}");
    assert!(list["policies"].as_array().unwrap().is_empty());
    // validate is a dry run.
    let path = cp.dir.path().join("good.yaml");
    std::fs::write(&path, good).unwrap();
    assert!(
        cp.ctl(&["validate", "-f", path.to_str().unwrap()])
            .status
            .success()
    );
    let list: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["list", "-o", "json"]).unwrap()).unwrap();
    assert_eq!(list["version"], 0);
    // get of an unknown policy, delete of an unknown policy.
    assert_eq!(cp.ctl(&["get", "nope"]).status.code(), Some(1));
    assert_eq!(cp.ctl(&["delete", "nope"]).status.code(), Some(1));
}

/// `curl --http2-prior-knowledge`: (status, deny reason, body).
fn h2(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-X",
            method,
            "-D",
            "-",
            "--path-as-is",
        ])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let reason = head
        .lines()
        .find_map(|l| l.strip_prefix("x-ferrule-deny-reason: "))
        .unwrap_or("")
        .to_string();
    (code, reason, body.to_string())
}

#[test]
fn http2_requests_are_authorized_per_request_too() {
    let m = mesh();
    let (code, _, body) = h2(m.http_up, "GET", "/public/x");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("HTTP/2.0"),
        "the application saw HTTP/2: {body}"
    );
    // Apply from stdin, like `kubectl apply -f -`.
    let mut child = Command::new(bin_path("ferrulectl"))
        .args([
            "--socket",
            m.cp.admin_socket().to_str().unwrap(),
            "apply",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            doc_ports(
                "no-admin",
                "DENY",
                "[8080]",
                "    - to: {paths: [/admin]}\n",
            )
            .as_bytes(),
        )
        .unwrap();
    assert!(child.wait().unwrap().success());
    let denied = wait_for(Duration::from_secs(10), || {
        let (code, reason, _) = h2(m.http_up, "GET", "//admin/");
        (code == 403).then_some(reason)
    });
    assert_eq!(denied.as_deref(), Some("denied_by_rule"));
    assert_eq!(h2(m.http_up, "GET", "/public/x").0, 200);
    let (code, reason, _) = h2(m.http_up, "GET", "/admin%2f");
    assert_eq!((code, reason.as_str()), (403, "invalid_path"));
    drop(m.web);
}

#[test]
fn apply_reads_a_directory_of_documents() {
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    let dir = cp.dir.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        doc("alpha", "DENY", "    - from: [{authenticated: true}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yml"),
        doc("beta", "ALLOW", "    - from: [{authenticated: true}]\n"),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let out = cp
        .ctl_ok(&["apply", "-f", dir.to_str().unwrap(), "-o", "json"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["created"], serde_json::json!(["alpha", "beta"]), "{v}");
    let yaml = cp.ctl_ok(&["get", "alpha", "-o", "yaml"]).unwrap();
    assert!(
        yaml.contains("action: DENY") && yaml.contains("name: alpha"),
        "{yaml}"
    );
    let list = cp.ctl_ok(&["list"]).unwrap();
    assert!(
        list.contains("alpha") && list.contains("beta") && list.contains("policy version 1"),
        "{list}"
    );
}

#[test]
fn the_application_receives_exactly_the_authorized_normalised_path() {
    let m = mesh();
    // Dot segments and duplicate slashes are resolved before policy, and the application
    // sees that same path (with the query kept), never the raw one.
    let (code, _, body) = request(m.http_up, "GET", "/public/./a//b/../c?x=1");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("GET /public/a/c)"),
        "the app saw another path: {body}"
    );
    drop(m.web);
}

#[test]
fn a_workload_cannot_register_under_another_services_name() {
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    // web's identity claiming to be service "api".
    let p = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(WEB, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: api\ninbound:\n  listen: {}\n",
                lo(free_port())
            )),
            ..Default::default()
        },
    )
    .unwrap();
    let refused = wait_for(Duration::from_secs(15), || {
        p.log().contains("may only register service").then_some(())
    });
    assert!(refused.is_some(), "{}", p.log());
    assert_eq!(
        p.admin_get("/ready").unwrap().0,
        503,
        "must not become ready"
    );
    let w: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["workloads", "-o", "json"]).unwrap()).unwrap();
    assert!(w.as_array().unwrap().is_empty(), "nothing registered: {w}");
}
