//! The mTLS data path in explicit mode on loopback, with the real binaries:
//! app client → outbound proxy (upstream port) → mTLS → inbound proxy → app server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferrule_tests::apps::{Behaviour, echo_roundtrip, pattern, sha256_hex, sink_send};
use ferrule_tests::process::wait_for;
use ferrule_tests::{CpOptions, Proxy, ProxyOptions};

use ferrule_tests::explicit::{API, MeshOptions, WEB, mesh};

fn mesh_with(
    cp: CpOptions,
    behaviour: Behaviour,
    api_extra_yaml: &str,
) -> ferrule_tests::explicit::Mesh {
    ferrule_tests::explicit::mesh_with(MeshOptions {
        cp,
        behaviour,
        api_extra_yaml: api_extra_yaml.into(),
        ..Default::default()
    })
}

#[test]
fn echo_through_the_mesh_both_directions_with_half_close() {
    let m = mesh(Behaviour::Echo, "");
    let got = echo_roundtrip(m.upstream, b"hello through the mesh").unwrap();
    assert_eq!(got, b"hello through the mesh");
    // Zero bytes: connect, half-close, get EOF back.
    assert_eq!(echo_roundtrip(m.upstream, b"").unwrap(), b"");
    // One byte, one TLS record +- 1, 64 KiB +- 1.
    for n in [1usize, 16383, 16384, 16385, 65535, 65536, 65537, 1 << 20] {
        let data = pattern(n, n as u64);
        let got = echo_roundtrip(m.upstream, &data).unwrap();
        assert_eq!(got.len(), n, "length for {n}");
        assert!(got == data, "content for {n}");
    }
}

#[test]
fn large_transfer_is_byte_exact() {
    let m = mesh(Behaviour::Sink, "");
    let (expected, answer) = sink_send(m.upstream, 256 << 20, 42).unwrap();
    assert_eq!(answer, expected, "256 MiB client->server");
}

#[test]
fn server_speaks_first_and_large_download() {
    let m = mesh(Behaviour::Source(64 << 20), "");
    let mut c = TcpStream::connect(m.upstream).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 64 << 20);
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(64 << 20, 7)));
}

#[test]
fn many_concurrent_connections_are_byte_exact() {
    let m = mesh(Behaviour::Echo, "");
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let up = m.upstream;
            std::thread::spawn(move || {
                let data = pattern(2 << 20, i);
                let got = echo_roundtrip(up, &data).unwrap();
                assert!(got == data, "connection {i} corrupted");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn application_connections_share_one_pooled_mesh_connection() {
    let m = mesh(Behaviour::Echo, "");
    for i in 0..20 {
        let msg = format!("sequential {i}");
        assert_eq!(
            echo_roundtrip(m.upstream, msg.as_bytes()).unwrap(),
            msg.as_bytes()
        );
    }
    // Fewer than a pooled connection's stream limit (16), so one connection carries all.
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let up = m.upstream;
            std::thread::spawn(move || {
                let data = pattern(256 << 10, 100 + i);
                let got = echo_roundtrip(up, &data).unwrap();
                assert!(got == data, "connection {i} corrupted");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // 32 application connections, each authorized and counted on its own, over a single
    // mTLS handshake (ALPN ferrule/2) between the two proxies.
    let peer = format!("direction=\"inbound\",peer=\"{WEB}\",tls=\"mtls\"");
    let closed = wait_for(Duration::from_secs(5), || {
        let (_, t) = m.api.admin_get("/metrics").ok()?;
        let v = sample(
            &t,
            &format!("ferrule_proxy_connections_closed_total{{{peer}}}"),
        )?;
        (v >= 32.0).then_some(t)
    });
    let api = closed.unwrap_or_else(|| m.api.admin_get("/metrics").unwrap().1);
    assert_eq!(
        sample(
            &api,
            &format!("ferrule_proxy_connections_opened_total{{{peer}}}")
        ),
        Some(32.0),
        "{api}"
    );
    assert_eq!(
        sample(
            &api,
            "ferrule_proxy_mesh_handshakes_total{direction=\"inbound\",alpn=\"ferrule/2\"}"
        ),
        Some(1.0),
        "{api}"
    );
    assert_eq!(
        sample(
            &api,
            "ferrule_proxy_mesh_handshakes_total{direction=\"inbound\",alpn=\"ferrule/1\"}"
        ),
        None,
        "{api}"
    );
    let (_, web) = m.web.admin_get("/metrics").unwrap();
    assert_eq!(
        sample(
            &web,
            "ferrule_proxy_mesh_handshakes_total{direction=\"outbound\",alpn=\"ferrule/2\"}"
        ),
        Some(1.0),
        "{web}"
    );
}

#[test]
fn plaintext_and_garbage_to_the_mesh_port_never_reach_the_app() {
    let m = mesh(Behaviour::Echo, "limits:\n  handshake_timeout: 2s\n");
    let before = m.app.accepted();
    // Plaintext HTTP.
    let mut c = TcpStream::connect(m.api_inbound).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(buf.is_empty(), "plaintext got an answer: {buf:?}");
    // Garbage that looks like a TLS record.
    let mut c = TcpStream::connect(m.api_inbound).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    // A stalled handshake: half a ClientHello, then silence. Closed by the timeout.
    let mut c = TcpStream::connect(m.api_inbound).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "stalled handshake held too long"
    );
    assert_eq!(m.app.accepted(), before, "the app must see none of these");
    // And the mesh still works afterwards.
    assert_eq!(
        echo_roundtrip(m.upstream, b"still ok").unwrap(),
        b"still ok"
    );
}

#[test]
fn graceful_shutdown_drains_live_connections() {
    let mut m = mesh(Behaviour::Echo, "limits:\n  shutdown_grace: 5s\n");
    let mut c = TcpStream::connect(m.upstream).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    // SIGTERM the client-side proxy: readiness goes false, the live connection keeps working.
    let web_admin = m.web.admin;
    let pid_term = std::thread::spawn({
        let mut web = std::mem::replace(
            &mut m.web,
            Proxy::start(&m.cp, ProxyOptions::default()).unwrap(),
        );
        move || web.terminate(Duration::from_secs(10))
    });
    let unready = wait_for(Duration::from_secs(3), || {
        match ferrule_tests::http::get(web_admin, "/ready") {
            Ok((503, body)) if body.contains("shutting down") => Some(()),
            _ => None,
        }
    });
    assert!(
        unready.is_some(),
        "readiness did not turn false while draining"
    );
    c.write_all(b"pong").unwrap();
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let status = pid_term.join().unwrap().expect("proxy exited");
    assert!(status.success(), "{status:?}");
    // New connections to the drained proxy are refused.
    assert!(TcpStream::connect(m.upstream).is_err());
}

/// Value of the first sample line starting with `prefix` in a metrics scrape.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_traffic_failures_and_certificates() {
    let m = mesh(Behaviour::Echo, "");
    for _ in 0..3 {
        assert_eq!(echo_roundtrip(m.upstream, b"12345").unwrap(), b"12345");
    }
    // A plaintext client on the mesh port, refused.
    let mut c = TcpStream::connect(m.api_inbound).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = c.read_to_end(&mut Vec::new());

    // A TLS client without a certificate: a handshake failure, counted by reason.
    let _ = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &m.api_inbound.to_string(),
            "-alpn",
            "ferrule/1",
            "-tls1_3",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();

    let (code, api) = m.api.admin_get("/metrics").unwrap();
    assert_eq!(code, 200);
    let peer = format!("direction=\"inbound\",peer=\"{WEB}\",tls=\"mtls\"");
    let opened = wait_for(Duration::from_secs(5), || {
        let (_, t) = m.api.admin_get("/metrics").ok()?;
        let v = sample(
            &t,
            &format!("ferrule_proxy_connections_closed_total{{{peer}}}"),
        )?;
        (v >= 3.0).then_some(t)
    })
    .unwrap_or_else(|| panic!("closed connections not counted:\n{api}"));
    assert_eq!(
        sample(
            &opened,
            &format!("ferrule_proxy_received_bytes_total{{{peer}}}")
        ),
        Some(15.0),
        "{opened}"
    );
    assert_eq!(
        sample(
            &opened,
            &format!("ferrule_proxy_sent_bytes_total{{{peer}}}")
        ),
        Some(15.0),
        "{opened}"
    );
    assert!(
        sample(
            &opened,
            "ferrule_proxy_connection_failures_total{direction=\"inbound\",reason=\"plaintext_on_mesh_port\"}"
        ) >= Some(1.0),
        "{opened}"
    );
    assert!(
        sample(
            &opened,
            "ferrule_proxy_authz_decisions_total{decision=\"allow\",policy=\"mesh-default\""
        ) >= Some(3.0),
        "{opened}"
    );
    let handshake = wait_for(Duration::from_secs(5), || {
        let (_, t) = m.api.admin_get("/metrics").ok()?;
        sample(&t, "ferrule_proxy_connection_failures_total{direction=\"inbound\",reason=\"no_certificate\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(
        handshake.is_some(),
        "handshake failure not counted by reason:\n{}",
        m.api.admin_get("/metrics").unwrap().1
    );
    let expiry = sample(
        &opened,
        "ferrule_proxy_certificate_expiry_timestamp_seconds",
    )
    .unwrap();
    let ident = m.api.identity().unwrap();
    assert_eq!(expiry as u64, ident["not_after"].as_u64().unwrap());
    assert_eq!(
        sample(&opened, "ferrule_proxy_control_plane_connected"),
        Some(1.0)
    );
    assert!(
        sample(
            &opened,
            "ferrule_proxy_certificate_renewals_total{result=\"success\",reason=\"\"}"
        ) >= Some(1.0),
        "{opened}"
    );

    // The log level changes at run time (from loopback); a bad filter is refused.
    let (code, body) = ferrule_tests::http::put(m.api.admin, "/log-level", "debug").unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) =
        ferrule_tests::http::put(m.api.admin, "/log-level", "no=such=level").unwrap();
    assert_eq!(code, 400, "{body}");

    // Outbound side counts the mTLS connections to api.
    let (_, web) = m.web.admin_get("/metrics").unwrap();
    let out_peer = format!(
        "ferrule_proxy_connections_opened_total{{direction=\"outbound\",peer=\"{API}\",tls=\"mtls\"}}"
    );
    assert!(sample(&web, &out_peer) >= Some(3.0), "{web}");
}

#[test]
fn certificate_rotation_never_drops_a_live_connection() {
    let m = mesh_with(
        CpOptions {
            svid_ttl: "6s".into(),
            ..Default::default()
        },
        Behaviour::Echo,
        "",
    );
    let mut c = TcpStream::connect(m.upstream).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let first = (m.web.serial().unwrap(), m.api.serial().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let mut i = 0u32;
    while std::time::Instant::now() < deadline {
        let msg = format!("ping {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("live connection dropped after {i} pings: {e}"));
        assert_eq!(back, msg.as_bytes());
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both sides renewed (several times) while the connection stayed up.
    assert_ne!(m.web.serial().unwrap(), first.0);
    assert_ne!(m.api.serial().unwrap(), first.1);
    // New connections use the new certificates and still work.
    assert_eq!(echo_roundtrip(m.upstream, b"after").unwrap(), b"after");
}

#[test]
fn connection_cap_refuses_extra_connections_with_a_clear_log_line() {
    let m = mesh(Behaviour::Echo, "limits:\n  max_connections: 2\n");
    let open = |tag: &str| {
        let mut c = TcpStream::connect(m.upstream).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(tag.as_bytes()).unwrap();
        let mut b = vec![0u8; tag.len()];
        c.read_exact(&mut b).map(|_| c)
    };
    let a = open("one").expect("first connection");
    let _b = open("two").expect("second connection");
    // The third exceeds api's cap of 2: closed without reaching the app.
    assert!(open("three").is_err(), "third connection should be refused");
    let logged = wait_for(Duration::from_secs(5), || {
        m.api.log().contains("connection cap reached").then_some(())
    });
    assert!(logged.is_some(), "{}", m.api.log());
    // Capacity comes back when a connection ends.
    drop(a);
    let again = wait_for(Duration::from_secs(5), || open("four").ok());
    assert!(again.is_some(), "capacity not released");
}

/// Root rotation under load (prepare → activate → retire) with certificates renewing every
/// few seconds: every application connection opened meanwhile succeeds, both proxies end
/// on certificates from the new authority, and the old root leaves their bundles.
#[test]
fn root_rotation_under_load_fails_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let m = mesh_with(
        CpOptions {
            svid_ttl: "6s".into(),
            ..Default::default()
        },
        Behaviour::Echo,
        "",
    );
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&m.cp.ctl_ok(args).unwrap()).unwrap()
    };
    let old = json(&["ca", "status", "-o", "json"])["authorities"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = (m.web.serial().unwrap(), m.api.serial().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let load = std::thread::spawn({
        let (stop, ok, failed, up) = (stop.clone(), ok.clone(), failed.clone(), m.upstream);
        move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match echo_roundtrip(up, b"rotating") {
                    Ok(b) if b == b"rotating" => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        }
    });
    let roots = |p: &Proxy| p.identity().ok()?["bundle_roots"].as_u64();
    let new = json(&["ca", "prepare", "-o", "json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    for p in [&m.web, &m.api] {
        wait_for(Duration::from_secs(15), || (roots(p)? == 2).then_some(()))
            .unwrap_or_else(|| panic!("new root did not reach a proxy: {}", p.log()));
    }
    m.cp.ctl_ok(&["ca", "activate", &new]).unwrap();
    for p in [&m.web, &m.api] {
        wait_for(Duration::from_secs(20), || {
            let certs = json(&["certs", "-o", "json"]);
            let serial = p.serial()?;
            let c = certs
                .as_array()?
                .iter()
                .find(|c| c["serial"] == serial.as_str())?;
            (c["authority"] == new.as_str()).then_some(())
        })
        .unwrap_or_else(|| panic!("proxy never renewed from the new authority: {}", p.log()));
    }
    // Retire once nothing valid chains to the old root (6 s lifetimes).
    wait_for(Duration::from_secs(20), || {
        m.cp.ctl(&["ca", "retire", &old])
            .status
            .success()
            .then_some(())
    })
    .expect("the old authority could be retired");
    for p in [&m.web, &m.api] {
        wait_for(Duration::from_secs(15), || (roots(p)? == 1).then_some(()))
            .unwrap_or_else(|| panic!("old root not withdrawn from a proxy: {}", p.log()));
    }
    // A little more traffic on the rotated mesh, then stop.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
    assert!(ok > 50, "too little load to mean anything: {ok} requests");
    assert_ne!(m.web.serial().unwrap(), first.0);
    assert_ne!(m.api.serial().unwrap(), first.1);
}
