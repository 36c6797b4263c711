use std::time::Duration;

use super::*;
use crate::discovery::RegisterError;

fn pod(ns: &str, name: &str, sa: &str, ips: &[&str], created: &str) -> KubernetesPod {
    KubernetesPod {
        namespace: ns.into(),
        name: name.into(),
        spiffe_id: SpiffeId::new(format!("spiffe://td/ns/{ns}/sa/{sa}")).unwrap(),
        service: sa.into(),
        addresses: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        inbound_port: 15006,
        created: created.into(),
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
    waiter.await.unwrap();
}
