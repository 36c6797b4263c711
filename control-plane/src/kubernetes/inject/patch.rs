//! Deciding what to do with one pod, and the JSON Patch (RFC 6902) that does it.
//!
//! Every check that can refuse runs before anything is built, so a refused pod never
//! gets a partial patch. Patch operations only `add`: at an index (`/0`) to put our
//! init containers first, at `-` to append volumes, or the whole member when the pod
//! has none yet (a JSON Patch `add` to `/spec/volumes/-` fails if the array is absent).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use spiffe::SpiffeId;

use super::options::{self, PodOptions, SidecarMode};
use super::probes::{declared_ports, probe_ports};
use super::spec::{self, PORT_NAMES, VOLUMES};
use super::{
    ADMIN_PORT, ANN_INJECT, ANN_INJECTED, ANN_PROXY_CONFIG, ANN_TRUST_BUNDLE, INBOUND_PORT,
    INIT_CONTAINER, InjectConfig, OUTBOUND_PORT, PROXY_CONTAINER, PROXY_UID,
};

/// `kubectl logs`/`exec` pick this container by default (classic mode puts ours first).
const ANN_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Why a pod is refused: the HTTP-like code and message of the AdmissionResponse status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// 400 for a malformed request, 422 for a pod we cannot inject safely, 500 for our
    /// own state.
    pub code: u16,
    /// What is wrong, naming the field or annotation.
    pub message: String,
}

impl Refusal {
    pub(super) fn malformed(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            message: message.into(),
        }
    }
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: 422,
            message: message.into(),
        }
    }
}

impl From<options::AnnotationError> for Refusal {
    fn from(e: options::AnnotationError) -> Self {
        Self::invalid(e.to_string())
    }
}

/// The decision for an admissible pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Inject: apply `ops`; tell the user `warnings`.
    Inject {
        /// The JSON Patch operations.
        ops: Vec<Value>,
        /// Admission warnings (shown by kubectl).
        warnings: Vec<String>,
        /// The identity the proxy will request.
        spiffe_id: String,
    },
    /// Leave the pod alone (opted out, or already injected).
    Unchanged {
        /// Why, for the log.
        reason: &'static str,
    },
}

fn array<'a>(spec: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], Refusal> {
    match spec.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(Refusal::malformed(format!(
            "object.spec.{key} is not an array"
        ))),
    }
}

fn name_of(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// JSON Pointer escaping of one reference token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Decides and builds the mutation of `pod` (the AdmissionRequest's `object`) created
/// in `namespace`, with `bundle_pem` as the proxy's bootstrap trust bundle.
pub fn mutate(
    pod: &Value,
    namespace: &str,
    cfg: &InjectConfig,
    bundle_pem: &str,
) -> Result<Mutation, Refusal> {
    let meta = pod
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::malformed("object.metadata is missing"))?;
    let empty = Map::new();
    let annotations = match meta.get("annotations") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Refusal::malformed(
                "object.metadata.annotations is not an object",
            ));
        }
    };
    let annotation = |key: &str| -> Result<Option<&str>, Refusal> {
        match annotations.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Refusal::invalid(format!(
                "annotation {key}: the value must be a string"
            ))),
        }
    };
    if let Some(v) = annotation(ANN_INJECT)?
        && !options::boolean(ANN_INJECT, v)?
    {
        return Ok(Mutation::Unchanged {
            reason: "opted out",
        });
    }
    let spec = pod
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::malformed("object.spec is missing"))?;
    let inits = array(spec, "initContainers")?;
    let containers = array(spec, "containers")?;
    if containers.is_empty() {
        return Err(Refusal::malformed("object.spec.containers is empty"));
    }
    let all = || inits.iter().chain(containers);
    let has_proxy = all().any(|c| name_of(c) == PROXY_CONTAINER);
    if let Some(v) = annotation(ANN_INJECTED)? {
        if v == "true" && has_proxy {
            return Ok(Mutation::Unchanged {
                reason: "already injected",
            });
        }
        return Err(Refusal::invalid(format!(
            "annotation {ANN_INJECTED}: {v:?} on a pod without a {PROXY_CONTAINER} container; \
             only the webhook sets it (remove it, or opt out with {ANN_INJECT}: \"false\")"
        )));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(Refusal::invalid(format!(
            "spec.hostNetwork: a host-network pod cannot be injected (the redirect rules \
             would apply to the node); opt out with {ANN_INJECT}: \"false\""
        )));
    }
    if spec
        .get("os")
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
        == Some("windows")
    {
        return Err(Refusal::invalid(format!(
            "spec.os.name: windows pods cannot be injected; opt out with {ANN_INJECT}: \"false\""
        )));
    }
    let opts = PodOptions::from_annotations(annotations, &cfg.defaults)?;
    check_conflicts(spec, inits, containers)?;
    if bundle_pem.trim().is_empty() {
        return Err(Refusal {
            code: 500,
            message: "the control plane has no trust bundle to give the proxy".into(),
        });
    }

    let sa = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| {
            spec.get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default");
    let spiffe_id = SpiffeId::from_segments(cfg.trust_domain.clone(), &["ns", namespace, "sa", sa])
        .map_err(|e| {
            Refusal::invalid(format!(
                "namespace {namespace:?} / service account {sa:?} make no valid SPIFFE ID: {e}"
            ))
        })?
        .to_string();

    // The kubelet probes the app containers and the pod's own native sidecars. Their
    // ports are exempted from inbound capture for the node's addresses only; a port the
    // annotation already skips for everyone needs nothing more.
    let mut warnings = Vec::new();
    let mut probe = BTreeSet::new();
    if opts.skip_probe_ports {
        let sidecars = inits
            .iter()
            .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"));
        for p in probe_ports(containers.iter().chain(sidecars)) {
            if [ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT].contains(&p.port)
                || opts.skip_inbound_ports.contains(&p.port)
            {
                continue;
            }
            if p.declared {
                warnings.push(format!(
                    "ferrule: port {} ({}) accepts plaintext without authorization from the \
                     node (kubelet probes; also host-network pods on that node); use a \
                     dedicated probe port or {}: \"false\"",
                    p.port,
                    p.source,
                    options::ANN_SKIP_PROBES
                ));
            }
            probe.insert(p.port);
        }
    }
    if opts.sidecar == SidecarMode::Classic {
        warnings.push(
            "ferrule: classic sidecar: the app may start before the proxy, init containers \
             get no mesh network, Jobs never complete"
                .into(),
        );
    }

    let inj = spec::build(cfg, &opts, &probe, &spiffe_id);
    let mut ops = Vec::new();
    let ours: Vec<Value> = match opts.sidecar {
        SidecarMode::Native => vec![inj.init, inj.proxy.clone()],
        SidecarMode::Classic => vec![inj.init],
    };
    if inits.is_empty() {
        // Absent, null or []: `add` creates or replaces the member.
        ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": ours}));
    } else {
        for (i, c) in ours.into_iter().enumerate() {
            ops.push(json!({"op": "add", "path": format!("/spec/initContainers/{i}"), "value": c}));
        }
    }
    if opts.sidecar == SidecarMode::Classic {
        ops.push(json!({"op": "add", "path": "/spec/containers/0", "value": inj.proxy}));
    }
    match spec.get("volumes") {
        Some(Value::Array(v)) if !v.is_empty() => {
            for vol in inj.volumes {
                ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": vol}));
            }
        }
        _ => ops.push(json!({"op": "add", "path": "/spec/volumes", "value": inj.volumes})),
    }
    let mut add = vec![
        (ANN_INJECTED, "true".to_string()),
        (ANN_TRUST_BUNDLE, bundle_pem.to_string()),
        (ANN_PROXY_CONFIG, inj.proxy_config),
    ];
    if opts.sidecar == SidecarMode::Classic && !annotations.contains_key(ANN_DEFAULT_CONTAINER) {
        add.push((ANN_DEFAULT_CONTAINER, name_of(&containers[0]).to_string()));
    }
    if meta.get("annotations").is_some_and(Value::is_object) {
        for (k, v) in add {
            ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(k)), "value": v}));
        }
    } else {
        let map: Map<String, Value> = add.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": map}));
    }
    Ok(Mutation::Inject {
        ops,
        warnings,
        spiffe_id,
    })
}

/// Refuses pods whose names, ports or uids collide with what we add.
fn check_conflicts(
    spec: &Map<String, Value>,
    inits: &[Value],
    containers: &[Value],
) -> Result<(), Refusal> {
    let all = || inits.iter().chain(containers);
    for c in all() {
        let name = name_of(c);
        if name == INIT_CONTAINER || name == PROXY_CONTAINER {
            return Err(Refusal::invalid(format!(
                "container name {name:?} is reserved for the Ferrule sidecar"
            )));
        }
        for (port_name, port) in declared_ports(c) {
            if [ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT].contains(&port) {
                return Err(Refusal::invalid(format!(
                    "container {name:?} declares port {port}, which the Ferrule proxy uses \
                     ({ADMIN_PORT}, {OUTBOUND_PORT}, {INBOUND_PORT})"
                )));
            }
            if PORT_NAMES.contains(&port_name.as_str()) {
                return Err(Refusal::invalid(format!(
                    "container {name:?} declares port name {port_name:?}, reserved for the Ferrule proxy"
                )));
            }
        }
    }
    for v in array(spec, "volumes")? {
        let name = name_of(v);
        if VOLUMES.contains(&name) {
            return Err(Refusal::invalid(format!(
                "volume name {name:?} is reserved for the Ferrule sidecar"
            )));
        }
    }
    // A process running as the proxy's uid is exempt from the redirect rules: it would
    // bypass the mesh entirely.
    let pod_uid = spec
        .get("securityContext")
        .and_then(|s| s.get("runAsUser"))
        .and_then(Value::as_u64);
    for c in all() {
        let uid = c
            .pointer("/securityContext/runAsUser")
            .and_then(Value::as_u64)
            .or(pod_uid);
        if uid == Some(u64::from(PROXY_UID)) {
            return Err(Refusal::invalid(format!(
                "container {:?} runs as uid {PROXY_UID}, the proxy's uid, which the redirect \
                 rules exempt: its traffic would bypass the mesh; use another uid",
                name_of(c)
            )));
        }
    }
    Ok(())
}
