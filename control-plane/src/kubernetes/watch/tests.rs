//! The pure part of the watchers: wire decoding, pod and policy conversion, and the
//! cursor's bookkeeping against a real registry and a real policy service.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::store::Store;

fn td() -> TrustDomain {
    TrustDomain::new("td").unwrap()
}

/// A Pod as the API server serves it (fields as in the Kubernetes API reference),
/// injected, in `phase` with `ips`.
fn pod(ns: &str, name: &str, rv: &str, phase: &str, ips: &[&str]) -> Value {
    let mut p = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": format!("uid-{name}"),
            "resourceVersion": rv,
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"app": "api"},
            "annotations": {"ferrule.dev/injected": "true", "kubectl.kubernetes.io/restartedAt": "x"},
            "managedFields": [{"manager": "kubelet", "operation": "Update"}]
        },
        "spec": {
            "serviceAccountName": "api",
            "serviceAccount": "api",
            "nodeName": "node-1",
            "containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]
        },
        "status": {
            "phase": phase,
            "hostIP": "192.168.0.10",
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    });
    if let Some(first) = ips.first() {
        p["status"]["podIP"] = json!(first);
        p["status"]["podIPs"] = Value::Array(ips.iter().map(|ip| json!({ "ip": ip })).collect());
    }
    p
}

fn event(kind: &str, object: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap()
}

fn bookmark(rv: &str) -> Vec<u8> {
    event(
        "BOOKMARK",
        &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv,
            "annotations": {"k8s.io/initial-events-end": "true"}}}),
    )
}

fn error_event(code: i64, reason: &str) -> Vec<u8> {
    event(
        "ERROR",
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (5)", "reason": reason, "code": code}),
    )
}

/// (address, identity) pairs published by the registry.
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
    (ip.into(), id.into())
}

const API: &str = "spiffe://td/ns/prod/sa/api";

#[test]
fn decodes_every_event_type_and_refuses_the_rest() {
    let p = pod("prod", "api-1", "17", "Running", &["10.1.0.5"]);
    match decode_event::<Pod>(&event("ADDED", &p)).unwrap() {
        WatchEvent::Added(pod) => assert_eq!(pod.metadata.resource_version, "17"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode_event::<Pod>(&event("DELETED", &p)).unwrap(),
        WatchEvent::Deleted(_)
    ));
    assert!(matches!(
        decode_event::<Pod>(&bookmark("99")).unwrap(),
        WatchEvent::Bookmark { resource_version } if resource_version == "99"
    ));
    match decode_event::<Pod>(&error_event(410, "Expired")).unwrap() {
        WatchEvent::Error(s) => assert!(s.is_gone() && s.code == 410, "{s:?}"),
        other => panic!("{other:?}"),
    }
    match decode_event::<Pod>(&error_event(500, "InternalError")).unwrap() {
        WatchEvent::Error(s) => assert!(!s.is_gone()),
        other => panic!("{other:?}"),
    }
    // An ERROR whose object is no Status is still an error.
    assert!(matches!(
        decode_event::<Pod>(br#"{"type":"ERROR","object":"boom"}"#).unwrap(),
        WatchEvent::Error(_)
    ));
    assert!(matches!(
        decode_event::<Pod>(br#"{"type":"SYNC","object":{}}"#),
        Err(DecodeError::UnknownType(t)) if t == "SYNC"
    ));
    // Cut short by a dropped connection.
    let full = event("ADDED", &p);
    assert!(matches!(
        decode_event::<Pod>(&full[..full.len() / 2]),
        Err(DecodeError::Line(_))
    ));
    assert!(matches!(
        decode_event::<Pod>(br#"{"type":"MODIFIED","object":{"metadata":"x"}}"#),
        Err(DecodeError::Object {
            event: "MODIFIED",
            ..
        })
    ));
    // Nulls where the API server would omit the field.
    let nulls = br#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"b","annotations":null},"spec":null,"status":null}}"#;
    assert!(matches!(
        decode_event::<Pod>(nulls),
        Ok(WatchEvent::Added(_))
    ));
}

#[test]
fn which_pods_are_meshed() {
    let decode = |v: Value| serde_json::from_value::<Pod>(v).unwrap();
    let ok = meshed_pod(
        &decode(pod(
            "prod",
            "api-1",
            "1",
            "Running",
            &["10.1.0.5", "fd00:10::5"],
        )),
        &td(),
        15006,
    )
    .unwrap();
    assert_eq!(ok.spiffe_id.to_string(), API);
    assert_eq!(ok.service, "api");
    assert_eq!(
        ok.addresses,
        vec![
            "10.1.0.5".parse::<std::net::IpAddr>().unwrap(),
            "fd00:10::5".parse().unwrap()
        ]
    );
    assert_eq!(ok.created, "2025-01-02T03:04:05Z");

    // Pending with an IP: the sandbox exists (native sidecars start in this phase).
    assert!(
        meshed_pod(
            &decode(pod("p", "a", "1", "Pending", &["10.1.0.6"])),
            &td(),
            1
        )
        .is_ok()
    );
    let skip = |v: Value| meshed_pod(&decode(v), &td(), 15006).unwrap_err();
    assert_eq!(skip(pod("p", "a", "1", "Pending", &[])), Skip::NoAddress);
    assert_eq!(
        skip(pod("p", "a", "1", "Succeeded", &["10.1.0.6"])),
        Skip::Terminal("Succeeded".into())
    );
    assert_eq!(
        skip(pod("p", "a", "1", "Failed", &["10.1.0.6"])),
        Skip::Terminal("Failed".into())
    );
    let mut not_injected = pod("p", "a", "1", "Running", &["10.1.0.6"]);
    not_injected["metadata"]["annotations"]["ferrule.dev/injected"] = json!("false");
    assert_eq!(skip(not_injected.clone()), Skip::NotInjected);
    not_injected["metadata"]["annotations"] = json!(null);
    assert_eq!(skip(not_injected), Skip::NotInjected);
    let mut host = pod("p", "a", "1", "Running", &["192.168.0.10"]);
    host["spec"]["hostNetwork"] = json!(true);
    assert_eq!(skip(host), Skip::HostNetwork);
    assert!(matches!(
        skip(pod("p", "a", "1", "Running", &["10.1.0.6", "not-an-ip"])),
        Skip::BadAddress(_)
    ));
    assert!(matches!(
        skip(pod("p", "a", "1", "Running", &["0.0.0.0"])),
        Skip::BadAddress(_)
    ));

    // No service account: Kubernetes' default one. Only the legacy field: that one.
    let mut default_sa = pod("p", "a", "1", "Running", &["10.1.0.7"]);
    default_sa["spec"] = json!({});
    let p = meshed_pod(&decode(default_sa.clone()), &td(), 1).unwrap();
    assert_eq!(p.spiffe_id.to_string(), "spiffe://td/ns/p/sa/default");
    default_sa["spec"]["serviceAccount"] = json!("legacy");
    let p = meshed_pod(&decode(default_sa), &td(), 1).unwrap();
    assert_eq!(p.spiffe_id.to_string(), "spiffe://td/ns/p/sa/legacy");

    // Only the singular podIP (older API servers).
    let mut single = pod("p", "a", "1", "Running", &[]);
    single["status"]["podIP"] = json!("::ffff:10.1.0.8");
    let p = meshed_pod(&decode(single), &td(), 1).unwrap();
    assert_eq!(
        p.addresses,
        vec!["10.1.0.8".parse::<std::net::IpAddr>().unwrap()]
    );
}

fn registry_sink() -> (Arc<Registry>, PodSink) {
    let r = Arc::new(Registry::new(Duration::from_secs(60)));
    let sink = PodSink::new(r.clone(), td(), 15006);
    (r, sink)
}

#[test]
fn the_cursor_follows_the_pods_through_their_life() {
    let (r, mut sink) = registry_sink();
    let mut c = Cursor::default();
    assert_eq!(c.watch_path::<PodSink>(Duration::from_secs(300)), None);
    c.apply_list(
        &mut sink,
        vec![
            pod("prod", "api-1", "3", "Running", &["10.1.0.5", "fd00::5"]),
            json!({"metadata": "not an object"}),
        ],
        "10".into(),
    )
    .unwrap();
    assert_eq!(
        published(&r),
        vec![pair("10.1.0.5", API), pair("fd00::5", API)],
        "the undecodable item is skipped, the rest applied"
    );
    assert_eq!(
        c.watch_path::<PodSink>(Duration::from_secs(300)).unwrap(),
        "/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion=10&timeoutSeconds=300"
    );

    let mut events = Vec::new();
    let mut line =
        |c: &mut Cursor, sink: &mut PodSink, l: Vec<u8>| c.apply_line(sink, &l, |e| events.push(e));
    // Scheduled, no IP yet: nothing.
    let n = line(
        &mut c,
        &mut sink,
        event("ADDED", &pod("prod", "api-2", "11", "Pending", &[])),
    );
    assert_eq!(n, Next::Continue);
    assert_eq!(published(&r).len(), 2);
    // Gets its IP.
    line(
        &mut c,
        &mut sink,
        event(
            "MODIFIED",
            &pod("prod", "api-2", "12", "Running", &["10.1.0.6"]),
        ),
    );
    assert!(published(&r).contains(&pair("10.1.0.6", API)));
    assert_eq!(c.resource_version.as_deref(), Some("12"));
    // Bookmarks move the version on and change nothing else.
    line(&mut c, &mut sink, bookmark("20"));
    assert_eq!(c.resource_version.as_deref(), Some("20"));
    // A Job-like pod completes: its IP may be reused, it leaves.
    line(
        &mut c,
        &mut sink,
        event(
            "MODIFIED",
            &pod("prod", "api-2", "21", "Succeeded", &["10.1.0.6"]),
        ),
    );
    assert!(!published(&r).contains(&pair("10.1.0.6", API)));
    // Deleted.
    line(
        &mut c,
        &mut sink,
        event(
            "DELETED",
            &pod("prod", "api-1", "22", "Running", &["10.1.0.5", "fd00::5"]),
        ),
    );
    assert!(published(&r).is_empty());
    assert_eq!(c.resource_version.as_deref(), Some("22"));

    // A line cut short: watch again from the same version.
    let cut = event(
        "ADDED",
        &pod("prod", "api-3", "23", "Running", &["10.1.0.9"]),
    );
    assert_eq!(
        line(&mut c, &mut sink, cut[..cut.len() - 5].to_vec()),
        Next::Rewatch("malformed_line")
    );
    assert!(
        published(&r).is_empty(),
        "nothing applied from a partial line"
    );
    assert_eq!(c.resource_version.as_deref(), Some("22"));
    // A non-410 ERROR: watch again from the same version.
    assert_eq!(
        line(&mut c, &mut sink, error_event(500, "InternalError")),
        Next::Rewatch("error_event")
    );
    assert_eq!(c.resource_version.as_deref(), Some("22"));
    // 410 Gone: only a new list helps.
    assert_eq!(
        line(&mut c, &mut sink, error_event(410, "Expired")),
        Next::Relist("gone")
    );
    assert_eq!(c.resource_version, None);
    assert_eq!(
        line(
            &mut c,
            &mut sink,
            br#"{"type":"ADDED","object":{"metadata":7}}"#.to_vec()
        ),
        Next::Relist("undecodable_object")
    );
    assert_eq!(
        events,
        [
            "ADDED", "MODIFIED", "BOOKMARK", "MODIFIED", "DELETED", "ERROR", "ERROR"
        ]
    );
}

#[test]
fn a_relist_reconciles_pods_deleted_during_a_gap() {
    let (r, mut sink) = registry_sink();
    let mut c = Cursor::default();
    c.apply_list(
        &mut sink,
        vec![
            pod("prod", "api-1", "3", "Running", &["10.1.0.5"]),
            pod("prod", "api-2", "4", "Running", &["10.1.0.6"]),
        ],
        "10".into(),
    )
    .unwrap();
    assert_eq!(published(&r).len(), 2);
    // The watch broke; api-1 was deleted meanwhile and the events are gone (410).
    c.apply_list(
        &mut sink,
        vec![pod("prod", "api-2", "4", "Running", &["10.1.0.6"])],
        "30".into(),
    )
    .unwrap();
    assert_eq!(published(&r), vec![pair("10.1.0.6", API)]);
    assert_eq!(c.resource_version.as_deref(), Some("30"));
}

#[test]
fn opaque_query_values_are_escaped() {
    assert_eq!(
        Cursor::list_path::<PodSink>(500, ""),
        "/api/v1/pods?limit=500"
    );
    assert_eq!(
        Cursor::list_path::<PolicySink>(2, "eyJ2Ijoi+/=&x"),
        "/apis/ferrule.dev/v1alpha1/authorizationpolicies?limit=2&continue=eyJ2Ijoi%2B%2F%3D%26x"
    );
}

// --- AuthorizationPolicy resources -------------------------------------------------

/// An AuthorizationPolicy resource as the API server serves it.
fn cr(ns: &str, name: &str, rv: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferrule.dev/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": name, "namespace": ns, "uid": "u", "resourceVersion": rv, "generation": 1,
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
        },
        "spec": spec
    })
}

fn spec(selector: &str, action: &str) -> Value {
    json!({
        "selector": {"spiffeId": selector, "ports": [8080]},
        "action": action,
        "rules": [{"from": [{"spiffeIdPrefix": "spiffe://td/ns/web/"}], "to": {"methods": ["GET"], "paths": ["/api/*"]}}]
    })
}

fn policy_sink() -> (tempfile::TempDir, Arc<PolicyService>, PolicySink) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
    let svc = Arc::new(
        PolicyService::open(store, ferrule_policy::MeshDefault::AllowAuthenticated).unwrap(),
    );
    let sink = PolicySink::new(svc.clone(), td(), "ferrule-system".into());
    (dir, svc, sink)
}

fn in_force(svc: &PolicyService) -> Vec<(String, String)> {
    let mut v: Vec<_> = svc
        .current()
        .set
        .policies()
        .iter()
        .map(|p| (p.name().to_string(), p.action().to_string()))
        .collect();
    v.sort();
    v
}

fn decode_cr(v: Value) -> PolicyResource {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_resource_becomes_a_namespaced_policy() {
    let p = policy_from_resource(
        &decode_cr(cr(
            "prod",
            "allow-web",
            "5",
            spec("spiffe://td/ns/prod/sa/api", "ALLOW"),
        )),
        &td(),
        "ferrule-system",
    )
    .unwrap();
    assert_eq!(p.name(), "k8s/prod/allow-web");
    assert_eq!(p.namespace(), Some("prod"));
    assert_eq!(p.selector().ports, vec![8080]);
    assert_eq!(p.rules().len(), 1);
}

#[test]
fn invalid_resources_are_refused_with_every_reason() {
    let check = |ns: &str, s: Value| {
        policy_from_resource(&decode_cr(cr(ns, "p", "1", s)), &td(), "ferrule-system")
            .unwrap_err()
            .join("; ")
    };
    let e = check("prod", spec("spiffe://td/ns/prod/sa/api", "PERMIT"));
    assert!(e.contains("spec.action"), "{e}");
    let mut extra = spec("spiffe://td/ns/prod/sa/api", "ALLOW");
    extra["selector"]["labels"] = json!({"app": "x"});
    let e = check("prod", extra);
    assert!(e.contains("labels"), "{e}");
    let e = check("prod", json!(null));
    assert!(!e.is_empty());
    // Another namespace's workload, a prefix reaching out of the namespace, another
    // trust domain.
    for selector in [
        "spiffe://td/ns/payments/sa/api",
        "spiffe://td/ns/*",
        "spiffe://td/ns/production/sa/x",
        "spiffe://other/ns/prod/sa/api",
    ] {
        let e = check("prod", spec(selector, "DENY"));
        assert!(e.contains("outside namespace \"prod\""), "{selector}: {e}");
    }
    // Inside the namespace: exact and prefix.
    for selector in ["spiffe://td/ns/prod/sa/api", "spiffe://td/ns/prod/*"] {
        assert!(
            policy_from_resource(
                &decode_cr(cr("prod", "p", "1", spec(selector, "DENY"))),
                &td(),
                "ferrule-system"
            )
            .is_ok(),
            "{selector}"
        );
    }
    // The root namespace selects anything.
    assert!(
        policy_from_resource(
            &decode_cr(cr(
                "ferrule-system",
                "mesh",
                "1",
                spec("spiffe://td/*", "DENY")
            )),
            &td(),
            "ferrule-system"
        )
        .is_ok()
    );
}

#[test]
fn the_cursor_follows_policy_resources() {
    let (_dir, svc, mut sink) = policy_sink();
    let mut c = Cursor::default();
    c.apply_list(
        &mut sink,
        vec![
            cr(
                "prod",
                "allow-web",
                "5",
                spec("spiffe://td/ns/prod/sa/api", "ALLOW"),
            ),
            cr(
                "prod",
                "broken",
                "6",
                spec("spiffe://td/ns/prod/sa/api", "PERMIT"),
            ),
        ],
        "10".into(),
    )
    .unwrap();
    assert_eq!(
        in_force(&svc),
        [("k8s/prod/allow-web".into(), "ALLOW".into())]
    );
    assert_eq!(sink.tracked(), (1, 1));

    let line = |c: &mut Cursor, sink: &mut PolicySink, l: Vec<u8>| c.apply_line(sink, &l, |_| {});
    // A DENY arrives.
    line(
        &mut c,
        &mut sink,
        event(
            "ADDED",
            &cr(
                "prod",
                "deny-admin",
                "11",
                spec("spiffe://td/ns/prod/sa/api", "DENY"),
            ),
        ),
    );
    assert_eq!(in_force(&svc).len(), 2);
    let v = svc.current().set.version();
    // Edited into an invalid document: the valid version stays in force.
    line(
        &mut c,
        &mut sink,
        event(
            "MODIFIED",
            &cr(
                "prod",
                "deny-admin",
                "12",
                spec("spiffe://td/ns/prod/sa/api", "deny"),
            ),
        ),
    );
    assert!(in_force(&svc).contains(&("k8s/prod/deny-admin".into(), "DENY".into())));
    assert_eq!(svc.current().set.version(), v, "nothing applied");
    assert_eq!(sink.tracked(), (2, 2));
    // Fixed: applied, no longer invalid.
    line(
        &mut c,
        &mut sink,
        event(
            "MODIFIED",
            &cr(
                "prod",
                "deny-admin",
                "13",
                spec("spiffe://td/ns/prod/*", "DENY"),
            ),
        ),
    );
    assert_eq!(sink.tracked(), (2, 1));
    assert!(svc.current().set.version() > v);
    // The never-valid one is deleted; then the DENY too.
    line(
        &mut c,
        &mut sink,
        event(
            "DELETED",
            &cr(
                "prod",
                "broken",
                "14",
                spec("spiffe://td/ns/prod/sa/api", "PERMIT"),
            ),
        ),
    );
    assert_eq!(sink.tracked(), (2, 0));
    line(
        &mut c,
        &mut sink,
        event(
            "DELETED",
            &cr(
                "prod",
                "deny-admin",
                "15",
                spec("spiffe://td/ns/prod/*", "DENY"),
            ),
        ),
    );
    assert_eq!(
        in_force(&svc),
        [("k8s/prod/allow-web".into(), "ALLOW".into())]
    );
    assert_eq!(c.resource_version.as_deref(), Some("15"));

    // A relist without allow-web removes it.
    c.apply_list(&mut sink, vec![], "40".into()).unwrap();
    assert!(in_force(&svc).is_empty());
}
