//! Service ports whose `targetPort` differs from `port`: which number the mesh hop names
//! (numeric, named and agreed on, named and disagreed on), and what discovery publishes.

use super::*;
use crate::discovery::kubernetes::services::target_port;
use crate::kubernetes::watch::{Pod, meshed_pod};

/// A pod of service account `one` (label app=one) declaring `named` container ports.
fn pod_with(name: &str, ip: &str, named: &[(&str, u16)]) -> KubernetesPod {
    let mut p = pod("a", name, "one", &[ip], "t");
    p.named_ports = named.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    p
}

/// Service `api` at 10.96.0.1 selecting app=one, with ports 80 and 8080 mapped by
/// `targets`.
fn api(targets: &[(u16, TargetPort)]) -> KubernetesService {
    let mut s = svc("a", "api", &["10.96.0.1"], &[("app", "one")]);
    s.target_ports = targets.iter().cloned().collect();
    s
}

fn name(n: &str) -> TargetPort {
    TargetPort::Name(n.into())
}

/// The published hop ports, as ("ip:port", hop).
fn hops(r: &Registry) -> Vec<(String, u16)> {
    r.snapshot()
        .hop_ports
        .iter()
        .map(|(a, p)| (a.to_string(), *p))
        .collect()
}

fn ports_at(r: &Registry, ip: &str) -> Vec<u16> {
    cluster(r, ip).into_iter().map(|(p, ..)| p).collect()
}

#[test]
fn numeric_target_port() {
    let s = api(&[(80, TargetPort::Number(8081))]);
    let p = pod_with("p1", "10.0.0.1", &[]);
    assert_eq!(target_port(&s, 80, [&p]), Ok(8081));
    assert_eq!(
        target_port(&s, 8080, [&p]),
        Ok(8080),
        "no mapping: the port"
    );
    assert_eq!(
        target_port(&s, 80, []),
        Ok(8081),
        "a number needs no pod to resolve"
    );

    let r = Registry::new(Duration::from_secs(60));
    r.replace_kubernetes_services(vec![s]);
    r.upsert_kubernetes_pod(p);
    assert_eq!(ports_at(&r, "10.96.0.1"), [80, 8080]);
    assert_eq!(hops(&r), [("10.96.0.1:80".to_string(), 8081)]);
    assert_eq!(r.kubernetes_service_counts(), (1, 0));
    // On the wire: the Service port's workload carries it, the other does not.
    let pb = crate::mesh_api::discovery_pb(&r.snapshot());
    let at = |port: u32| {
        pb.workloads
            .iter()
            .find(|w| w.addresses == ["10.96.0.1"] && w.inbound_port == port)
            .map(|w| w.target_ports.clone())
            .unwrap()
    };
    assert_eq!(at(80), [(80, 8081)].into());
    assert!(at(8080).is_empty());
}

#[test]
fn named_target_port_the_pods_agree_on() {
    let s = api(&[(80, name("http"))]);
    let p1 = pod_with("p1", "10.0.0.1", &[("http", 9000), ("admin", 9901)]);
    let p2 = pod_with("p2", "10.0.0.2", &[("http", 9000)]);
    let bare = pod_with("p3", "10.0.0.3", &[]);
    assert_eq!(target_port(&s, 80, [&p1, &p2]), Ok(9000));
    assert_eq!(
        target_port(&s, 80, [&p1, &bare]),
        Ok(9000),
        "a pod without the name is no backend of this port"
    );
    let mut other = pod_with("p4", "10.0.0.4", &[("http", 7000)]);
    other.labels.clear();
    assert_eq!(
        target_port(&s, 80, [&p1, &other]),
        Ok(9000),
        "unselected pods do not count"
    );

    let r = Registry::new(Duration::from_secs(60));
    r.replace_kubernetes_services(vec![s]);
    r.upsert_kubernetes_pod(p1);
    r.upsert_kubernetes_pod(p2);
    assert_eq!(hops(&r), [("10.96.0.1:80".to_string(), 9000)]);
    assert_eq!(ports_at(&r, "10.96.0.1"), [80, 8080]);
}

#[test]
fn named_target_port_the_pods_disagree_on_is_not_published() {
    let s = api(&[(80, name("http"))]);
    let p1 = pod_with("p1", "10.0.0.1", &[("http", 9000)]);
    let p2 = pod_with("p2", "10.0.0.2", &[("http", 9001)]);
    assert_eq!(
        target_port(&s, 80, [&p1, &p2]),
        Err(TargetPortError::Disagree {
            name: "http".into(),
            numbers: vec![9000, 9001]
        })
    );
    assert_eq!(
        target_port(&s, 80, [&pod_with("p3", "10.0.0.3", &[])]),
        Err(TargetPortError::Unresolved("http".into()))
    );

    let r = Registry::new(Duration::from_secs(60));
    r.replace_kubernetes_services(vec![s]);
    r.upsert_kubernetes_pod(p1);
    assert_eq!(hops(&r), [("10.96.0.1:80".to_string(), 9000)]);
    // A rollout brings a pod declaring another number: port 80 is withdrawn (the hop
    // would name the wrong port for one of them), 8080 stays, the Service is counted.
    r.upsert_kubernetes_pod(p2);
    assert_eq!(ports_at(&r, "10.96.0.1"), [8080]);
    assert!(hops(&r).is_empty());
    assert_eq!(r.kubernetes_service_counts(), (1, 1));
    // The old pod gone, they agree again.
    r.remove_kubernetes_pod("a", "p1");
    assert_eq!(ports_at(&r, "10.96.0.1"), [80, 8080]);
    assert_eq!(hops(&r), [("10.96.0.1:80".to_string(), 9001)]);
    assert_eq!(r.kubernetes_service_counts(), (1, 0));
}

#[test]
fn named_ports_come_from_tcp_container_ports_and_sidecars() {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "a",
            "annotations": {"ferrule.dev/injected": "true"}},
        "spec": {
            "serviceAccountName": "one",
            "containers": [
                {"name": "app", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 9999},
                    {"name": "bad", "containerPort": 70000}]},
                {"name": "other", "ports": [{"name": "http", "containerPort": 8081}]}],
            "initContainers": [
                {"name": "setup", "ports": [{"name": "setup", "containerPort": 1}]},
                {"name": "side", "restartPolicy": "Always",
                 "ports": [{"name": "side", "containerPort": 7000, "protocol": "TCP"}]}]},
        "status": {"podIP": "10.0.0.1"}}))
    .unwrap();
    let td = spiffe::TrustDomain::new("td").unwrap();
    let p = meshed_pod(&pod, &td, 15006).unwrap();
    assert_eq!(
        p.named_ports,
        BTreeMap::from([("http".to_string(), 8080), ("side".to_string(), 7000)]),
        "TCP only, in range, first wins, restartable init containers only"
    );
}
