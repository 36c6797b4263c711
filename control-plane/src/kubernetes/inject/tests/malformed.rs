//! Malformed AdmissionReviews (HTTP 400, or `allowed: false` with status 400 once there
//! is a uid to answer) and pods that cannot be injected safely (`allowed: false`, 422).

use serde_json::json;

use super::*;

/// (what, how to break the review or pod, a word the message must contain).
type Case = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

fn bad_request(body: &[u8]) -> String {
    match review(body, &cfg(), bundle()) {
        Outcome::BadRequest(why) => why,
        Outcome::Review { body, .. } => panic!("expected a 400, got {body:#}"),
    }
}

#[test]
fn unusable_envelopes_are_400_with_the_reason() {
    assert!(bad_request(b"").contains("not JSON"));
    assert!(bad_request(b"{\"apiVersion\": ").contains("not JSON"));
    assert!(bad_request(b"\xff\xfe").contains("not JSON"));
    assert!(bad_request(b"[]").contains("admission.k8s.io/v1"));
    assert!(bad_request(b"null").contains("admission.k8s.io/v1"));

    let mut v = parse(BARE);
    v["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let why = bad_request(&serde_json::to_vec(&v).unwrap());
    assert!(why.contains("admission.k8s.io/v1beta1"), "{why}");

    let mut v = parse(BARE);
    v["kind"] = json!("TokenReview");
    assert!(bad_request(&serde_json::to_vec(&v).unwrap()).contains("TokenReview"));

    let mut v = parse(BARE);
    v.as_object_mut().unwrap().remove("request");
    assert!(bad_request(&serde_json::to_vec(&v).unwrap()).contains("no request"));
    v["request"] = json!("pod");
    assert!(bad_request(&serde_json::to_vec(&v).unwrap()).contains("no request"));

    for uid in [json!(null), json!(""), json!(42), json!("u".repeat(129))] {
        let mut v = parse(BARE);
        v["request"]["uid"] = uid;
        assert!(bad_request(&serde_json::to_vec(&v).unwrap()).contains("request.uid"));
    }
    let mut v = parse(BARE);
    v["request"].as_object_mut().unwrap().remove("uid");
    assert!(bad_request(&serde_json::to_vec(&v).unwrap()).contains("request.uid"));
}

/// Requests the webhook configuration should never send: refused, with the uid echoed.
#[test]
fn requests_other_than_a_pod_create_are_refused_with_the_reason() {
    let cases: Vec<Case> = vec![
        (
            "deployment",
            Box::new(|r| {
                r["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
                r["resource"] =
                    json!({"group": "apps", "version": "v1", "resource": "deployments"});
            }),
            "apps/v1/Deployment",
        ),
        (
            "pods via another kind",
            Box::new(|r| r["kind"]["kind"] = json!("Binding")),
            "Binding",
        ),
        (
            "update",
            Box::new(|r| r["operation"] = json!("UPDATE")),
            "UPDATE",
        ),
        (
            "delete",
            Box::new(|r| r["operation"] = json!("DELETE")),
            "DELETE",
        ),
        (
            "no operation",
            Box::new(|r| {
                r.as_object_mut().unwrap().remove("operation");
            }),
            "operation",
        ),
        (
            "subresource",
            Box::new(|r| r["subResource"] = json!("ephemeralcontainers")),
            "ephemeralcontainers",
        ),
        (
            "no object",
            Box::new(|r| r["object"] = json!(null)),
            "request.object",
        ),
        (
            "object is a deployment",
            Box::new(|r| r["object"]["kind"] = json!("Deployment")),
            "Deployment",
        ),
        (
            "no namespace",
            Box::new(|r| {
                r.as_object_mut().unwrap().remove("namespace");
                r["object"]["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("namespace");
            }),
            "namespace",
        ),
        (
            "no spec",
            Box::new(|r| {
                r["object"].as_object_mut().unwrap().remove("spec");
            }),
            "object.spec",
        ),
        (
            "no metadata",
            Box::new(|r| {
                r["object"].as_object_mut().unwrap().remove("metadata");
            }),
            "object.metadata",
        ),
        (
            "containers not an array",
            Box::new(|r| r["object"]["spec"]["containers"] = json!({"name": "x"})),
            "containers",
        ),
        (
            "no containers",
            Box::new(|r| r["object"]["spec"]["containers"] = json!([])),
            "containers",
        ),
        (
            "annotations not an object",
            Box::new(|r| r["object"]["metadata"]["annotations"] = json!(["a"])),
            "annotations",
        ),
        (
            "volumes not an array",
            Box::new(|r| r["object"]["spec"]["volumes"] = json!("v")),
            "volumes",
        ),
    ];
    for (what, mutate, needle) in cases {
        let mut v = parse(BARE);
        mutate(&mut v["request"]);
        let (code, msg) = refused(&v, &cfg());
        assert_eq!(code, 400, "{what}: {msg}");
        assert!(msg.contains(needle), "{what}: {msg}");
    }
}

/// Pods whose injection would be unsafe or collide with what we add.
#[test]
fn unsafe_or_conflicting_pods_are_refused_naming_the_field() {
    let cases: Vec<Case> = vec![
        (
            "host network",
            Box::new(|p| p["spec"]["hostNetwork"] = json!(true)),
            "hostNetwork",
        ),
        (
            "windows",
            Box::new(|p| p["spec"]["os"] = json!({"name": "windows"})),
            "windows",
        ),
        (
            "container named ferrule-proxy",
            Box::new(|p| p["spec"]["containers"][0]["name"] = json!("ferrule-proxy")),
            "\"ferrule-proxy\" is reserved",
        ),
        (
            "init container named ferrule-init",
            Box::new(|p| {
                p["spec"]["initContainers"] = json!([{"name": "ferrule-init", "image": "x"}])
            }),
            "\"ferrule-init\" is reserved",
        ),
        (
            "volume named ferrule-run",
            Box::new(|p| p["spec"]["volumes"] = json!([{"name": "ferrule-run", "emptyDir": {}}])),
            "\"ferrule-run\" is reserved",
        ),
        (
            "app on the mesh port",
            Box::new(|p| p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 15006}])),
            "port 15006",
        ),
        (
            "app on the admin port",
            Box::new(|p| p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 15000}])),
            "port 15000",
        ),
        (
            "port name taken",
            Box::new(|p| {
                p["spec"]["containers"][0]["ports"] =
                    json!([{"name": "ferrule-admin", "containerPort": 8000}])
            }),
            "ferrule-admin",
        ),
        (
            "app runs as the proxy uid",
            Box::new(|p| {
                p["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1337})
            }),
            "uid 1337",
        ),
        (
            "pod-level proxy uid",
            Box::new(|p| p["spec"]["securityContext"] = json!({"runAsUser": 1337})),
            "uid 1337",
        ),
        (
            "service account making no SPIFFE ID",
            Box::new(|p| p["spec"]["serviceAccountName"] = json!("a/b")),
            "SPIFFE ID",
        ),
    ];
    for (what, mutate, needle) in cases {
        let mut v = parse(BARE);
        mutate(&mut v["request"]["object"]);
        let (code, msg) = refused(&v, &cfg());
        assert_eq!(code, 422, "{what}: {msg}");
        assert!(msg.contains(needle), "{what}: {msg}");
    }
}

#[test]
fn a_container_overriding_the_pod_uid_is_fine() {
    let mut v = parse(BARE);
    v["request"]["object"]["spec"]["securityContext"] = json!({"runAsUser": 1337});
    v["request"]["object"]["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1000});
    let (pod, _) = inject(&v);
    assert_eq!(pod["metadata"]["annotations"][ANN_INJECTED], "true");
}

#[test]
fn the_namespace_falls_back_to_the_object_and_the_sa_to_default() {
    let mut v = parse(BARE);
    v["request"].as_object_mut().unwrap().remove("namespace");
    let spec = v["request"]["object"]["spec"].as_object_mut().unwrap();
    spec.remove("serviceAccountName");
    spec.remove("serviceAccount");
    let (pod, _) = inject(&v);
    assert_eq!(
        env(container(&pod, PROXY_CONTAINER), "FERRULE_SPIFFE_ID"),
        "spiffe://cluster.local/ns/shop/sa/default"
    );
}

#[test]
fn no_trust_bundle_fails_closed() {
    let body = serde_json::to_vec(&parse(BARE)).unwrap();
    let Outcome::Review { body, summary } = review(&body, &cfg(), " \n") else {
        panic!("400")
    };
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 500);
    assert_eq!(summary.decision, "refused");
}

#[test]
fn refusals_carry_a_kubernetes_status() {
    let mut v = parse(BARE);
    annotate(&mut v, "ferrule.dev/mode", json!("loose"));
    let r = respond(&v, &cfg());
    assert_eq!(r["status"]["status"], "Failure");
    assert_eq!(r["status"]["reason"], "Invalid");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("ferrule sidecar injection: annotation ferrule.dev/mode"),
        "{msg}"
    );
}
