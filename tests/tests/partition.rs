//! A partitioned control plane: packets to and from it are silently dropped (no
//! resets, no refused connections: a dead network, not a dead process), with the real
//! binaries in network namespaces.
//!
//! ```text
//!   pod A (ns)                        cp (ns)                         pod B (ns)
//!   client ─► web :9001 ─── mTLS ─── bridge, control plane :8443 ─── api :15006 ─► app
//! ```
//!
//! While partitioned, the proxies notice (HTTP/2 keepalive on their control-plane
//! session), say so (`control_plane_connected 0`) and keep serving mesh traffic with
//! their certificates, discovery data and policy. A DENY applied meanwhile cannot reach
//! them; once the partition heals they reconnect by themselves and enforce it.
//!
//! Skips, printing why, when not root or without `ip netns` / `nft`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferrule_tests::apps::{AppServer, Behaviour, echo_roundtrip};
use ferrule_tests::explicit::{API, WEB};
use ferrule_tests::netns::{NetNs, bridge};
use ferrule_tests::process::{free_port, wait_for};
use ferrule_tests::{ControlPlane, CpOptions, Proxy, ProxyOptions};

const CP_PORT: u16 = 8443;

/// `ferrule_proxy_control_plane_connected` of `p`.
fn connected(p: &Proxy) -> Option<f64> {
    let (_, text) = p.admin_get("/metrics").ok()?;
    text.lines()
        .find(|l| l.starts_with("ferrule_proxy_control_plane_connected"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Echo through web's upstream, from inside pod A.
fn call(a: &NetNs, upstream: SocketAddr, msg: &[u8]) -> Vec<u8> {
    a.enter(|| echo_roundtrip(upstream, msg).unwrap_or_default())
        .unwrap()
}

const DENY_WEB: &str = "apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-web}
spec:
  selector: {spiffeId: spiffe://demo.local/ns/default/sa/api}
  action: DENY
  rules:
    - from: [{spiffeId: spiffe://demo.local/ns/default/sa/web}]
";

#[test]
fn a_partitioned_control_plane_leaves_the_mesh_serving_and_it_resyncs_after() {
    ferrule_tests::require_netns!("nft");
    let cp_ns = NetNs::new("cp").unwrap();
    let a_ns = NetNs::new("a").unwrap();
    let b_ns = NetNs::new("b").unwrap();
    let lan = bridge(&cp_ns, &[&a_ns, &b_ns], 7).unwrap();
    let mut cp = ControlPlane::start(CpOptions {
        netns: Some(cp_ns.name().to_string()),
        listen: Some(SocketAddr::new(lan.hub.v4.into(), CP_PORT)),
        ..Default::default()
    })
    .unwrap();
    let b_ip: IpAddr = lan.members[1].v4.into();
    let app = b_ns
        .enter(|| AppServer::start_on("127.0.0.1:8080".parse().unwrap(), Behaviour::Echo))
        .unwrap();
    let api = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(API, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: api\ninbound:\n  listen: {b_ip}:15006\n  ports:\n    - port: 8080\n      app: {}\n",
                app.addr
            )),
            netns: Some(b_ns.name().to_string()),
            ..Default::default()
        },
    )
    .unwrap();
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9001));
    let web = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(WEB, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: web\ninbound:\n  listen: 127.0.0.1:{}\noutbound:\n  upstreams:\n    - listen: {upstream}\n      service: api\n      port: 8080\n",
                free_port()
            )),
            netns: Some(a_ns.name().to_string()),
            ..Default::default()
        },
    )
    .unwrap();
    for p in [&api, &web] {
        p.wait_ready(Duration::from_secs(30)).unwrap();
    }
    wait_for(Duration::from_secs(15), || {
        (web.identity().ok()?["workloads_known"].as_u64()? >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("discovery did not converge:\n{}", web.log()));
    assert_eq!(call(&a_ns, upstream, b"before"), b"before");

    // Partition: the control plane's namespace drops its traffic, silently.
    // (Only on the bridge, so the control plane still reaches itself on loopback.)
    let br = &lan.hub.ifname;
    let rules = format!(
        "table inet partition {{\n chain in {{ type filter hook input priority 0; iifname \"{br}\" tcp dport {CP_PORT} drop; }}\n chain out {{ type filter hook output priority 0; oifname \"{br}\" tcp sport {CP_PORT} drop; }}\n}}\n"
    );
    cp_ns.run("nft", [rules]).unwrap();

    // Both proxies notice (keepalive), and the mesh keeps working meanwhile.
    for p in [&api, &web] {
        let noticed = wait_for(Duration::from_secs(90), || {
            (connected(p)? == 0.0).then_some(())
        });
        assert!(
            noticed.is_some(),
            "a dead control-plane session went unnoticed:\n{}",
            p.log()
        );
    }
    assert_eq!(call(&a_ns, upstream, b"partitioned"), b"partitioned");

    // A DENY applied during the partition cannot reach the proxies yet...
    let doc = cp.dir.path().join("deny-web.yaml");
    std::fs::write(&doc, DENY_WEB).unwrap();
    cp.ctl_ok(&["apply", "-f", doc.to_str().unwrap()]).unwrap();
    assert_eq!(
        call(&a_ns, upstream, b"still old policy"),
        b"still old policy"
    );

    // ...and the control plane restarts while partitioned (so no old connection can
    // simply resume). After the partition heals, both proxies reconnect by themselves
    // and enforce the new policy.
    cp.restart().unwrap();
    cp_ns
        .run("nft", ["delete", "table", "inet", "partition"])
        .unwrap();
    for p in [&api, &web] {
        let back = wait_for(Duration::from_secs(90), || {
            (connected(p)? == 1.0).then_some(())
        });
        assert!(
            back.is_some(),
            "no reconnection after the partition:\n{}",
            p.log()
        );
    }
    let enforced = wait_for(Duration::from_secs(30), || {
        call(&a_ns, upstream, b"denied?").is_empty().then_some(())
    });
    assert!(
        enforced.is_some(),
        "the DENY never reached api:\n{}",
        api.log()
    );
    drop(lan);
}
