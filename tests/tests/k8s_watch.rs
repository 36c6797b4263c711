//! The control plane follows the Kubernetes API (`--k8s-watch`): meshed pods' IPs and
//! identities reach discovery, AuthorizationPolicy resources reach policy.
//!
//! There is no API server here; `ferrule_tests::kube_api` stands in for it over real
//! HTTPS, speaking the documented list/watch wire format (chunked JSON lines, bookmarks,
//! `ERROR` events, 410 Gone as an event or a status, dropped connections). The first
//! tests drive the watchers in process and look at the registry and the policy service;
//! the last ones run the real control-plane binary with real proxies and check the data
//! path.

use std::sync::Arc;
use std::time::Duration;

use ferrule_control_plane::discovery::Registry;
use ferrule_control_plane::kubernetes::client::{KubeClient, KubeClientConfig};
use ferrule_control_plane::kubernetes::watch::{self, WatchConfig};
use ferrule_control_plane::metrics::Metrics;
use ferrule_control_plane::policy::PolicyService;
use ferrule_control_plane::store::Store;
use ferrule_tests::kube_api::{Cut, FakeKube, PODS, POLICIES, pod, policy};
use serde_json::json;
use spiffe::TrustDomain;

/// The watchers in process, on a real registry and policy service.
struct Watchers {
    registry: Arc<Registry>,
    policies: Arc<PolicyService>,
    metrics: Metrics,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(fake: &FakeKube, page_size: u32) -> Watchers {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (_, token_file) = fake.write_files(dir.path());
    let client = KubeClient::new(KubeClientConfig {
        base_url: fake.url().parse().unwrap(),
        ca_pem: fake.ca_pem.clone().into_bytes(),
        token_file,
    })
    .unwrap();
    let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
    let policies =
        Arc::new(PolicyService::open(store, "allow-authenticated".parse().unwrap()).unwrap());
    let registry = Arc::new(Registry::new(Duration::from_secs(3600)));
    registry.await_kubernetes();
    policies.await_kubernetes();
    let mut config = WatchConfig::new(TrustDomain::new("td").unwrap());
    config.page_size = page_size;
    config.backoff = (Duration::from_millis(10), Duration::from_millis(200));
    let metrics = Metrics::new();
    let task = tokio::spawn(watch::run(
        client,
        config,
        registry.clone(),
        policies.clone(),
        metrics.clone(),
        std::future::pending(),
    ));
    Watchers {
        registry,
        policies,
        metrics,
        task,
        _dir: dir,
    }
}

/// Waits (up to a generous bound, as a failure guard) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// (address, identity) pairs in the registry's published view.
fn published(r: &Registry) -> Vec<(String, String)> {
    let mut v: Vec<_> = r
        .snapshot()
        .workloads
        .iter()
        .map(|w| (w.address.to_string(), w.spiffe_id.to_string()))
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(a, i)| (a.to_string(), i.to_string()))
        .collect();
    v.sort();
    v
}

/// The value of the metric line starting with `prefix` (labels included).
fn metric(m: &Metrics, prefix: &str) -> Option<f64> {
    m.encode()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const API: &str = "spiffe://td/ns/prod/sa/api";
const WEB: &str = "spiffe://td/ns/prod/sa/web";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_discovery_through_lists_watches_and_every_kind_of_break() {
    let fake = FakeKube::start(Some("test-token"));
    fake.apply(
        PODS,
        pod(
            "prod",
            "api-1",
            "api",
            "Running",
            &["10.1.0.5", "fd00:1::5"],
        ),
    );
    fake.apply(PODS, pod("prod", "web-1", "web", "Pending", &[]));
    let mut plain = pod("prod", "plain-1", "plain", "Running", &["10.1.0.9"]);
    plain["metadata"]["annotations"] = json!({});
    fake.apply(PODS, plain);
    // Pages of 2: the list takes two requests joined by a continue token.
    let w = start(&fake, 2);

    tokio::time::timeout(Duration::from_secs(20), w.registry.wait_complete())
        .await
        .expect("the first list completes the view");
    assert_eq!(
        published(&w.registry),
        pairs(&[("10.1.0.5", API), ("fd00:1::5", API)]),
        "every pod IP of the injected running pod; not the uninjected one, not the IP-less one"
    );
    assert!(
        fake.requests().iter().any(|r| r.contains("continue=c%2B")),
        "the continue token is escaped: {:?}",
        fake.requests()
    );
    eventually("a pod watch is open", || fake.open_watches(PODS) == 1).await;

    // Events.
    fake.apply(PODS, pod("prod", "web-1", "web", "Running", &["10.1.0.6"]));
    eventually("web-1 got its IP", || {
        published(&w.registry).contains(&("10.1.0.6".into(), WEB.into()))
    })
    .await;

    // A bookmark moves the resource version; a broken connection resumes from it,
    // without listing again.
    let bookmark = fake.bookmark();
    eventually("the bookmark is applied", || {
        metric(
            &w.metrics,
            "ferrule_cp_k8s_watch_events_total{resource=\"pods\",event=\"BOOKMARK\"}",
        ) == Some(1.0)
    })
    .await;
    fake.cut_watches(Cut::HalfLineThenReset);
    eventually("the watch is reopened", || fake.open_watches(PODS) == 1).await;
    assert_eq!(
        fake.watch_versions(PODS).last().unwrap(),
        &bookmark.to_string()
    );
    // A truncated last line is not applied either, and the watch resumes.
    let rv = fake.apply(PODS, pod("prod", "db-1", "db", "Running", &["10.1.0.7"]));
    eventually("db-1 in discovery", || published(&w.registry).len() == 4).await;
    fake.cut_watches(Cut::HalfLineThenClose);
    eventually("the watch is reopened", || {
        fake.open_watches(PODS) == 1 && fake.watch_versions(PODS).len() == 3
    })
    .await;
    assert_eq!(fake.watch_versions(PODS).last().unwrap(), &rv.to_string());
    // An ERROR other than 410: watch again from the same version.
    fake.error_event(500, "InternalError", "etcd leader changed");
    eventually("the watch is reopened", || {
        fake.open_watches(PODS) == 1 && fake.watch_versions(PODS).len() == 4
    })
    .await;
    assert_eq!(fake.watch_versions(PODS).last().unwrap(), &rv.to_string());
    // The server's timeout ends the watch cleanly.
    fake.end_watches();
    eventually("the watch is reopened", || {
        fake.open_watches(PODS) == 1 && fake.watch_versions(PODS).len() == 5
    })
    .await;
    assert_eq!(fake.lists(PODS), 1, "no relist for any of these");

    // api-1 is deleted while its event is lost to compaction; the watch gets 410
    // Expired as an ERROR event: list again, and the list drops api-1.
    fake.delete_unseen(PODS, "prod", "api-1");
    fake.expire();
    eventually("relisted without api-1", || {
        published(&w.registry)
            == pairs(&[("10.1.0.6", WEB), ("10.1.0.7", "spiffe://td/ns/prod/sa/db")])
    })
    .await;
    assert_eq!(fake.lists(PODS), 2);

    // The same with 410 as the HTTP status of the watch request.
    fake.set_gone_as_http(true);
    eventually("the watch is reopened", || fake.open_watches(PODS) == 1).await;
    fake.delete_unseen(PODS, "prod", "web-1");
    fake.cut_watches(Cut::Reset);
    eventually("relisted without web-1", || {
        published(&w.registry) == pairs(&[("10.1.0.7", "spiffe://td/ns/prod/sa/db")])
    })
    .await;
    assert_eq!(fake.lists(PODS), 3);

    // A deleted pod leaves; a completed one too.
    eventually("the watch is reopened", || fake.open_watches(PODS) == 1).await;
    fake.apply(PODS, pod("prod", "db-1", "db", "Succeeded", &["10.1.0.7"]));
    eventually("db-1 completed", || published(&w.registry).is_empty()).await;

    let restarts = |reason: &str| {
        metric(
            &w.metrics,
            &format!(
                "ferrule_cp_k8s_watch_restarts_total{{resource=\"pods\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(restarts("gone"), Some(2.0), "{}", w.metrics.encode());
    assert_eq!(restarts("error_event"), Some(1.0));
    assert_eq!(restarts("closed"), Some(1.0));
    assert_eq!(restarts("malformed_line"), Some(1.0));
    assert!(restarts("stream_error") >= Some(2.0));
    assert!(
        metric(
            &w.metrics,
            "ferrule_cp_k8s_last_sync_timestamp_seconds{resource=\"pods\"}"
        ) > Some(1e9)
    );
    assert_eq!(
        metric(&w.metrics, "ferrule_cp_k8s_objects{resource=\"pods\"}"),
        Some(0.0)
    );
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.contains("watch="))
            .all(|r| r.contains("allowWatchBookmarks=true") && r.contains("timeoutSeconds=")),
        "{:?}",
        fake.requests()
    );
}

fn spec(selector: &str, action: &str) -> serde_json::Value {
    json!({
        "selector": {"spiffeId": selector},
        "action": action,
        "rules": [{"from": [{"spiffeIdPrefix": "spiffe://td/ns/web/"}]}]
    })
}

fn in_force(p: &PolicyService) -> Vec<(String, String)> {
    let mut v: Vec<_> = p
        .current()
        .set
        .policies()
        .iter()
        .map(|p| (p.name().to_string(), p.action().to_string()))
        .collect();
    v.sort();
    v
}

fn named(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_resources_reach_the_policy_service() {
    let fake = FakeKube::start(None);
    fake.apply(
        POLICIES,
        policy(
            "prod",
            "allow-web",
            spec("spiffe://td/ns/prod/sa/api", "ALLOW"),
        ),
    );
    fake.apply(
        POLICIES,
        policy("prod", "typo", spec("spiffe://td/ns/prod/sa/api", "PERMIT")),
    );
    // A namespace cannot select another namespace's workloads.
    fake.apply(
        POLICIES,
        policy(
            "web",
            "reach-out",
            spec("spiffe://td/ns/prod/sa/api", "ALLOW"),
        ),
    );
    let w = start(&fake, 500);
    tokio::time::timeout(Duration::from_secs(20), w.policies.wait_complete())
        .await
        .expect("the first list completes the policy set");
    assert_eq!(
        in_force(&w.policies),
        named(&[("k8s/prod/allow-web", "ALLOW")])
    );
    eventually("both invalid resources are counted", || {
        metric(
            &w.metrics,
            "ferrule_cp_k8s_invalid_objects{resource=\"authorizationpolicies\"}",
        ) == Some(2.0)
    })
    .await;

    // An operator's policy lives alongside.
    w.policies
        .apply(
            "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: ops}\n\
             spec: {selector: {spiffeId: 'spiffe://td/*'}, action: DENY, rules: [{from: [{spiffeId: spiffe://td/x}]}]}\n",
            "alice",
        )
        .unwrap();

    eventually("a policy watch is open", || {
        fake.open_watches(POLICIES) == 1
    })
    .await;
    fake.apply(
        POLICIES,
        policy("prod", "deny-admin", spec("spiffe://td/ns/prod/*", "DENY")),
    );
    eventually("deny-admin in force", || in_force(&w.policies).len() == 3).await;
    // Edited into an invalid document: the DENY stays in force.
    fake.apply(
        POLICIES,
        policy("prod", "deny-admin", spec("spiffe://td/ns/prod/*", "Deny")),
    );
    eventually("the invalid edit is counted", || {
        metric(
            &w.metrics,
            "ferrule_cp_k8s_invalid_objects{resource=\"authorizationpolicies\"}",
        ) == Some(3.0)
    })
    .await;
    assert!(in_force(&w.policies).contains(&("k8s/prod/deny-admin".into(), "DENY".into())));
    fake.delete(POLICIES, "prod", "deny-admin");
    eventually("deny-admin deleted", || in_force(&w.policies).len() == 2).await;

    // Lost deletion, then 410: the relist reconciles; the operator's policy stays.
    fake.delete_unseen(POLICIES, "prod", "allow-web");
    fake.expire();
    eventually("relisted", || {
        in_force(&w.policies) == named(&[("ops", "DENY")])
    })
    .await;
    assert_eq!(fake.lists(POLICIES), 2);
}

// --- The real control plane and real proxies ----------------------------------------

mod e2e {
    use std::net::SocketAddr;
    use std::time::Duration;

    use ferrule_tests::apps::{AppServer, Behaviour, echo_roundtrip};
    use ferrule_tests::kube_api::{FakeKube, PODS, POLICIES, SERVICES, pod, policy, service};
    use ferrule_tests::process::{free_port, wait_for};
    use ferrule_tests::{ControlPlane, CpOptions, Proxy, ProxyOptions};
    use serde_json::json;

    const WEB: &str = "spiffe://demo.local/ns/default/sa/web";
    const API: &str = "spiffe://demo.local/ns/default/sa/api";

    /// A control plane following `fake`, with `--k8s-inbound-port inbound_port`.
    fn control_plane(fake: &FakeKube, dir: &std::path::Path, inbound_port: u16) -> ControlPlane {
        let (ca, token) = fake.write_files(dir);
        let path = |p: &std::path::Path| p.display().to_string();
        ControlPlane::start(CpOptions {
            extra_args: vec![
                "--k8s-watch".into(),
                "--k8s-api-url".into(),
                fake.url(),
                "--k8s-api-ca-file".into(),
                path(&ca),
                "--k8s-api-token-file".into(),
                path(&token.expect("token")),
                "--k8s-inbound-port".into(),
                inbound_port.to_string(),
            ],
            ..Default::default()
        })
        .expect("control plane")
    }

    /// `web` with an upstream to `api:8080`; returns it and the upstream address.
    fn web(cp: &ControlPlane) -> (Proxy, SocketAddr) {
        web_to(cp, "api", 8080)
    }

    /// `web` with an upstream to `service:port`.
    fn web_to(cp: &ControlPlane, service: &str, port: u16) -> (Proxy, SocketAddr) {
        let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let web = Proxy::start(
            cp,
            ProxyOptions {
                token: Some(cp.create_token(WEB, 1, "5m").unwrap()),
                config_yaml: Some(format!(
                    "service: web\ninbound:\n  listen: 127.0.0.1:{}\noutbound:\n  upstreams:\n    - listen: {upstream}\n      service: {service}\n      port: {port}\n",
                    free_port()
                )),
                ..Default::default()
            },
        )
        .unwrap();
        (web, upstream)
    }

    fn echoes(upstream: SocketAddr) -> bool {
        echo_roundtrip(upstream, b"through the mesh")
            .ok()
            .as_deref()
            == Some(&b"through the mesh"[..])
    }

    /// api's proxy listens on the pod IP 127.0.0.2 only. It registers itself at the
    /// address it dials the control plane from (127.0.0.1, where nothing listens), so web
    /// reaches it only through the pod IP the control plane learnt from the API server;
    /// deleting the pod takes that away again. An AuthorizationPolicy resource then
    /// denies web, and deleting it lets web through again.
    #[test]
    fn a_real_proxy_learns_pod_ips_and_policies_from_the_api() {
        let fake = FakeKube::start(Some("e2e-token"));
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cp = control_plane(&fake, dir.path(), port);
        let app = AppServer::start(Behaviour::Echo);
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
        let (web, upstream) = web(&cp);
        api.wait_ready(Duration::from_secs(20)).unwrap();
        web.wait_ready(Duration::from_secs(20)).unwrap();
        assert!(
            !echoes(upstream),
            "no pod yet: only api's registration, where nothing listens"
        );

        fake.apply(
            PODS,
            pod("default", "api-0", "api", "Running", &["127.0.0.2"]),
        );
        wait_for(Duration::from_secs(20), || echoes(upstream).then_some(())).unwrap_or_else(|| {
            panic!(
                "web never reached api through the pod IP\nweb:\n{}\ncp:\n{}",
                web.log(),
                cp.log()
            )
        });

        let workloads = cp.ctl_ok(&["workloads"]).unwrap();
        assert!(
            workloads.lines().any(|l| l.contains(API)
                && l.contains("127.0.0.2")
                && l.contains("pod default/api-0")),
            "{workloads}"
        );

        fake.delete(PODS, "default", "api-0");
        wait_for(Duration::from_secs(20), || {
            (!echoes(upstream)).then_some(())
        })
        .expect("the deleted pod's IP left web's discovery");

        fake.apply(
            PODS,
            pod("default", "api-0", "api", "Running", &["127.0.0.2"]),
        );
        wait_for(Duration::from_secs(20), || echoes(upstream).then_some(()))
            .expect("the pod is back");
        fake.apply(
            POLICIES,
            policy(
                "default",
                "deny-web",
                json!({"selector": {"spiffeId": API}, "action": "DENY",
                       "rules": [{"from": [{"spiffeId": WEB}]}]}),
            ),
        );
        wait_for(Duration::from_secs(20), || {
            (!echoes(upstream)).then_some(())
        })
        .unwrap_or_else(|| panic!("the DENY resource never took effect\napi:\n{}", api.log()));
        let listed = cp.ctl_ok(&["list"]).unwrap();
        assert!(listed.contains("k8s/default/deny-web"), "{listed}");
        // The first failed echo may be a connection cut by the policy change itself;
        // keep dialling until a denial names the resource's policy.
        wait_for(Duration::from_secs(20), || {
            let _ = echoes(upstream);
            api.log().contains("k8s/default/deny-web").then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "api's proxy names the resource's policy in its denial:\n{}",
                api.log()
            )
        });
        let audit = cp.ctl_ok(&["audit"]).unwrap();
        assert!(
            audit
                .lines()
                .any(|l| l.contains("kubernetes") && l.contains("k8s/default/deny-web")),
            "{audit}"
        );

        fake.delete(POLICIES, "default", "deny-web");
        wait_for(Duration::from_secs(20), || echoes(upstream).then_some(()))
            .expect("deleting the resource lifts the DENY");
    }

    /// What kube-proxy's DNAT (or its old userspace mode) does for a ClusterIP: every
    /// connection to `from` is carried to `to`, bytes unchanged.
    fn cluster_ip(from: SocketAddr, to: SocketAddr) {
        let listener = std::net::TcpListener::bind(from).expect("bind the ClusterIP");
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                for (mut a, mut b) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a, &mut b);
                        let _ = b.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
    }

    /// A Service's ClusterIP maps to the one identity of the meshed pods it selects, and
    /// a real proxy dials it over mTLS requiring that identity. Loopback has no
    /// kube-proxy: a forwarder carries the "ClusterIP" 127.0.0.3 on the Service port to
    /// api's proxy on the pod IP 127.0.0.2 (in a pod, kube-proxy translates the Service
    /// port to the `targetPort` and the pod's redirect sends that to the proxy). The
    /// Service port differs from its `targetPort`, the port api's proxy serves: web's
    /// hop must name the `targetPort` (naming the Service port, api's proxy refuses it).
    /// api's proxy registers itself at 127.0.0.1, and web's upstream is
    /// `api.default.svc` (the ClusterIP entry's name; a transparent client looks up the
    /// same entry by its original destination), so web reaches api only through the
    /// ClusterIP entry. A named `targetPort` resolves once the pods declare it. Pods of
    /// a second service account behind the Service withdraw it; a Service whose pods
    /// have another identity than the proxy behind the ClusterIP fails the handshake.
    #[test]
    fn a_real_proxy_reaches_a_service_through_its_cluster_ip() {
        let fake = FakeKube::start(Some("e2e-token"));
        let dir = tempfile::tempdir().unwrap();
        let (port, inbound) = (free_port(), free_port());
        let service_port = free_port();
        assert_ne!(service_port, port);
        let cp = control_plane(&fake, dir.path(), inbound);
        let app = AppServer::start(Behaviour::Echo);
        cluster_ip(
            SocketAddr::from(([127, 0, 0, 3], service_port)),
            SocketAddr::from(([127, 0, 0, 2], inbound)),
        );
        let api = Proxy::start(
            &cp,
            ProxyOptions {
                token: Some(cp.create_token(API, 1, "5m").unwrap()),
                config_yaml: Some(format!(
                    "service: api\ninbound:\n  listen: 127.0.0.2:{inbound}\n  ports:\n    - port: {port}\n      app: {}\n",
                    app.addr
                )),
                ..Default::default()
            },
        )
        .unwrap();
        let (web, upstream) = web_to(&cp, "api.default.svc", service_port);
        api.wait_ready(Duration::from_secs(20)).unwrap();
        web.wait_ready(Duration::from_secs(20)).unwrap();
        // The pod declares its container port as `http`.
        let with_http = |mut p: serde_json::Value| {
            p["spec"]["containers"][0]["ports"] =
                json!([{"name": "http", "containerPort": port, "protocol": "TCP"}]);
            p
        };
        // A pod of another service account, labelled so the Service selects it.
        let other_pod = || {
            let mut other = with_http(pod(
                "default",
                "other-0",
                "other",
                "Running",
                &["127.0.0.4"],
            ));
            other["metadata"]["labels"] = json!({"app": "api"});
            other
        };
        let api_pod = pod("default", "api-0", "api", "Running", &["127.0.0.2"]);
        fake.apply(PODS, api_pod.clone());
        assert!(!echoes(upstream), "no Service yet");

        // Service port → a numeric targetPort.
        let mut svc = service("default", "api", &["127.0.0.3"], "api", &[service_port]);
        svc["spec"]["ports"][0]["targetPort"] = json!(port);
        fake.apply(SERVICES, svc.clone());
        wait_for(Duration::from_secs(20), || echoes(upstream).then_some(())).unwrap_or_else(|| {
            panic!(
                "web never reached api through the ClusterIP\napi:\n{}\nweb:\n{}\ncp:\n{}",
                api.log(),
                web.log(),
                cp.log()
            )
        });

        // A named targetPort no pod declares: that Service port leaves discovery.
        svc["spec"]["ports"][0]["targetPort"] = json!("http");
        fake.apply(SERVICES, svc);
        wait_for(Duration::from_secs(20), || {
            (!echoes(upstream)).then_some(())
        })
        .unwrap_or_else(|| panic!("an unresolved targetPort stayed published:\n{}", cp.log()));
        assert!(
            cp.log().contains("no selected meshed pod declares"),
            "{}",
            cp.log()
        );
        // The pod declares it: the hop names the number it resolves to.
        fake.apply(PODS, with_http(api_pod));
        wait_for(Duration::from_secs(20), || echoes(upstream).then_some(())).unwrap_or_else(|| {
            panic!(
                "the named targetPort never resolved\nweb:\n{}\ncp:\n{}",
                web.log(),
                cp.log()
            )
        });

        // A pod of another service account behind the Service: no single identity to
        // expect, so the ClusterIP leaves discovery.
        fake.apply(PODS, other_pod());
        wait_for(Duration::from_secs(20), || {
            (!echoes(upstream)).then_some(())
        })
        .expect("the ClusterIP left discovery");
        assert!(
            cp.log().contains("several service accounts"),
            "{}",
            cp.log()
        );
        fake.delete(PODS, "default", "other-0");
        wait_for(Duration::from_secs(20), || echoes(upstream).then_some(()))
            .expect("one identity again");

        // Only the other service account behind it: web now requires `other`, which
        // api's proxy cannot prove.
        fake.delete(PODS, "default", "api-0");
        fake.apply(PODS, other_pod());
        wait_for(Duration::from_secs(20), || {
            (!echoes(upstream)).then_some(())
        })
        .expect("web refuses api's proxy behind a ClusterIP of other's");
        // Keep dialling: the first refusal may come from the moment between the two
        // changes, when no meshed pod backed the Service and it had no entry at all.
        wait_for(Duration::from_secs(20), || {
            let _ = echoes(upstream);
            web.log()
                .contains("spiffe://demo.local/ns/default/sa/other")
                .then_some(())
        })
        .unwrap_or_else(|| panic!("web expected other's identity:\n{}", web.log()));
    }

    /// While the API server cannot list, proxies get neither discovery nor policy (a view
    /// without the pods or the policy resources could open what they close); once it
    /// lists, they become ready.
    #[test]
    fn proxies_wait_for_the_first_listing() {
        let fake = FakeKube::start(Some("e2e-token"));
        fake.fail_lists(true);
        let dir = tempfile::tempdir().unwrap();
        let cp = control_plane(&fake, dir.path(), 15006);
        let (web, _) = web(&cp);
        wait_for(Duration::from_secs(20), || {
            let id = web.identity().ok()?;
            (id["spiffe_id"].as_str() == Some(WEB) && id["control_plane_connected"] == json!(true))
                .then_some(())
        })
        .unwrap_or_else(|| panic!("web never got its certificate and session: {}", web.log()));
        let (code, body) = web.admin_get("/ready").unwrap();
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("no discovery data") && body.contains("no policy"),
            "{body}"
        );
        assert!(fake.lists(PODS) >= 1 && fake.lists(POLICIES) >= 1);

        fake.fail_lists(false);
        web.wait_ready(Duration::from_secs(60)).unwrap();
    }
}
