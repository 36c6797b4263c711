//! Each annotation: what a valid value does to the injected pod, and that every bad
//! value refuses the pod with a message naming the annotation.

use serde_json::json;

use super::*;

/// Injects the bare pod with one annotation set.
fn with(key: &str, value: &str) -> (Value, Value) {
    let mut review_json = parse(BARE);
    annotate(&mut review_json, key, json!(value));
    inject(&review_json)
}

fn proxy_yaml(pod: &Value) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(
        pod["metadata"]["annotations"][ANN_PROXY_CONFIG]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn mode() {
    let (pod, _) = with("ferrule.dev/mode", "permissive");
    assert_eq!(proxy_yaml(&pod)["inbound"]["default_mode"], "permissive");
    let (pod, _) = with("ferrule.dev/mode", "strict");
    assert_eq!(proxy_yaml(&pod)["inbound"]["default_mode"], "strict");
}

#[test]
fn log_level() {
    for level in ["error", "warn", "info", "debug", "trace"] {
        let (pod, _) = with("ferrule.dev/log-level", level);
        assert_eq!(env(container(&pod, PROXY_CONTAINER), "RUST_LOG"), level);
    }
}

#[test]
fn unmeshed_outbound() {
    let (pod, _) = with("ferrule.dev/unmeshed-outbound", "passthrough");
    assert_eq!(proxy_yaml(&pod)["outbound"]["unmeshed"], "passthrough");
}

#[test]
fn skip_lists_reach_the_init_step() {
    let (pod, _) = with("ferrule.dev/skip-inbound-ports", "8443, 22");
    assert_eq!(
        init_flag(&pod, "--skip-inbound-ports").as_deref(),
        Some("22,8443")
    );
    let (pod, _) = with("ferrule.dev/skip-outbound-ports", "5432,6379");
    assert_eq!(
        init_flag(&pod, "--skip-outbound-ports").as_deref(),
        Some("5432,6379")
    );
    let (pod, _) = with(
        "ferrule.dev/skip-outbound-cidrs",
        "10.0.0.0/8, fd00::/8,169.254.169.254",
    );
    assert_eq!(
        init_flag(&pod, "--skip-cidrs").as_deref(),
        Some("10.0.0.0/8,fd00::/8,169.254.169.254")
    );
    // Empty means none.
    let (pod, _) = with("ferrule.dev/skip-inbound-ports", "");
    assert_eq!(init_flag(&pod, "--skip-inbound-ports"), None);
}

#[test]
fn probe_ports_are_node_only_the_annotation_is_a_full_bypass_and_both_can_be_turned_off() {
    let mut review_json = parse(DEPLOYMENT);
    annotate(
        &mut review_json,
        "ferrule.dev/skip-inbound-ports",
        json!("22"),
    );
    let (pod, _) = inject(&review_json);
    assert_eq!(
        init_flag(&pod, "--skip-inbound-ports").as_deref(),
        Some("22")
    );
    assert_eq!(
        init_flag(&pod, "--probe-ports").as_deref(),
        Some("8080,8081,8082,9901")
    );
    // A probe port the annotation skips for everyone (the user's explicit choice) is
    // not repeated as a probe port, and gets no probe warning.
    annotate(
        &mut review_json,
        "ferrule.dev/skip-inbound-ports",
        json!("8080"),
    );
    let (pod, response) = inject(&review_json);
    assert_eq!(
        init_flag(&pod, "--skip-inbound-ports").as_deref(),
        Some("8080")
    );
    assert_eq!(
        init_flag(&pod, "--probe-ports").as_deref(),
        Some("8081,8082,9901")
    );
    assert!(response.get("warnings").is_none(), "{response:#}");

    annotate(
        &mut review_json,
        "ferrule.dev/skip-probe-ports",
        json!("false"),
    );
    let (pod, response) = inject(&review_json);
    assert_eq!(
        init_flag(&pod, "--skip-inbound-ports").as_deref(),
        Some("8080")
    );
    assert_eq!(init_flag(&pod, "--probe-ports"), None);
    assert_eq!(init_flag(&pod, "--probe-sources"), None);
    assert!(container(&pod, INIT_CONTAINER).get("env").is_none());
    assert!(response.get("warnings").is_none(), "no bypass, no warning");
}

#[test]
fn the_default_for_probe_ports_comes_from_the_config() {
    let mut cfg = cfg();
    cfg.defaults.skip_probe_ports = false;
    let response = respond(&parse(DEPLOYMENT), &cfg);
    let pod = apply(&parse(DEPLOYMENT), &ops(&response));
    assert_eq!(init_flag(&pod, "--skip-inbound-ports"), None);
    assert_eq!(init_flag(&pod, "--probe-ports"), None);
}

#[test]
fn classic_pods_get_the_primary_host_ip_only() {
    // Classic mode is for clusters before 1.29, whose API server may refuse
    // `status.hostIPs` (a feature gate until 1.29).
    let mut review_json = parse(DEPLOYMENT);
    annotate(
        &mut review_json,
        "ferrule.dev/sidecar-mode",
        json!("classic"),
    );
    let (pod, _) = inject(&review_json);
    assert_eq!(
        init_flag(&pod, "--probe-sources").as_deref(),
        Some("$(FERRULE_HOST_IP),gateway")
    );
    let init = container(&pod, INIT_CONTAINER);
    assert_eq!(field_ref(init, "FERRULE_HOST_IP"), Some("status.hostIP"));
    assert_eq!(field_ref(init, "FERRULE_HOST_IPS"), None);
    assert_eq!(init["env"].as_array().map(Vec::len), Some(1));
}

#[test]
fn probes_of_the_pods_own_native_sidecars_count_too() {
    let mut review_json = parse(JOB);
    review_json["request"]["object"]["spec"]["initContainers"][0]["restartPolicy"] =
        json!("Always");
    review_json["request"]["object"]["spec"]["initContainers"][0]["readinessProbe"] =
        json!({"tcpSocket": {"port": 7000}});
    // A probe with an explicit host goes elsewhere: not exempted.
    review_json["request"]["object"]["spec"]["containers"][0]["livenessProbe"] =
        json!({"httpGet": {"port": 7001, "host": "10.1.2.3", "path": "/"}});
    let (pod, _) = inject(&review_json);
    assert_eq!(init_flag(&pod, "--probe-ports").as_deref(), Some("7000"));
    assert_eq!(init_flag(&pod, "--skip-inbound-ports"), None);
}

#[test]
fn classic_sidecar_goes_first_in_containers_with_caveats() {
    let (pod, response) = with("ferrule.dev/sidecar-mode", "classic");
    assert_eq!(names(&pod["spec"]["initContainers"]), [INIT_CONTAINER]);
    assert_eq!(names(&pod["spec"]["containers"]), [PROXY_CONTAINER, "web"]);
    let proxy = container(&pod, PROXY_CONTAINER);
    assert!(proxy.get("restartPolicy").is_none(), "{proxy:#}");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready");
    // kubectl logs/exec keep defaulting to the app.
    assert_eq!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "web"
    );
    let w = response["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("classic") && w.contains("Jobs never complete"),
        "{w}"
    );

    // An existing default-container annotation is kept; existing init containers
    // follow ours.
    let mut review_json = parse(JOB);
    annotate(
        &mut review_json,
        "ferrule.dev/sidecar-mode",
        json!("classic"),
    );
    annotate(
        &mut review_json,
        "kubectl.kubernetes.io/default-container",
        json!("migrate"),
    );
    let (pod, _) = inject(&review_json);
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        [INIT_CONTAINER, "wait-for-db"]
    );
    assert_eq!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "migrate"
    );
}

#[test]
fn the_default_sidecar_mode_comes_from_the_config() {
    let mut cfg = cfg();
    cfg.defaults.sidecar = SidecarMode::Classic;
    let review_json = parse(BARE);
    let pod = apply(&review_json, &ops(&respond(&review_json, &cfg)));
    assert_eq!(names(&pod["spec"]["containers"]), [PROXY_CONTAINER, "web"]);
    // ... and the annotation overrides it.
    let mut review_json = parse(BARE);
    annotate(
        &mut review_json,
        "ferrule.dev/sidecar-mode",
        json!("native"),
    );
    let pod = apply(&review_json, &ops(&respond(&review_json, &cfg)));
    assert_eq!(names(&pod["spec"]["containers"]), ["web"]);
}

#[test]
fn every_bad_value_is_refused_naming_the_annotation() {
    let many = (1..=65)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let cases: &[(&str, Value)] = &[
        ("ferrule.dev/mode", json!("Strict")),
        ("ferrule.dev/mode", json!("strict ")),
        ("ferrule.dev/mode", json!("mtls")),
        ("ferrule.dev/log-level", json!("verbose")),
        ("ferrule.dev/log-level", json!("info,ferrule_proxy=trace")),
        ("ferrule.dev/sidecar-mode", json!("sidecar")),
        ("ferrule.dev/unmeshed-outbound", json!("allow")),
        ("ferrule.dev/skip-probe-ports", json!("yes")),
        ("ferrule.dev/skip-inbound-ports", json!("0")),
        ("ferrule.dev/skip-inbound-ports", json!("65536")),
        ("ferrule.dev/skip-inbound-ports", json!("http")),
        ("ferrule.dev/skip-inbound-ports", json!("80,,81")),
        ("ferrule.dev/skip-inbound-ports", json!("+80")),
        ("ferrule.dev/skip-inbound-ports", json!("8000-8010")),
        ("ferrule.dev/skip-inbound-ports", json!(many)),
        ("ferrule.dev/skip-outbound-ports", json!("-1")),
        ("ferrule.dev/skip-outbound-cidrs", json!("10.0.0.1/8")),
        ("ferrule.dev/skip-outbound-cidrs", json!("10.0.0.0/33")),
        (
            "ferrule.dev/skip-outbound-cidrs",
            json!("metadata.google.internal"),
        ),
        ("ferrule.dev/skip-outbound-cidrs", json!("10.0.0.0/+8")),
        ("ferrule.dev/skip-inbound-port", json!("22")),
        ("ferrule.dev/mode", json!(1)),
        ("ferrule.dev/skip-probe-ports", json!(false)),
    ];
    for (key, value) in cases {
        let mut review_json = parse(BARE);
        annotate(&mut review_json, key, value.clone());
        let (code, msg) = refused(&review_json, &cfg());
        assert_eq!(code, 422, "{key}={value}: {msg}");
        assert!(msg.contains(key), "{key}={value}: {msg}");
    }
}

#[test]
fn other_annotations_are_none_of_our_business() {
    let mut review_json = parse(BARE);
    annotate(&mut review_json, "example.com/ferrule.dev/mode", json!("x"));
    annotate(&mut review_json, "sidecar.istio.io/inject", json!("false"));
    let (pod, _) = inject(&review_json);
    assert_eq!(pod["metadata"]["annotations"][ANN_INJECTED], "true");
}
