//! A two-workload mesh in explicit mode on loopback, the shape most data-path tests need:
//! `web` (client side, one upstream port leading to `api:8080`) and `api` (server side,
//! forwarding port 8080 to a test app), both with the real binaries and one control plane.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::apps::{AppServer, Behaviour};
use crate::process::{free_port, wait_for};
use crate::{ControlPlane, CpOptions, Proxy, ProxyOptions};

/// The client workload's identity.
pub const WEB: &str = "spiffe://demo.local/ns/default/sa/web";
/// The server workload's identity.
pub const API: &str = "spiffe://demo.local/ns/default/sa/api";

/// How to build the mesh.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// The control plane's options.
    pub cp: CpOptions,
    /// What the app behind `api` does.
    pub behaviour: Behaviour,
    /// YAML appended to api's config (e.g. `limits:` or `tls:` sections).
    pub api_extra_yaml: String,
    /// The IP api's inbound listener binds. Discovery always registers the address the
    /// proxy connects to the control plane *from* (127.0.0.1) with the listener's port, so
    /// binding another loopback address leaves `127.0.0.1:<port>` free for an impostor.
    pub api_listen_ip: Ipv4Addr,
    /// Declare api's port 8080 `protocol: http` in front of this HTTP application (e.g.
    /// [`crate::apps::HttpApp`]) instead of the byte-level test app, so L7 is on.
    pub http_app: Option<SocketAddr>,
    /// RLIMIT_NOFILE for api's proxy ([`ProxyOptions::nofile`]).
    pub api_nofile: Option<u64>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            cp: CpOptions::default(),
            behaviour: Behaviour::Echo,
            api_extra_yaml: String::new(),
            api_listen_ip: Ipv4Addr::LOCALHOST,
            http_app: None,
            api_nofile: None,
        }
    }
}

/// A running two-workload mesh.
pub struct Mesh {
    /// Client-side proxy.
    pub web: Proxy,
    /// Server-side proxy.
    pub api: Proxy,
    /// The control plane.
    pub cp: ControlPlane,
    /// The app behind api.
    pub app: AppServer,
    /// The upstream port on web's proxy that leads to api:8080.
    pub upstream: SocketAddr,
    /// Where api's inbound (mesh) listener really listens.
    pub api_inbound: SocketAddr,
    /// Where discovery says api's mesh port is (127.0.0.1 and the listener's port).
    pub api_registered: SocketAddr,
}

/// Starts the mesh with default options and `api_extra_yaml`.
pub fn mesh(behaviour: Behaviour, api_extra_yaml: &str) -> Mesh {
    mesh_with(MeshOptions {
        behaviour,
        api_extra_yaml: api_extra_yaml.to_string(),
        ..Default::default()
    })
}

/// Starts the mesh and waits until both proxies are ready and web knows api.
pub fn mesh_with(opts: MeshOptions) -> Mesh {
    let cp = ControlPlane::start(opts.cp.clone()).expect("control plane");
    let app = AppServer::start(opts.behaviour);
    let port = free_port();
    let api_inbound = SocketAddr::from((opts.api_listen_ip, port));
    let api_registered = SocketAddr::from(([127, 0, 0, 1], port));
    let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port_8080 = match opts.http_app {
        Some(http) => format!("app: {http}\n      protocol: http"),
        None => format!("app: {}", app.addr),
    };
    let api = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(API, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: api\ninbound:\n  listen: {api_inbound}\n  ports:\n    - port: 8080\n      {port_8080}\n{}",
                opts.api_extra_yaml
            )),
            nofile: opts.api_nofile,
            ..Default::default()
        },
    )
    .unwrap();
    let web = Proxy::start(
        &cp,
        ProxyOptions {
            token: Some(cp.create_token(WEB, 1, "5m").unwrap()),
            config_yaml: Some(format!(
                "service: web\ninbound:\n  listen: 127.0.0.1:{}\noutbound:\n  upstreams:\n    - listen: {upstream}\n      service: api\n      port: 8080\n",
                free_port()
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
    Mesh {
        web,
        api,
        cp,
        app,
        upstream,
        api_inbound,
        api_registered,
    }
}
