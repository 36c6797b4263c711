//! Injection tests on real AdmissionReview JSON (`testdata/`: a bare pod, a pod as the
//! ReplicaSet controller creates it from a Deployment, a pod as the Job controller
//! creates it). The returned JSON Patch is applied with an independent RFC 6902
//! implementation (the `json-patch` crate) and the resulting pod is inspected.

mod annotations;
mod malformed;

use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Value, json};
use spiffe::TrustDomain;

use super::*;

const BARE: &str = include_str!("testdata/bare-pod.json");
const DEPLOYMENT: &str = include_str!("testdata/deployment-pod.json");
const JOB: &str = include_str!("testdata/job-pod.json");
const FIXTURES: [&str; 3] = [BARE, DEPLOYMENT, JOB];

/// A real self-signed root as PEM (the bundle the webhook stamps into the pod).
fn bundle() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        rcgen::generate_simple_self_signed(vec!["root.test".into()])
            .expect("self-signed")
            .cert
            .pem()
    })
}

fn cfg() -> InjectConfig {
    InjectConfig::with_defaults(TrustDomain::new("cluster.local").unwrap())
}

fn parse(fixture: &str) -> Value {
    serde_json::from_str(fixture).unwrap()
}

/// Runs the review and returns the AdmissionReview response object.
fn respond(review_json: &Value, cfg: &InjectConfig) -> Value {
    let body = serde_json::to_vec(review_json).unwrap();
    match review(&body, cfg, bundle()) {
        Outcome::Review { body, .. } => {
            assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(body["kind"], "AdmissionReview");
            assert_eq!(
                body["response"]["uid"], review_json["request"]["uid"],
                "uid must be echoed"
            );
            body["response"].clone()
        }
        Outcome::BadRequest(why) => panic!("unexpected 400: {why}"),
    }
}

/// The decoded JSON Patch of an allowed response (empty when there is none).
fn ops(response: &Value) -> Vec<Value> {
    assert_eq!(response["allowed"], true, "{response:#}");
    let Some(b64) = response.get("patch") else {
        assert!(response.get("patchType").is_none());
        return Vec::new();
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// Applies `ops` to the review's pod with the json-patch crate.
fn apply(review_json: &Value, ops: &[Value]) -> Value {
    let mut pod = review_json["request"]["object"].clone();
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("patch fails: {e}\n{ops:#?}"));
    pod
}

/// Reviews and applies with the default config: the injected pod and the response.
fn inject(review_json: &Value) -> (Value, Value) {
    let response = respond(review_json, &cfg());
    let pod = apply(review_json, &ops(&response));
    (pod, response)
}

/// The refusal of a review: (code, message).
fn refused(review_json: &Value, cfg: &InjectConfig) -> (u64, String) {
    let r = respond(review_json, cfg);
    assert_eq!(r["allowed"], false, "expected a refusal: {r:#}");
    assert!(r.get("patch").is_none());
    (
        r["status"]["code"].as_u64().unwrap(),
        r["status"]["message"].as_str().unwrap().to_string(),
    )
}

fn annotate(review_json: &mut Value, key: &str, value: Value) {
    let meta = &mut review_json["request"]["object"]["metadata"];
    if meta.get("annotations").is_none() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][key] = value;
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(c: &'a Value, name: &str) -> &'a str {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// The `fieldRef.fieldPath` of variable `name` in container `c`, if it has one.
fn field_ref<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .pointer("/valueFrom/fieldRef/fieldPath")?
        .as_str()
}

fn init_args(pod: &Value) -> Vec<String> {
    serde_json::from_value(container(pod, INIT_CONTAINER)["args"].clone()).unwrap()
}

/// The value following `flag` in the init container's args.
fn init_flag(pod: &Value, flag: &str) -> Option<String> {
    let args = init_args(pod);
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

#[test]
fn bare_pod_gets_init_native_sidecar_volumes_and_annotations() {
    let review_json = parse(BARE);
    let response = respond(&review_json, &cfg());
    let ops = ops(&response);
    // No initContainers, volumes or annotations yet: each is added whole.
    let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/spec/initContainers",
            "/spec/volumes",
            "/metadata/annotations"
        ]
    );
    assert!(response.get("warnings").is_none(), "{response:#}");
    let pod = apply(&review_json, &ops);

    let original = &review_json["request"]["object"];
    assert_eq!(pod["spec"]["containers"], original["spec"]["containers"]);
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        [INIT_CONTAINER, PROXY_CONTAINER]
    );

    let init = container(&pod, INIT_CONTAINER);
    assert_eq!(init["image"], cfg().proxy_image);
    assert_eq!(init_args(&pod), ["init", "--proxy-uid", "1337"]);
    assert!(
        init.get("env").is_none(),
        "no probes, no node address: {init:#}"
    );
    let sc = &init["securityContext"];
    assert_eq!(sc["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["runAsUser"], 0, "netfilter needs root; see module docs");

    let proxy = container(&pod, PROXY_CONTAINER);
    assert_eq!(proxy["restartPolicy"], "Always", "native sidecar");
    assert_eq!(proxy["args"], json!(["run"]));
    assert_eq!(
        proxy["startupProbe"]["httpGet"],
        json!({"path": "/ready", "port": 15000})
    );
    let sc = &proxy["securityContext"];
    assert_eq!(sc["runAsUser"], 1337);
    assert_eq!(sc["runAsGroup"], 1337);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}})
    );
    assert_eq!(
        env(proxy, "FERRULE_SPIFFE_ID"),
        "spiffe://cluster.local/ns/shop/sa/default"
    );
    assert_eq!(env(proxy, "FERRULE_TRUST_DOMAIN"), "cluster.local");
    assert_eq!(
        env(proxy, "FERRULE_CONTROL_PLANE"),
        "ferrule-control-plane.ferrule-system.svc:8443"
    );
    assert_eq!(
        env(proxy, "FERRULE_SA_TOKEN_FILE"),
        "/var/run/secrets/ferrule/token"
    );
    assert_eq!(env(proxy, "FERRULE_ADMIN_LISTEN"), "0.0.0.0:15000");
    assert_eq!(env(proxy, "RUST_LOG"), "info");

    // Volumes: memory-backed runtime dir, projected token, downward-API files.
    assert_eq!(
        names(&pod["spec"]["volumes"]),
        ["ferrule-run", "ferrule-token", "ferrule-config"]
    );
    let vols = &pod["spec"]["volumes"];
    assert_eq!(vols[0]["emptyDir"]["medium"], "Memory");
    assert_eq!(
        vols[1]["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "ferrule", "expirationSeconds": 3600, "path": "token"})
    );
    let mounts = &proxy["volumeMounts"];
    assert_eq!(
        mounts,
        &json!([
            {"name": "ferrule-run", "mountPath": "/run/ferrule"},
            {"name": "ferrule-token", "mountPath": "/var/run/secrets/ferrule", "readOnly": true},
            {"name": "ferrule-config", "mountPath": "/etc/ferrule", "readOnly": true},
        ])
    );

    // The downward-API files come from annotations the patch sets.
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann[ANN_INJECTED], "true");
    assert_eq!(ann[ANN_TRUST_BUNDLE], bundle());
    let items = &vols[2]["downwardAPI"]["items"];
    assert_eq!(
        items[0]["fieldRef"]["fieldPath"],
        "metadata.annotations['ferrule.dev/trust-bundle']"
    );
    assert_eq!(
        items[1]["fieldRef"]["fieldPath"],
        "metadata.annotations['ferrule.dev/proxy-config']"
    );
    let proxy_yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(ann[ANN_PROXY_CONFIG].as_str().unwrap()).unwrap();
    assert_eq!(proxy_yaml["mode"], "transparent");
    assert_eq!(proxy_yaml["inbound"]["default_mode"], "strict");
    assert_eq!(proxy_yaml["outbound"]["unmeshed"], "refuse");
}

#[test]
fn deployment_pod_keeps_its_volumes_and_annotations_and_exempts_probe_ports() {
    let review_json = parse(DEPLOYMENT);
    let body = serde_json::to_vec(&review_json).unwrap();
    let Outcome::Review { summary, .. } = review(&body, &cfg(), bundle()) else {
        panic!("400")
    };
    // Pods of controllers have no name yet: generateName identifies them in the log.
    assert_eq!(summary.pod, "api-7d9c5b8f6b-");
    assert_eq!(summary.namespace, "shop");
    assert_eq!(summary.decision, "injected");
    assert_eq!(summary.detail, "spiffe://cluster.local/ns/shop/sa/api");

    let (pod, response) = inject(&review_json);
    let original = &review_json["request"]["object"];
    assert_eq!(pod["spec"]["containers"], original["spec"]["containers"]);
    assert_eq!(
        names(&pod["spec"]["volumes"]),
        [
            "config",
            "kube-api-access-x7k2p",
            "ferrule-run",
            "ferrule-token",
            "ferrule-config"
        ]
    );
    let ann = pod["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(ann["prometheus.io/scrape"], "true", "existing kept");
    assert_eq!(
        ann["kubectl.kubernetes.io/restartedAt"],
        "2025-01-14T10:12:00Z"
    );
    assert_eq!(ann[ANN_INJECTED], "true");
    assert_eq!(ann.len(), 5);
    assert_eq!(
        env(container(&pod, PROXY_CONTAINER), "FERRULE_SPIFFE_ID"),
        "spiffe://cluster.local/ns/shop/sa/api"
    );

    // liveness httpGet "http" → 8080, readiness 8081, startup tcpSocket 8080, preStop
    // 8082, the cache's gRPC probe 9901; its exec probe has no port. They are exempted
    // for the node's addresses only, never skipped for everyone.
    assert_eq!(
        init_flag(&pod, "--probe-ports").as_deref(),
        Some("8080,8081,8082,9901")
    );
    assert_eq!(init_flag(&pod, "--skip-inbound-ports"), None);
    // The node: its addresses from the downward API, expanded by Kubernetes in `args`,
    // and the pod's gateway (the node's address on the pod link with bridge CNIs).
    assert_eq!(
        init_flag(&pod, "--probe-sources").as_deref(),
        Some("$(FERRULE_HOST_IP),$(FERRULE_HOST_IPS),gateway")
    );
    let init = container(&pod, INIT_CONTAINER);
    assert_eq!(field_ref(init, "FERRULE_HOST_IP"), Some("status.hostIP"));
    assert_eq!(field_ref(init, "FERRULE_HOST_IPS"), Some("status.hostIPs"));
    // Only 8080 is also a declared (serving) port: one warning, naming it and who can
    // still reach it in plaintext.
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let w = warnings[0].as_str().unwrap();
    assert!(w.contains("port 8080") && w.contains("api/"), "{w}");
    assert!(w.contains("from the node"), "{w}");
    assert!(w.contains("ferrule.dev/skip-probe-ports"), "{w}");
}

#[test]
fn job_pod_keeps_its_init_containers_after_ours_so_they_get_the_mesh() {
    let review_json = parse(JOB);
    let (pod, response) = inject(&review_json);
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        [INIT_CONTAINER, PROXY_CONTAINER, "wait-for-db"]
    );
    let ops = ops(&response);
    assert_eq!(ops[0]["path"], "/spec/initContainers/0");
    assert_eq!(ops[1]["path"], "/spec/initContainers/1");
    assert_eq!(
        container(&pod, "wait-for-db"),
        &review_json["request"]["object"]["spec"]["initContainers"][0]
    );
    // Native sidecar: the Job's pod can complete; restartPolicy Never is untouched.
    assert_eq!(container(&pod, PROXY_CONTAINER)["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert!(response.get("warnings").is_none());
    assert_eq!(
        env(container(&pod, PROXY_CONTAINER), "FERRULE_SPIFFE_ID"),
        "spiffe://cluster.local/ns/batch/sa/migrator"
    );
    assert_eq!(init_flag(&pod, "--skip-inbound-ports"), None);
    assert_eq!(init_flag(&pod, "--probe-ports"), None, "no probes");
    assert_eq!(init_flag(&pod, "--probe-sources"), None);
}

#[test]
fn reinjecting_an_injected_pod_changes_nothing() {
    for (fixture, mode) in FIXTURES
        .iter()
        .flat_map(|f| [(f, "native"), (f, "classic")])
    {
        let mut review_json = parse(fixture);
        annotate(&mut review_json, "ferrule.dev/sidecar-mode", json!(mode));
        let (pod, _) = inject(&review_json);
        let mut again = review_json.clone();
        again["request"]["object"] = pod;
        again["request"]["uid"] = json!("second-pass");
        let response = respond(&again, &cfg());
        assert_eq!(ops(&response), Vec::<Value>::new(), "{mode}: {response:#}");
    }
}

#[test]
fn the_marker_without_the_proxy_is_refused() {
    let mut review_json = parse(BARE);
    annotate(&mut review_json, ANN_INJECTED, json!("true"));
    let (code, msg) = refused(&review_json, &cfg());
    assert_eq!(code, 422);
    assert!(
        msg.contains(ANN_INJECTED) && msg.contains(PROXY_CONTAINER),
        "{msg}"
    );
}

#[test]
fn opt_out_annotation_is_honoured_and_strict() {
    let mut review_json = parse(DEPLOYMENT);
    annotate(&mut review_json, ANN_INJECT, json!("false"));
    assert!(ops(&respond(&review_json, &cfg())).is_empty());
    annotate(&mut review_json, ANN_INJECT, json!("true"));
    assert!(!ops(&respond(&review_json, &cfg())).is_empty());
    for bad in ["False", "no", "0", ""] {
        annotate(&mut review_json, ANN_INJECT, json!(bad));
        let (code, msg) = refused(&review_json, &cfg());
        assert_eq!(code, 422);
        assert!(msg.contains(ANN_INJECT), "{msg}");
    }
}

#[test]
fn quantities() {
    for ok in [
        "100m", "1", "0.5", "64Mi", "1Gi", "2G", "1e3", "1E-2", "+5", ".5",
    ] {
        assert!(is_quantity(ok), "{ok}");
    }
    for bad in ["", "m", "-1", "1.2.3", "64MB", "1e", "ten", "1 Gi", "Mi"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}
