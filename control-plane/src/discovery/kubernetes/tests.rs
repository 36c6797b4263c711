use std::time::Duration;

use super::*;
use crate::discovery::RegisterError;

mod target_ports;

fn pod(ns: &str, name: &str, sa: &str, ips: &[&str], created: &str) -> KubernetesPod {
    KubernetesPod {
        namespace: ns.into(),
        name: name.into(),
        spiffe_id: SpiffeId::new(format!("spiffe://td/ns/{ns}/sa/{sa}")).unwrap(),
        service: sa.into(),
        addresses: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        inbound_port: 15006,
        created: created.into(),
        labels: [("app".to_string(), sa.to_string())].into(),
        named_ports: BTreeMap::new(),
    }
}

fn reg(id: &str, service: &str, ip: &str, port: u16) -> Registration {
    Registration {
        spiffe_id: SpiffeId::new(id).unwrap(),
        service: service.into(),
        address: ip.parse().unwrap(),
        inbound_port: port,
        app_ports: vec![8080],
        proxy_version: "test".into(),
    }
}

/// (address, identity) of every published workload, sorted.
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

fn pair(ip: &str, id: &str) -> (String, String) {
    (ip.to_string(), id.to_string())
}

#[test]
fn every_pod_ip_maps_to_the_pod_identity_until_the_pod_goes() {
    let r = Registry::new(Duration::from_secs(60));
    let api = "spiffe://td/ns/prod/sa/api";
    let v0 = r.snapshot().version;
    assert!(r.upsert_kubernetes_pod(pod("prod", "api-1", "api", &["10.0.0.1", "fd00::1"], "t1")));
    assert_eq!(
        published(&r),
        vec![pair("10.0.0.1", api), pair("fd00::1", api)]
    );
    assert!(r.snapshot().version > v0);
    let w = &r.snapshot().workloads[0];
    assert_eq!((w.service.as_str(), w.inbound_port), ("api", 15006));
    assert!(w.app_ports.is_empty(), "any port");

    // The same pod again changes nothing, not even the version.
    let v1 = r.snapshot().version;
    assert!(!r.upsert_kubernetes_pod(pod("prod", "api-1", "api", &["10.0.0.1", "fd00::1"], "t1")));
    assert_eq!(r.snapshot().version, v1);

    // Losing an address (e.g. a restart of the sandbox with one family) drops it.
    assert!(r.upsert_kubernetes_pod(pod("prod", "api-1", "api", &["fd00::1"], "t1")));
    assert_eq!(published(&r), vec![pair("fd00::1", api)]);

    assert!(r.remove_kubernetes_pod("prod", "api-1"));
    assert!(published(&r).is_empty());
    assert!(!r.remove_kubernetes_pod("prod", "api-1"));
}

#[test]
fn a_proxy_cannot_register_an_address_a_pod_of_another_identity_owns() {
    let r = Registry::new(Duration::from_secs(60));
    r.upsert_kubernetes_pod(pod("prod", "api-1", "api", &["10.0.0.1"], "t1"));
    let err = r
        .register(
            reg("spiffe://td/ns/prod/sa/evil", "evil", "10.0.0.1", 15006),
            None,
        )
        .unwrap_err();
    match err {
        RegisterError::AddressTaken { holder, .. } => {
            assert!(holder.contains("Kubernetes pod prod/api-1"), "{holder}")
        }
        other => panic!("{other:?}"),
    }
    // Any port: the pod owns the address, not one port of it.
    assert!(
        r.register(
            reg("spiffe://td/ns/prod/sa/evil", "evil", "10.0.0.1", 15999),
            None
        )
        .is_err()
    );

    // Its own proxy registers fine, and the address is listed once, as registered.
    r.register(
        reg("spiffe://td/ns/prod/sa/api", "api", "10.0.0.1", 15006),
        None,
    )
    .unwrap();
    let snap = r.snapshot();
    assert_eq!(snap.workloads.len(), 1, "{:?}", snap.workloads);
    assert_eq!(snap.workloads[0].app_ports, vec![8080]);
}

#[test]
fn a_registration_conflicting_with_a_pod_is_hidden_while_the_pod_exists() {
    let r = Registry::new(Duration::from_secs(60));
    // Registered first (e.g. restored from the store, or before the pods were listed).
    r.register(
        reg("spiffe://td/ns/old/sa/gone", "gone", "10.0.0.7", 15006),
        None,
    )
    .unwrap();
    r.register(reg("spiffe://td/vm/db", "db", "192.168.1.5", 15006), None)
        .unwrap();
    r.replace_kubernetes_pods(vec![pod("prod", "web-1", "web", &["10.0.0.7"], "t1")]);
    assert_eq!(
        published(&r),
        vec![
            pair("10.0.0.7", "spiffe://td/ns/prod/sa/web"),
            pair("192.168.1.5", "spiffe://td/vm/db"),
        ],
        "the pod's identity wins its address; unrelated registrations stay"
    );
    r.remove_kubernetes_pod("prod", "web-1");
    assert_eq!(
        published(&r),
        vec![
            pair("10.0.0.7", "spiffe://td/ns/old/sa/gone"),
            pair("192.168.1.5", "spiffe://td/vm/db"),
        ]
    );
}

#[test]
fn a_relist_removes_pods_no_longer_listed() {
    let r = Registry::new(Duration::from_secs(60));
    r.replace_kubernetes_pods(vec![
        pod("a", "p1", "one", &["10.0.0.1"], "t1"),
        pod("a", "p2", "two", &["10.0.0.2"], "t1"),
    ]);
    let v = r.snapshot().version;
    assert!(!r.replace_kubernetes_pods(vec![
        pod("a", "p2", "two", &["10.0.0.2"], "t1"),
        pod("a", "p1", "one", &["10.0.0.1"], "t1"),
    ]));
    assert_eq!(r.snapshot().version, v, "same set in another order");
    assert!(r.replace_kubernetes_pods(vec![pod("a", "p2", "two", &["10.0.0.2"], "t1")]));
    assert_eq!(
        published(&r),
        vec![pair("10.0.0.2", "spiffe://td/ns/a/sa/two")]
    );
    assert_eq!(r.kubernetes_pods().len(), 1);
}

#[test]
fn the_newest_pod_owns_a_shared_ip() {
    let r = Registry::new(Duration::from_secs(60));
    let old = pod("a", "old", "one", &["10.0.0.9"], "2024-01-01T00:00:00Z");
    let new = pod("b", "new", "two", &["10.0.0.9"], "2024-01-02T00:00:00Z");
    // Whatever the order they arrive in.
    r.replace_kubernetes_pods(vec![new.clone(), old.clone()]);
    assert_eq!(
        published(&r),
        vec![pair("10.0.0.9", "spiffe://td/ns/b/sa/two")]
    );
    r.replace_kubernetes_pods(vec![]);
    r.upsert_kubernetes_pod(new);
    r.upsert_kubernetes_pod(old);
    assert_eq!(
        published(&r),
        vec![pair("10.0.0.9", "spiffe://td/ns/b/sa/two")]
    );
    // Once the new one is gone, the old one's claim stands again.
    r.remove_kubernetes_pod("b", "new");
    assert_eq!(
        published(&r),
        vec![pair("10.0.0.9", "spiffe://td/ns/a/sa/one")]
    );
}

#[tokio::test]
async fn the_view_is_incomplete_until_the_first_listing() {
    let r = std::sync::Arc::new(Registry::new(Duration::from_secs(60)));
    r.wait_complete().await;
    r.await_kubernetes();
    let waiter = tokio::spawn({
        let r = r.clone();
        async move { r.wait_complete().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    // A watch event before the first listing does not complete the view.
    r.upsert_kubernetes_pod(pod("a", "p", "s", &["10.0.0.1"], "t"));
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    r.replace_kubernetes_pods(vec![]);
    tokio::task::yield_now().await;
    assert!(
        !waiter.is_finished(),
        "Services not listed yet: a passthrough proxy could send plaintext to a ClusterIP"
    );
    r.replace_kubernetes_services(vec![]);
    waiter.await.unwrap();
}

fn svc(ns: &str, name: &str, ips: &[&str], selector: &[(&str, &str)]) -> KubernetesService {
    KubernetesService {
        namespace: ns.into(),
        name: name.into(),
        cluster_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        selector: selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ports: vec![80, 8080],
        target_ports: BTreeMap::new(),
    }
}

/// (address, port, identity, service) of every published registration.
fn published_ports(r: &Registry) -> Vec<(String, u16, String, String)> {
    let mut v: Vec<_> = r
        .snapshot()
        .workloads
        .iter()
        .map(|w| {
            (
                w.address.to_string(),
                w.inbound_port,
                w.spiffe_id.to_string(),
                w.service.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

fn cluster(r: &Registry, ip: &str) -> Vec<(u16, String, String)> {
    published_ports(r)
        .into_iter()
        .filter(|(a, ..)| a == ip)
        .map(|(_, p, id, s)| (p, id, s))
        .collect()
}

#[test]
fn selector_matching() {
    let s = svc("a", "api", &["10.96.0.1"], &[("app", "api")]);
    let mut p = pod("a", "api-1", "api", &["10.0.0.1"], "t");
    assert!(s.selects(&p));
    p.labels.insert("extra".into(), "x".into());
    assert!(s.selects(&p), "a selector is a subset of the labels");
    p.labels.insert("app".into(), "other".into());
    assert!(!s.selects(&p), "value differs");
    p.labels.clear();
    assert!(!s.selects(&p), "label missing");
    let other_ns = pod("b", "api-1", "api", &["10.0.0.2"], "t");
    assert!(
        !s.selects(&other_ns),
        "a Service selects in its namespace only"
    );
    let two = svc(
        "a",
        "api",
        &["10.96.0.1"],
        &[("app", "api"), ("tier", "be")],
    );
    let mut p = pod("a", "api-1", "api", &["10.0.0.1"], "t");
    assert!(!two.selects(&p));
    p.labels.insert("tier".into(), "be".into());
    assert!(two.selects(&p));
    let none = svc("a", "api", &["10.96.0.1"], &[]);
    assert!(!none.selects(&p), "no selector selects nothing");
}

#[test]
fn one_identity_rule() {
    let s = svc("a", "api", &["10.96.0.1"], &[("app", "x")]);
    let mut p1 = pod("a", "p1", "one", &["10.0.0.1"], "t");
    let mut p2 = pod("a", "p2", "one", &["10.0.0.2"], "t");
    let mut p3 = pod("a", "p3", "two", &["10.0.0.3"], "t");
    for p in [&mut p1, &mut p2, &mut p3] {
        p.labels.insert("app".into(), "x".into());
    }
    let one = SpiffeId::new("spiffe://td/ns/a/sa/one").unwrap();
    assert_eq!(backing(&s, [&p1, &p2]), Backing::One(one.clone()));
    assert!(matches!(backing(&s, [&p1, &p3]), Backing::Several(ids) if ids.len() == 2));
    assert_eq!(backing(&s, []), Backing::NoMeshedPods);
    p3.labels.clear();
    assert_eq!(
        backing(&s, [&p1, &p3]),
        Backing::One(one),
        "p3 not selected"
    );
    let no_sel = svc("a", "api", &["10.96.0.1"], &[]);
    assert_eq!(backing(&no_sel, [&p1]), Backing::NoSelector);
}

#[test]
fn cluster_ips_follow_the_pods_behind_them() {
    let r = Registry::new(Duration::from_secs(60));
    let one = "spiffe://td/ns/a/sa/one";
    r.replace_kubernetes_services(vec![svc(
        "a",
        "api",
        &["10.96.0.1", "fd00:96::1"],
        &[("app", "one")],
    )]);
    assert!(cluster(&r, "10.96.0.1").is_empty(), "no meshed pod yet");
    r.upsert_kubernetes_pod(pod("a", "p1", "one", &["10.0.0.1"], "t"));
    let expect = |ip: &str| {
        assert_eq!(
            cluster(&r, ip),
            vec![
                (80, one.to_string(), "api.a.svc".to_string()),
                (8080, one.to_string(), "api.a.svc".to_string())
            ],
            "{ip}"
        );
    };
    expect("10.96.0.1");
    expect("fd00:96::1");
    assert_eq!(r.kubernetes_service_counts(), (1, 0));

    // A second service account behind it: withdrawn, counted.
    let mut p2 = pod("a", "p2", "two", &["10.0.0.2"], "t");
    p2.labels.insert("app".into(), "one".into());
    r.upsert_kubernetes_pod(p2.clone());
    assert!(cluster(&r, "10.96.0.1").is_empty());
    assert!(cluster(&r, "fd00:96::1").is_empty());
    assert_eq!(r.kubernetes_service_counts(), (0, 1));
    // The pods themselves stay published.
    assert_eq!(
        published(&r),
        vec![
            pair("10.0.0.1", one),
            pair("10.0.0.2", "spiffe://td/ns/a/sa/two")
        ]
    );
    r.remove_kubernetes_pod("a", "p2");
    expect("10.96.0.1");

    // A pod in another namespace with matching labels does not count.
    r.upsert_kubernetes_pod(pod("b", "p3", "one", &["10.0.0.3"], "t"));
    expect("10.96.0.1");

    // Deleting the Service withdraws its ClusterIPs.
    r.remove_kubernetes_service("a", "api");
    assert!(cluster(&r, "10.96.0.1").is_empty());
    assert_eq!(r.kubernetes_service_counts(), (0, 0));
}

#[test]
fn a_cluster_ip_belongs_to_the_api_server() {
    let r = Registry::new(Duration::from_secs(60));
    let one = "spiffe://td/ns/a/sa/one";
    // A registration at an address that later becomes a ClusterIP is hidden.
    r.register(reg(one, "one", "10.96.0.9", 15006), None)
        .unwrap();
    r.replace_kubernetes_services(vec![
        svc("a", "api", &["10.96.0.1"], &[("app", "one")]),
        svc("a", "manual", &["10.96.0.9"], &[]),
    ]);
    assert!(
        cluster(&r, "10.96.0.9").is_empty(),
        "hidden, and no selector"
    );
    // Even with the identity the ClusterIP would publish, a proxy cannot register one.
    r.upsert_kubernetes_pod(pod("a", "p1", "one", &["10.0.0.1"], "t"));
    for ip in ["10.96.0.1", "10.96.0.9"] {
        let e = r.register(reg(one, "one", ip, 15006), None).unwrap_err();
        assert!(
            matches!(&e, RegisterError::AddressTaken { holder, .. } if holder.contains("ClusterIP")),
            "{e}"
        );
    }
    assert_eq!(cluster(&r, "10.96.0.1").len(), 2);
    // The Service gone, the old registration shows again.
    r.remove_kubernetes_service("a", "manual");
    assert_eq!(
        cluster(&r, "10.96.0.9"),
        vec![(15006, one.to_string(), "one".to_string())]
    );
}

#[test]
fn a_cluster_ip_two_services_claim_is_published_only_if_they_agree() {
    let r = Registry::new(Duration::from_secs(60));
    r.upsert_kubernetes_pod(pod("a", "p1", "one", &["10.0.0.1"], "t"));
    r.upsert_kubernetes_pod(pod("a", "p2", "two", &["10.0.0.2"], "t"));
    r.upsert_kubernetes_service(svc("a", "s1", &["10.96.0.1"], &[("app", "one")]));
    assert_eq!(cluster(&r, "10.96.0.1").len(), 2);
    r.upsert_kubernetes_service(svc("a", "s2", &["10.96.0.1"], &[("app", "two")]));
    assert!(cluster(&r, "10.96.0.1").is_empty());
}
