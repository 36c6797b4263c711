//! Resource limits of the real proxy under abuse, in explicit mode with an `http` port
//! (so the inbound L7 path, hyper's HTTP/1.1 and HTTP/2 servers, is on):
//!
//! * HTTP/2 rapid reset (CVE-2023-44487) and CONTINUATION flood, from
//!   `tests/probes/h2_flood.py` (Python `h2`) over the mTLS hop with a real SVID: the
//!   proxy's HTTP/2 server sits behind the mesh listener, so an attacker with any mesh
//!   identity reaches it. (The client side, web's upstream port, is an opaque relay: it
//!   carries the same frames to the same server.) The same probes, anonymous, against the
//!   control plane's two HTTP/2 servers: the identity API (client certificates are
//!   optional there) and the injection webhook.
//! * slowloris (PyPI) against the plaintext HTTP listeners (the proxy's admin endpoint,
//!   the control plane's metrics endpoint, and web's upstream port, behind which api's
//!   L7 server reads the headers), and TLS handshakes that never complete against the
//!   mesh listener.
//! * Oversized request headers and URIs: a clean 431, the connection closed, a log line
//!   with the reason.
//! * A connection flood up to the descriptor limit (a small RLIMIT_NOFILE set with
//!   `prlimit`, so it is cheap).
//! * `PUT /log-level` on the admin endpoint from a non-loopback peer (network namespace,
//!   root only).
//!
//! After each: the proxy is alive, `/live` answers, resident memory grew by less than
//! [`RSS_GROWTH_LIMIT_KIB`] (a bound, not a timing), and a fresh legitimate request is
//! served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use ferrule_tests::apps::HttpApp;
use ferrule_tests::explicit::{Mesh, MeshOptions, WEB, mesh_with};
use ferrule_tests::netns::{NetNs, veth};
use ferrule_tests::pem::{PemIdentity, obtain_pem};
use ferrule_tests::process::wait_for;
use ferrule_tests::tools;
use ferrule_tests::{CpOptions, Proxy};
use serde_json::Value;

/// How much a proxy's resident set may grow across one attack.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

/// A two-proxy mesh whose api port 8080 is `protocol: http` in front of a real HTTP app,
/// plus an SVID for talking to api's mesh listener directly.
struct L7 {
    m: Mesh,
    _app: HttpApp,
    svid: PemIdentity,
    _dir: tempfile::TempDir,
}

fn l7_mesh(api_extra_yaml: &str, api_nofile: Option<u64>) -> L7 {
    let app = HttpApp::start("api");
    let m = mesh_with(MeshOptions {
        cp: CpOptions::default(),
        api_extra_yaml: api_extra_yaml.into(),
        http_app: Some(app.addr),
        api_nofile,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let svid = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(obtain_pem(&m.cp, WEB, dir.path(), "web"))
        .unwrap();
    L7 {
        m,
        _app: app,
        svid,
        _dir: dir,
    }
}

fn rss_kib(p: &Proxy) -> u64 {
    tools::vm_rss_kib(p.pid().expect("proxy running")).expect("VmRSS")
}

/// One HTTP/1.1 request; returns the status code (0 when no response came back) and the
/// whole response.
fn http1(addr: SocketAddr, head: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, "connect failed".into());
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    if s.write_all(head.as_bytes()).is_err() {
        return (0, "write failed".into());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http1(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"),
    )
}

/// After an attack: alive, `/live` answers, memory bounded, a fresh client is served
/// (through web, the mesh, and api's L7 path) within a few seconds.
fn assert_recovered(l7: &mut L7, rss_before: u64, what: &str) {
    let m = &mut l7.m;
    assert!(
        m.api.exited().is_none(),
        "[{what}] api's proxy exited:\n{}",
        m.api.plain_log()
    );
    assert_eq!(
        m.api.admin_get("/live").map(|r| r.0).ok(),
        Some(200),
        "[{what}] /live"
    );
    let after = rss_kib(&m.api);
    assert!(
        after < rss_before + RSS_GROWTH_LIMIT_KIB,
        "[{what}] api's resident memory grew from {rss_before} KiB to {after} KiB"
    );
    eprintln!("[{what}] api VmRSS {rss_before} KiB -> {after} KiB");
    let served = wait_for(Duration::from_secs(10), || {
        let (code, body) = get(m.upstream, "/fresh");
        (code == 200 && body.contains("GET /fresh")).then_some(())
    });
    assert!(
        served.is_some(),
        "[{what}] a fresh client was not served: {:?}\n{}",
        get(m.upstream, "/fresh"),
        m.api.plain_log()
    );
}

/// Waits (at most 5 s) until `p` logged an HTTP connection closed with `reason`.
fn assert_logged(p: &Proxy, reason: &str) {
    let needle = format!("reason=\"{reason}\"");
    assert!(
        p.logged(&needle, 1),
        "no {needle} in the log:\n{}",
        p.plain_log()
    );
}

/// Runs `tests/probes/h2_flood.py` with `args` against `addr`, `tls` adding how it
/// authenticates; returns its JSON report (`None` when the h2 module is missing and
/// missing tools are skipped).
fn h2_flood(addr: SocketAddr, args: &[&str], tls: impl FnOnce(&mut Command)) -> Option<Value> {
    let python = tools::python_with(&["h2"])?;
    let mut cmd = Command::new(python);
    cmd.arg(tools::probe("h2_flood.py"))
        .args(args)
        .arg("--addr")
        .arg(addr.to_string());
    tls(&mut cmd);
    let ran = tools::run(cmd, Duration::from_secs(120));
    assert!(
        !ran.timed_out && ran.output.status.success(),
        "h2_flood.py {args:?}: {ran:#?}"
    );
    let report: Value = serde_json::from_str(ran.stdout().trim())
        .unwrap_or_else(|e| panic!("h2_flood.py output ({e}): {ran:#?}"));
    eprintln!("h2_flood.py {addr} {args:?}: {report}");
    Some(report)
}

/// Runs the HTTP/2 probe against api's mesh listener with the SVID and the hop header
/// for port 8080; returns its JSON report.
fn h2_probe(l7: &L7, args: &[&str]) -> Option<Value> {
    h2_flood(l7.m.api_inbound, args, |cmd| {
        cmd.arg("--cert")
            .arg(&l7.svid.cert_file)
            .arg("--key")
            .arg(&l7.svid.key_file)
            .arg("--ca")
            .arg(l7.m.cp.bundle_file())
            .args(["--hop-port", "8080"]);
    })
}

// ---------------------------------------------------------------------------------------
// HTTP/2

#[test]
fn http2_rapid_reset_is_cut_off_and_the_proxy_keeps_serving() {
    let mut l7 = l7_mesh("", None);
    // Control: the probe's path works, so a cut-off below is the server's doing.
    let Some(ok) = h2_probe(&l7, &["request", "--path", "/control"]) else {
        return;
    };
    assert_eq!(ok["responses"], serde_json::json!(["200"]), "{ok}");
    let before = rss_kib(&l7.m.api);

    let report = h2_probe(&l7, &["rapid-reset", "--streams", "20000"]).unwrap();
    let sent = report["streams_sent"].as_u64().unwrap();
    // hyper/h2 answers a peer that keeps resetting streams before they are served with
    // GOAWAY ENHANCE_YOUR_CALM (0xb) and closes: the attacker is cut off long before its
    // 20,000 streams are through. On a loaded machine the GOAWAY can be lost to the reset
    // of the closing connection (as in the CONTINUATION test): then the close is the proof.
    let calm = report["goaway"]["error_code"] == 0xb;
    let closed = report["closed_by_server"] == true;
    assert!(
        calm || closed,
        "neither GOAWAY ENHANCE_YOUR_CALM nor a close: {report}"
    );
    assert!(sent < 20_000, "all 20,000 streams went through: {report}");
    assert_logged(&l7.m.api, "protocol_error");
    assert_recovered(&mut l7, before, "rapid reset");
}

#[test]
fn http2_continuation_flood_is_cut_off_and_the_proxy_keeps_serving() {
    let mut l7 = l7_mesh("", None);
    let Some(ok) = h2_probe(&l7, &["request", "--path", "/control"]) else {
        return;
    };
    assert_eq!(ok["responses"], serde_json::json!(["200"]), "{ok}");
    let before = rss_kib(&l7.m.api);

    let budget = 32u64 << 20;
    let report = h2_probe(&l7, &["continuation", "--bytes", &budget.to_string()]).unwrap();
    let sent = report["header_bytes_sent"].as_u64().unwrap();
    // The header list is capped at 64 KiB (`max_header_list_size`): the server must end
    // the connection long before 32 MiB of headers are in (what was sent includes what
    // the kernel buffered; the GOAWAY itself may be lost to the reset of a socket
    // closed with unread data).
    assert!(
        report["closed_by_server"] == true || !report["goaway"].is_null(),
        "the server kept accepting CONTINUATION frames: {report}"
    );
    assert!(
        sent < budget / 2,
        "most of the flood was accepted: {report}"
    );
    assert_logged(&l7.m.api, "protocol_error");
    assert_recovered(&mut l7, before, "CONTINUATION flood");
}

/// Runs the HTTP/2 probe over TLS with ALPN h2 and no client certificate (anyone who can
/// reach the port), against a control-plane listener; returns its JSON report.
fn h2_probe_anonymous(addr: SocketAddr, bundle: &std::path::Path, args: &[&str]) -> Option<Value> {
    h2_flood(addr, args, |cmd| {
        cmd.arg("--ca").arg(bundle).args(["--alpn", "h2"]);
    })
}

#[test]
fn control_plane_http2_servers_cut_off_rapid_reset_and_continuation_floods() {
    // The identity API (gRPC; client certificates optional, so reachable by anyone)
    // and the injection webhook (no client authentication) both speak HTTP/2 over TLS.
    let webhook: SocketAddr = format!("127.0.0.1:{}", ferrule_tests::process::free_port())
        .parse()
        .unwrap();
    let mut cp = ferrule_tests::ControlPlane::start(CpOptions {
        extra_args: vec![
            "--webhook-listen".into(),
            webhook.to_string(),
            "--inject-proxy-image".into(),
            "ferrule/proxy:limits".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    wait_for(Duration::from_secs(20), || TcpStream::connect(webhook).ok())
        .unwrap_or_else(|| panic!("webhook not listening:\n{}", cp.log()));
    let bundle = cp.bundle_file();
    let pid = cp.pid().unwrap();
    let before = tools::vm_rss_kib(pid).unwrap();
    for (name, addr, path) in [
        (
            "identity API",
            cp.addr,
            "/ferrule.identity.v1.Identity/Nothing",
        ),
        ("injection webhook", webhook, "/healthz"),
    ] {
        // Control: one request gets an answer (gRPC answers every path with 200 and a
        // grpc-status), so a cut-off below is the server's doing.
        let Some(ok) = h2_probe_anonymous(addr, &bundle, &["request", "--path", path]) else {
            return;
        };
        assert_eq!(ok["responses"], serde_json::json!(["200"]), "[{name}] {ok}");
        let report =
            h2_probe_anonymous(addr, &bundle, &["rapid-reset", "--streams", "20000"]).unwrap();
        assert!(
            report["closed_by_server"] == true || report["goaway"]["error_code"] == 0xb,
            "[{name}] rapid reset was not cut off: {report}"
        );
        assert!(
            report["streams_sent"].as_u64().unwrap() < 20_000,
            "[{name}] all 20,000 streams went through: {report}"
        );
        let budget = 32u64 << 20;
        let report = h2_probe_anonymous(
            addr,
            &bundle,
            &["continuation", "--bytes", &budget.to_string()],
        )
        .unwrap();
        assert!(
            report["closed_by_server"] == true || !report["goaway"].is_null(),
            "[{name}] the server kept accepting CONTINUATION frames: {report}"
        );
        assert!(
            report["header_bytes_sent"].as_u64().unwrap() < budget / 2,
            "[{name}] most of the flood was accepted: {report}"
        );
        // And it still serves.
        let again = h2_probe_anonymous(addr, &bundle, &["request", "--path", path]).unwrap();
        assert_eq!(
            again["responses"],
            serde_json::json!(["200"]),
            "[{name}] {again}"
        );
    }
    assert!(
        cp.exited().is_none(),
        "the control plane exited:\n{}",
        cp.log()
    );
    let after = tools::vm_rss_kib(pid).unwrap();
    assert!(
        after < before + RSS_GROWTH_LIMIT_KIB,
        "the control plane's resident memory grew from {before} KiB to {after} KiB"
    );
    assert_eq!(
        ferrule_tests::http::get(cp.metrics_addr, "/healthz")
            .map(|r| r.0)
            .ok(),
        Some(200)
    );
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 heads

#[test]
fn oversized_headers_and_uris_get_a_clean_431_and_a_closed_connection() {
    let mut l7 = l7_mesh("", None);
    let before = rss_kib(&l7.m.api);
    let big = "a".repeat(100 * 1024);
    let cases = [
        (
            "100 KiB header",
            format!("GET /x HTTP/1.1\r\nHost: api\r\nX-Big: {big}\r\n\r\n"),
        ),
        (
            "100 KiB URI",
            format!("GET /{big} HTTP/1.1\r\nHost: api\r\n\r\n"),
        ),
        (
            "10,000 small headers",
            format!(
                "GET /x HTTP/1.1\r\nHost: api\r\n{}\r\n",
                (0..10_000)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>()
            ),
        ),
    ];
    for (i, (case, head)) in cases.iter().enumerate() {
        // No `Connection: close`: the proxy must close by itself (read_to_end returns).
        let (code, text) = http1(l7.m.upstream, head);
        assert_eq!(code, 431, "[{case}] {}", text.lines().next().unwrap_or(""));
        assert!(
            l7.m.api.logged("reason=\"header_too_large\"", i + 1),
            "[{case}] no log line:\n{}",
            l7.m.api.plain_log()
        );
    }
    // The same over HTTP/2: a 100 KiB header against the 64 KiB header-list limit.
    if let Some(report) = h2_probe(&l7, &["request", "--extra-header-bytes", "102400"]) {
        assert_eq!(report["responses"], serde_json::json!(["431"]), "{report}");
    }
    // The demo app numbers its connections: after `HttpApp::start`'s readiness check
    // (number 1) this is the first, so none of the oversized requests reached it.
    let (code, body) = get(l7.m.upstream, "/first");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("(request 2,"),
        "the app saw traffic before: {body}"
    );
    assert_recovered(&mut l7, before, "oversized heads");
}

// ---------------------------------------------------------------------------------------
// Handshakes and descriptors

/// The first flight of a real mesh client: a rustls ClientHello offering ALPN ferrule/1
/// and the policy's suites and groups.
fn client_hello() -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(ferrule_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"ferrule/1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("ferrule.invalid").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Opens `n` connections to `addr` that each send `first` and then nothing; returns
/// the ones the server accepted (it may refuse some at once).
fn stalled(addr: SocketAddr, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            continue;
        };
        if s.write_all(first).is_ok() {
            conns.push(s);
        }
    }
    conns
}

/// Reads from `s` for at most `wait`: how many bytes the server sent, and whether it
/// closed the connection (EOF or reset).
fn observe(s: &mut TcpStream, wait: Duration) -> (usize, bool) {
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0u8; 16 * 1024];
    let mut got = 0;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false);
            }
            Err(_) => return (got, true),
        }
    }
}

#[test]
fn stalled_tls_handshakes_time_out_and_are_capped() {
    // A 5 s handshake deadline and at most 8 handshakes in progress.
    let mut l7 = l7_mesh(
        "limits:\n  handshake_timeout: 5s\n  max_handshakes: 8\n",
        None,
    );
    let before = rss_kib(&l7.m.api);
    let hello = client_hello();

    // Ten ClientHellos that never finish the handshake. Eight get the server's first
    // flight and are then held, at most until the deadline; two find the cap full and
    // are closed at once, without a byte.
    let mut conns = stalled(l7.m.api_inbound, 10, &hello);
    assert_eq!(conns.len(), 10);
    // The server answers at once; look well within the deadline.
    std::thread::sleep(Duration::from_millis(500));
    let first: Vec<(usize, bool)> = conns
        .iter_mut()
        .map(|s| observe(s, Duration::from_millis(100)))
        .collect();
    let refused = first
        .iter()
        .filter(|(n, closed)| *n == 0 && *closed)
        .count();
    let held = first
        .iter()
        .filter(|(n, closed)| *n > 0 && !*closed)
        .count();
    assert_eq!(
        (held, refused),
        (8, 2),
        "(bytes, closed) per connection: {first:?}"
    );
    for (s, (_, closed)) in conns.iter_mut().zip(&first) {
        if !closed {
            assert!(
                observe(s, Duration::from_secs(15)).1,
                "a stalled handshake outlived its deadline"
            );
        }
    }
    // A partial ClientHello (a record header and nothing else) is given up on after
    // the detection timeout (1 s).
    let mut partial = stalled(l7.m.api_inbound, 1, &hello[..5]);
    assert_eq!(observe(&mut partial[0], Duration::from_secs(10)), (0, true));

    let api = l7.m.api.plain_log();
    assert!(
        api.matches("reason=\"timeout\"").count() >= 8,
        "stalled handshakes not logged as timeouts:\n{api}"
    );
    assert!(
        api.matches("reason=\"handshake_cap\"").count() >= 2,
        "refusals beyond the handshake cap not logged:\n{api}"
    );
    assert_recovered(&mut l7, before, "stalled handshakes");
}

#[test]
fn a_connection_flood_up_to_the_descriptor_limit_leaves_the_proxy_serving() {
    // api's proxy gets 256 descriptors; the flood is 600 connections that each send a
    // ClientHello and stall (held for the 10 s handshake deadline).
    let mut l7 = l7_mesh("", Some(256));
    let before = rss_kib(&l7.m.api);
    let flood = stalled(l7.m.api_inbound, 600, &client_hello());
    assert!(!flood.is_empty());
    // The proxy stays alive and its admin endpoint answers throughout: the connection
    // cap keeps descriptors in reserve instead of running into EMFILE.
    assert!(
        l7.m.api.exited().is_none(),
        "api exited:\n{}",
        l7.m.api.plain_log()
    );
    assert_eq!(
        l7.m.api.admin_get("/live").map(|r| r.0).ok(),
        Some(200),
        "/live during the flood:\n{}",
        l7.m.api.plain_log()
    );
    let api = l7.m.api.plain_log();
    assert!(
        api.contains("connection cap reached"),
        "the flood never reached the connection cap:\n{api}"
    );
    assert!(
        !api.contains("Too many open files"),
        "the proxy ran out of descriptors:\n{api}"
    );
    // The flood goes away; a fresh client is served promptly.
    drop(flood);
    assert_recovered(&mut l7, before, "descriptor flood");
}

// ---------------------------------------------------------------------------------------
// Slow clients

/// A slow-header client: a request line, then one header line a second, never the end
/// of the head. Returns how long the server let it go on (`None`: still open at 40 s).
fn slow_head(addr: SocketAddr) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(40) {
        match s.read(&mut buf) {
            // Closed, or answered (e.g. 408) and about to close: the server gave up.
            Ok(_) => return Some(started.elapsed()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
        if s.write_all(b"X-Slow: 1\r\n").is_err() {
            return Some(started.elapsed());
        }
    }
    None
}

#[test]
fn slow_header_clients_are_timed_out_on_every_plaintext_http_listener() {
    let Some(slowloris) = tools::venv_tool("slowloris") else {
        return;
    };
    let mut l7 = l7_mesh("", None);
    let before = rss_kib(&l7.m.api);
    let targets = [
        ("api's admin endpoint", l7.m.api.admin),
        ("the control plane's metrics endpoint", l7.m.cp.metrics_addr),
        // web relays the bytes; api's L7 server reads the head.
        ("api's L7 server through web's upstream", l7.m.upstream),
    ];
    // The PyPI tool: 100 slow sockets per listener, a header line a second, replacing
    // the sockets the server closes.
    let attacks: Vec<_> = targets
        .iter()
        .map(|(_, addr)| {
            let mut cmd = Command::new(&slowloris);
            cmd.arg(addr.ip().to_string()).args([
                "-p",
                &addr.port().to_string(),
                "-s",
                "100",
                "--sleeptime",
                "1",
            ]);
            std::thread::spawn(move || tools::run(cmd, Duration::from_secs(16)))
        })
        .collect();
    // And one slow client of our own per listener, to see each one closed.
    let probes: Vec<_> = targets
        .iter()
        .map(|(_, addr)| {
            let addr = *addr;
            std::thread::spawn(move || slow_head(addr))
        })
        .collect();
    // Under the attack, the admin and health endpoints still answer.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(l7.m.api.admin_get("/live").map(|r| r.0).ok(), Some(200));
    assert_eq!(
        ferrule_tests::http::get(l7.m.cp.metrics_addr, "/healthz")
            .map(|r| r.0)
            .ok(),
        Some(200)
    );
    for ((name, _), probe) in targets.iter().zip(probes) {
        let lasted = probe.join().unwrap();
        assert!(
            lasted.is_some(),
            "{name} kept a slow-header client for 40 s"
        );
        eprintln!("{name}: slow client closed after {lasted:?}");
    }
    for ((name, _), attack) in targets.iter().zip(attacks) {
        let ran = attack.join().unwrap();
        let out = ran.stderr();
        assert!(
            out.contains("Socket count: 100"),
            "slowloris did not get its sockets open against {name}: {out}"
        );
        // slowloris logs "Creating N new sockets..." only to replace sockets the
        // server closed.
        assert!(
            out.contains("new sockets"),
            "{name} never closed a slowloris socket: {out}"
        );
    }
    assert_recovered(&mut l7, before, "slowloris");
}

// ---------------------------------------------------------------------------------------
// Admin endpoint

/// `PUT /log-level` from `from` to `to`: the status code (0 when nothing came back).
fn put_log_level(from: &NetNs, to: SocketAddr) -> u16 {
    from.enter(|| ferrule_tests::http::put(to, "/log-level", "info,ferrule_proxy=debug"))
        .ok()
        .and_then(|r| r.ok())
        .map_or(0, |r| r.0)
}

#[test]
fn log_level_changes_are_refused_from_non_loopback_peers() {
    ferrule_tests::require_netns!();
    // A "pod" namespace running the control plane and a proxy whose admin endpoint
    // listens on every address (dual-stack), and a "peer" namespace joined to it by a
    // veth pair.
    let pod = NetNs::new("admin-pod").unwrap();
    let peer = NetNs::new("admin-peer").unwrap();
    let link = veth(&pod, &peer, 41).unwrap();
    let cp = ferrule_tests::ControlPlane::start(CpOptions {
        netns: Some(pod.name().to_string()),
        ..Default::default()
    })
    .unwrap();
    let proxy = Proxy::start(
        &cp,
        ferrule_tests::ProxyOptions {
            token: Some(cp.create_token(WEB, 1, "5m").unwrap()),
            netns: Some(pod.name().to_string()),
            admin_listen: Some("[::]:15000".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let admin = |ip: std::net::IpAddr| SocketAddr::new(ip, 15000);
    wait_for(Duration::from_secs(10), || {
        pod.enter(|| ferrule_tests::http::get(admin([127, 0, 0, 1].into()), "/live"))
            .ok()?
            .ok()
    })
    .unwrap_or_else(|| panic!("admin endpoint not up:\n{}", proxy.plain_log()));

    // (from, to, expected): loopback in either family is accepted (IPv4 arrives as
    // ::ffff:127.0.0.1 on the dual-stack socket); the pod's own veth addresses and
    // another namespace are not, even though reads are.
    let cases = [
        ("pod, 127.0.0.1", &pod, admin([127, 0, 0, 1].into()), 200),
        (
            "pod, ::1",
            &pod,
            admin(std::net::Ipv6Addr::LOCALHOST.into()),
            200,
        ),
        ("pod, own veth IPv4", &pod, admin(link.a.v4.into()), 403),
        ("pod, own veth IPv6", &pod, admin(link.a.v6.into()), 403),
        ("peer namespace, IPv4", &peer, admin(link.a.v4.into()), 403),
        ("peer namespace, IPv6", &peer, admin(link.a.v6.into()), 403),
    ];
    for (case, from, to, want) in cases {
        assert_eq!(
            put_log_level(from, to),
            want,
            "[{case}]\n{}",
            proxy.plain_log()
        );
    }
    // Reading stays possible from the network (metrics scrapers, probes).
    let live = peer
        .enter(|| ferrule_tests::http::get(admin(link.a.v4.into()), "/live"))
        .unwrap()
        .map(|r| r.0)
        .ok();
    assert_eq!(live, Some(200));
}
