//! The objects the webhook adds to a pod: the `ferrule-init` and `ferrule-proxy`
//! containers, their volumes, and the proxy's config file. Plain JSON values, in the
//! shape of the Kubernetes `core/v1` API (field names as the API server writes them).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::options::{PodOptions, SidecarMode};
use super::{
    ADMIN_PORT, ANN_PROXY_CONFIG, ANN_TRUST_BUNDLE, INBOUND_PORT, INIT_CONTAINER, InjectConfig,
    PROXY_CONTAINER, PROXY_UID, Resources,
};

/// Volume: memory-backed runtime state.
pub const VOL_RUN: &str = "ferrule-run";
/// Volume: the projected service-account token.
pub const VOL_TOKEN: &str = "ferrule-token";
/// Volume: bundle and config file from the pod's annotations (downward API).
pub const VOL_CONFIG: &str = "ferrule-config";
/// Every volume name the webhook adds.
pub const VOLUMES: [&str; 3] = [VOL_RUN, VOL_TOKEN, VOL_CONFIG];
/// Port names the proxy declares (must be unique in the pod).
pub const PORT_NAMES: [&str; 2] = ["ferrule-admin", "ferrule-mesh"];

/// Where the projected token is mounted, and the file the proxy reads.
pub const TOKEN_DIR: &str = "/var/run/secrets/ferrule";
/// The token file (`FERRULE_SA_TOKEN_FILE`).
pub const TOKEN_FILE: &str = "/var/run/secrets/ferrule/token";
/// Where the downward-API files are mounted.
pub const CONFIG_DIR: &str = "/etc/ferrule";
/// Size cap of the memory-backed runtime volume.
const RUN_SIZE_LIMIT: &str = "16Mi";
/// `ferrule-init`'s variable holding the node's primary address (`status.hostIP`).
pub const ENV_HOST_IP: &str = "FERRULE_HOST_IP";
/// `ferrule-init`'s variable holding all the node's addresses (`status.hostIPs`,
/// comma-separated; native mode only, see [`probe_sources`]).
pub const ENV_HOST_IPS: &str = "FERRULE_HOST_IPS";

/// What to add to one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// `ferrule-init`.
    pub init: Value,
    /// `ferrule-proxy` (with `restartPolicy: Always` in native mode).
    pub proxy: Value,
    /// The three volumes.
    pub volumes: Vec<Value>,
    /// Contents of `proxy.yaml` (stored in the `ferrule.dev/proxy-config` annotation).
    pub proxy_config: String,
}

/// Builds the containers and volumes for a pod whose identity is `spiffe_id`, with the
/// final options and the kubelet probe ports to exempt for the node only.
pub fn build(
    cfg: &InjectConfig,
    opts: &PodOptions,
    probe_ports: &BTreeSet<u16>,
    spiffe_id: &str,
) -> Injection {
    Injection {
        init: init_container(cfg, opts, probe_ports),
        proxy: proxy_container(cfg, opts, spiffe_id),
        volumes: volumes(cfg),
        proxy_config: proxy_config(opts),
    }
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn resources(r: &Resources) -> Value {
    let pick = |cpu: &str, mem: &str| {
        let mut m = serde_json::Map::new();
        if !cpu.is_empty() {
            m.insert("cpu".into(), json!(cpu));
        }
        if !mem.is_empty() {
            m.insert("memory".into(), json!(mem));
        }
        Value::Object(m)
    };
    json!({
        "requests": pick(&r.cpu_request, &r.memory_request),
        "limits": pick(&r.cpu_limit, &r.memory_limit),
    })
}

/// `--probe-sources` of `ferrule-init`: the node's addresses from the downward API
/// (Kubernetes expands `$(VAR)` in `args`) and `gateway`, the node's address on the pod
/// link with bridge and point-to-point CNIs (see `ferrule_proxy::intercept::probe`).
/// `status.hostIPs` only in native mode: the API server refuses the field before 1.29
/// (1.28: `PodHostIPs` feature gate), and native sidecars need 1.29 anyway. An empty
/// variable leaves an empty entry, which `init` ignores: no address, no exemption.
pub fn probe_sources(sidecar: SidecarMode) -> String {
    match sidecar {
        SidecarMode::Native => format!("$({ENV_HOST_IP}),$({ENV_HOST_IPS}),gateway"),
        SidecarMode::Classic => format!("$({ENV_HOST_IP}),gateway"),
    }
}

fn field_env(name: &str, field: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field}}})
}

/// `ferrule-proxy init` with the pod's skip lists and probe ports. Root with NET_ADMIN +
/// NET_RAW only: see the module docs for why it cannot be non-root.
fn init_container(cfg: &InjectConfig, opts: &PodOptions, probe_ports: &BTreeSet<u16>) -> Value {
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
    ];
    let mut flag = |name: &str, value: String| {
        if !value.is_empty() {
            args.push(name.to_string());
            args.push(value);
        }
    };
    flag("--skip-inbound-ports", join(&opts.skip_inbound_ports));
    flag("--skip-outbound-ports", join(&opts.skip_outbound_ports));
    flag("--skip-cidrs", opts.skip_outbound_cidrs.join(","));
    let mut env = Vec::new();
    if !probe_ports.is_empty() {
        flag("--probe-ports", join(probe_ports));
        flag("--probe-sources", probe_sources(opts.sidecar));
        env.push(field_env(ENV_HOST_IP, "status.hostIP"));
        if opts.sidecar == SidecarMode::Native {
            env.push(field_env(ENV_HOST_IPS, "status.hostIPs"));
        }
    }
    let mut c = json!({
        "name": INIT_CONTAINER,
        "image": cfg.proxy_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": args,
        "resources": resources(&cfg.init_resources),
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if !env.is_empty()
        && let Some(m) = c.as_object_mut()
    {
        m.insert("env".into(), Value::Array(env));
    }
    c
}

fn http_probe(path: &str, period: u32, failures: u32) -> Value {
    json!({
        "httpGet": {"path": path, "port": ADMIN_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    })
}

fn proxy_container(cfg: &InjectConfig, opts: &PodOptions, spiffe_id: &str) -> Value {
    let admin = std::net::SocketAddr::new(cfg.admin_address, ADMIN_PORT);
    let env = json!([
        {"name": "FERRULE_TRUST_DOMAIN", "value": cfg.trust_domain.to_string()},
        {"name": "FERRULE_CONTROL_PLANE", "value": cfg.control_plane},
        {"name": "FERRULE_SPIFFE_ID", "value": spiffe_id},
        {"name": "FERRULE_SA_TOKEN_FILE", "value": TOKEN_FILE},
        {"name": "FERRULE_BUNDLE_FILE", "value": format!("{CONFIG_DIR}/bundle.pem")},
        {"name": "FERRULE_CONFIG", "value": format!("{CONFIG_DIR}/proxy.yaml")},
        {"name": "FERRULE_ADMIN_LISTEN", "value": admin.to_string()},
        {"name": "RUST_LOG", "value": opts.log_level.as_str()},
    ]);
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": cfg.proxy_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": ["run"],
        "env": env,
        "ports": [
            {"name": PORT_NAMES[0], "containerPort": ADMIN_PORT, "protocol": "TCP"},
            {"name": PORT_NAMES[1], "containerPort": INBOUND_PORT, "protocol": "TCP"},
        ],
        // Up to 5 minutes to obtain a first certificate; the next containers wait for it.
        "startupProbe": http_probe("/ready", 1, 300),
        "readinessProbe": http_probe("/ready", 5, 3),
        "livenessProbe": http_probe("/live", 10, 3),
        "resources": resources(&cfg.proxy_resources),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": VOL_RUN, "mountPath": "/run/ferrule"},
            {"name": VOL_TOKEN, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": VOL_CONFIG, "mountPath": CONFIG_DIR, "readOnly": true},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if opts.sidecar == SidecarMode::Native
        && let Some(m) = c.as_object_mut()
    {
        m.insert("restartPolicy".into(), json!("Always"));
    }
    c
}

fn volumes(cfg: &InjectConfig) -> Vec<Value> {
    let annotation = |key: &str| json!({"fieldPath": format!("metadata.annotations['{key}']")});
    vec![
        json!({"name": VOL_RUN, "emptyDir": {"medium": "Memory", "sizeLimit": RUN_SIZE_LIMIT}}),
        json!({"name": VOL_TOKEN, "projected": {"sources": [{"serviceAccountToken": {
            "audience": cfg.token_audience,
            "expirationSeconds": cfg.token_expiration_seconds,
            "path": "token",
        }}]}}),
        json!({"name": VOL_CONFIG, "downwardAPI": {"items": [
            {"path": "bundle.pem", "fieldRef": annotation(ANN_TRUST_BUNDLE)},
            {"path": "proxy.yaml", "fieldRef": annotation(ANN_PROXY_CONFIG)},
        ]}}),
    ]
}

/// The proxy's data-path config (`proxy/src/config/file.rs`): transparent mode, the
/// pod's inbound default and unmeshed-outbound choice; everything else the defaults.
fn proxy_config(opts: &PodOptions) -> String {
    format!(
        "# Written by the Ferrule injection webhook.\nmode: transparent\ninbound:\n  default_mode: {}\noutbound:\n  unmeshed: {}\n",
        if opts.permissive {
            "permissive"
        } else {
            "strict"
        },
        if opts.unmeshed_passthrough {
            "passthrough"
        } else {
            "refuse"
        },
    )
}
