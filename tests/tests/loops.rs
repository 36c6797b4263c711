//! Forwarding loops in explicit mode, with the real binaries on loopback. (Transparent
//! mode's loops, through the redirect rules, are in `transparent.rs` and
//! `intercept.rs`.)
//!
//! * A hop header naming one of the server proxy's own ports (its mesh port, its admin
//!   port) or any undeclared port is refused: the mesh cannot be used to reach the
//!   proxy itself or loop through it.
//! * Discovery pointing a client proxy at one of its *own* listeners (here api's mesh
//!   port is registered at the very address web's upstream listens on) must not make
//!   web dial itself over and over: the connection fails, the number of connections web
//!   opens stays bounded, and web keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ferrule_tests::apps::{AppServer, Behaviour};
use ferrule_tests::explicit::{API, WEB, mesh};
use ferrule_tests::mtls::{attempt_port, client_config, inbound_refusals};
use ferrule_tests::pki::{handle_for, obtain};
use ferrule_tests::process::{free_port, wait_for};
use ferrule_tests::{ControlPlane, CpOptions, Proxy, ProxyOptions};
use rustls::client::Resumption;

#[test]
fn hop_headers_naming_the_proxys_own_or_undeclared_ports_are_refused() {
    let m = mesh(Behaviour::Echo, "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let creds = rt.block_on(obtain(&m.cp, WEB)).unwrap();
    let handle = handle_for(&m.cp, None).unwrap();
    let cfg = client_config(
        &handle,
        API,
        ferrule_tests::mtls::ClientCert::new(&creds),
        &rustls::version::TLS13,
        Resumption::disabled(),
    );
    // Something listening on an undeclared port must see nothing.
    let undeclared = AppServer::start(Behaviour::Echo);
    let before = m.app.accepted();
    for (what, port) in [
        ("its own mesh port", m.api_inbound.port()),
        ("its admin port", m.api.admin.port()),
        ("an undeclared port", undeclared.addr.port()),
    ] {
        let got = rt.block_on(attempt_port(cfg.clone(), m.api_inbound, port, b"loop?"));
        assert!(got.echoed.is_empty(), "{what}: {got:?}");
    }
    assert_eq!(undeclared.accepted(), 0, "the undeclared port was reached");
    assert_eq!(m.app.accepted(), before);
    // Refused as port problems, and the declared port still works.
    let refused =
        inbound_refusals(&m.api, "undeclared_port") + inbound_refusals(&m.api, "port_mismatch");
    assert!(
        refused >= 3.0,
        "refusals not counted by reason:\n{}",
        m.api.log()
    );
    let ok = rt.block_on(attempt_port(cfg, m.api_inbound, 8080, b"fine"));
    assert_eq!(ok.echoed, b"fine");
}

/// Outbound connections `p` has refused so far, from its log (each looped dial shows up
/// as one: it can never complete its handshake).
fn outbound_refusals(p: &Proxy) -> usize {
    p.log()
        .lines()
        .filter(|l| l.contains("outbound connection refused"))
        .count()
}

#[test]
fn discovery_pointing_a_proxy_at_its_own_listener_does_not_loop() {
    own_listener_as_endpoint(false);
}

#[test]
fn discovery_pointing_a_proxy_at_its_own_listener_does_not_loop_pooled() {
    own_listener_as_endpoint(true);
}

/// Starts api so that discovery registers it at web's upstream address, and connects
/// through that upstream; `pool` selects the pooled hop (ferrule/2) or one mTLS
/// connection per application connection.
fn own_listener_as_endpoint(pool: bool) {
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    let app = AppServer::start(Behaviour::Echo);
    // api's listener moves to 127.0.0.2; discovery registers 127.0.0.1:<port> (the
    // address api connects to the control plane from), where web's upstream listens.
    let port = free_port();
    let api = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(API, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: api\ninbound:\n  listen: 127.0.0.2:{port}\n  ports:\n    - port: 8080\n      app: {}\n",
                app.addr
            )),
            ..Default::default()
        },
    )
    .unwrap();
    let upstream = SocketAddr::from(([127, 0, 0, 1], port));
    let web = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(WEB, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: web\ninbound:\n  listen: 127.0.0.1:{}\noutbound:\n  pool: {pool}\n  upstreams:\n    - listen: {upstream}\n      service: api\n      port: 8080\nlimits:\n  connect_timeout: 2s\n  handshake_timeout: 2s\n",
                free_port(),
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
    .unwrap_or_else(|| panic!("discovery did not converge: {}", web.log()));

    let mut c = TcpStream::connect(upstream).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = c.write_all(b"where does this go?");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.is_empty(), "a looped connection answered: {got:?}");
    assert_eq!(app.accepted(), 0);
    // The client's connection and at most the one web dialled to itself fail; a loop
    // would keep dialling (each new connection to the upstream dials again) and show
    // up here within milliseconds. Give it a moment to show.
    std::thread::sleep(Duration::from_secs(3));
    let named = wait_for(Duration::from_secs(5), || {
        web.log().contains("forwarding loop").then_some(())
    });
    assert!(
        named.is_some(),
        "the loop was not recognised:\n{}",
        web.log()
    );
    let refused = outbound_refusals(&web);
    assert!(
        refused <= 2,
        "web dialled itself {refused} times:\n{}",
        web.log()
    );
    assert!(
        matches!(web.admin_get("/ready"), Ok((200, _))),
        "web stopped serving"
    );
}
