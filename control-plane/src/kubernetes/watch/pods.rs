//! Pods → discovery: which pods are meshed, their IPs and identity.
//!
//! A pod is meshed when the injection webhook marked it (`ferrule.dev/injected:
//! "true"`). It is published while it has an IP and is not terminal: from sandbox
//! creation (`Pending` with an IP: with native sidecars the proxy starts during the init
//! phase) through `Running`, `Unknown` and termination, until it is `Succeeded` /
//! `Failed` (its IP may then go to another pod) or deleted. `hostNetwork` pods are never
//! published: their IP is the node's, shared with everything else on it.
//!
//! Its identity is `spiffe://<td>/ns/<namespace>/sa/<serviceAccountName>` (an empty
//! service account is Kubernetes' `default`), the identity the attestation issues to the
//! pod's proxy. Every IP of `status.podIPs` (IPv4 and IPv6) maps to it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use spiffe::{SpiffeId, TrustDomain};

use super::wire::{Object, ObjectMeta};
use super::{Sink, SinkError};
use crate::discovery::{KubernetesPod, Registry};

/// The annotation the injection webhook sets on pods it injected.
pub const INJECTED_ANNOTATION: &str = "ferrule.dev/injected";

/// The fields of a Pod the watcher reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpec>,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

/// `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still filled in by the API server.
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub containers: Option<Vec<Container>>,
    #[serde(default)]
    pub init_containers: Option<Vec<Container>>,
}

/// One entry of `spec.containers` or `spec.initContainers`: its ports, for Services'
/// named `targetPort`s.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub ports: Option<Vec<ContainerPort>>,
    /// `Always` marks a sidecar among the init containers.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

/// One entry of a container's `ports`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
}

/// One entry of `status.podIPs`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodIp {
    #[serde(default)]
    pub ip: Option<String>,
}

impl Object for Pod {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// Why a pod is not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// No `ferrule.dev/injected: "true"`: not in the mesh.
    #[error("not injected")]
    NotInjected,
    /// `hostNetwork: true`: the IP is the node's.
    #[error("uses the host network")]
    HostNetwork,
    /// `Succeeded` or `Failed`: its IP may be reused.
    #[error("phase {0}")]
    Terminal(String),
    /// No IP yet (or any more).
    #[error("no IP")]
    NoAddress,
    /// An IP that does not parse, or is unspecified/multicast.
    #[error("bad IP {0:?}")]
    BadAddress(String),
    /// The namespace or service account do not make a SPIFFE ID.
    #[error("no valid identity: {0}")]
    BadIdentity(String),
}

/// The discovery entry of `pod`, or why it has none.
pub fn meshed_pod(
    pod: &Pod,
    trust_domain: &TrustDomain,
    inbound_port: u16,
) -> Result<KubernetesPod, Skip> {
    let meta = &pod.metadata;
    if meta
        .annotations
        .get(INJECTED_ANNOTATION)
        .map(String::as_str)
        != Some("true")
    {
        return Err(Skip::NotInjected);
    }
    let (no_spec, no_status) = (PodSpec::default(), PodStatus::default());
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    if spec.host_network == Some(true) {
        return Err(Skip::HostNetwork);
    }
    let status = pod.status.as_ref().unwrap_or(&no_status);
    if let Some(phase) = status.phase.as_deref()
        && matches!(phase, "Succeeded" | "Failed")
    {
        return Err(Skip::Terminal(phase.to_string()));
    }
    let mut raw: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.as_deref())
        .collect();
    if raw.is_empty()
        && let Some(ip) = status.pod_ip.as_deref()
    {
        raw.push(ip);
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    for s in raw.into_iter().filter(|s| !s.is_empty()) {
        let ip = s
            .parse::<IpAddr>()
            .map_err(|_| Skip::BadAddress(s.to_string()))?
            .to_canonical();
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(Skip::BadAddress(s.to_string()));
        }
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    if addresses.is_empty() {
        return Err(Skip::NoAddress);
    }
    let sa = [&spec.service_account_name, &spec.service_account]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .map_or("default", String::as_str);
    let spiffe_id = identity(trust_domain, &meta.namespace, sa)?;
    Ok(KubernetesPod {
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        spiffe_id,
        service: sa.to_string(),
        addresses,
        inbound_port,
        created: meta.creation_timestamp.clone(),
        labels: meta.labels.clone(),
        named_ports: named_ports(spec),
    })
}

/// The pod's named TCP container ports, as kube-proxy's endpoints resolve a Service's
/// named `targetPort`: the app containers first, then sidecars (init containers with
/// `restartPolicy: Always`); the first container declaring a name wins.
fn named_ports(spec: &PodSpec) -> BTreeMap<String, u16> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut named = BTreeMap::new();
    for c in spec.containers.iter().flatten().chain(sidecars) {
        for p in c.ports.iter().flatten() {
            let tcp = p.protocol.as_deref().is_none_or(|proto| proto == "TCP");
            let number = p
                .container_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0);
            if let (true, Some(name), Some(number)) = (tcp, p.name.as_ref(), number)
                && !name.is_empty()
            {
                named.entry(name.clone()).or_insert(number);
            }
        }
    }
    named
}

/// `spiffe://<td>/ns/<namespace>/sa/<service-account>`, refusing what would not be a
/// valid SPIFFE ID or service name.
pub fn identity(td: &TrustDomain, namespace: &str, sa: &str) -> Result<SpiffeId, Skip> {
    if namespace.is_empty() {
        return Err(Skip::BadIdentity("no namespace".into()));
    }
    crate::discovery::validate_service(sa).map_err(Skip::BadIdentity)?;
    SpiffeId::from_segments(td.clone(), &["ns", namespace, "sa", sa]).map_err(|e| {
        Skip::BadIdentity(format!(
            "namespace {namespace:?}, service account {sa:?}: {e}"
        ))
    })
}

/// Applies pods to the registry.
pub struct PodSink {
    registry: Arc<Registry>,
    trust_domain: TrustDomain,
    inbound_port: u16,
}

impl PodSink {
    /// A sink feeding `registry`.
    pub fn new(registry: Arc<Registry>, trust_domain: TrustDomain, inbound_port: u16) -> Self {
        Self {
            registry,
            trust_domain,
            inbound_port,
        }
    }

    fn log_skip(pod: &Pod, skip: &Skip) {
        if *skip != Skip::NotInjected {
            tracing::debug!(
                namespace = %pod.metadata.namespace,
                pod = %pod.metadata.name,
                reason = %skip,
                "injected pod not in discovery"
            );
        }
    }
}

impl Sink for PodSink {
    type Object = Pod;
    const RESOURCE: &'static str = "pods";
    const PATH: &'static str = "/api/v1/pods";

    fn replace(&mut self, pods: Vec<Pod>) -> Result<(), SinkError> {
        let mut meshed = Vec::new();
        for pod in &pods {
            match meshed_pod(pod, &self.trust_domain, self.inbound_port) {
                Ok(p) => meshed.push(p),
                Err(skip) => Self::log_skip(pod, &skip),
            }
        }
        let n = meshed.len();
        if self.registry.replace_kubernetes_pods(meshed) {
            tracing::info!(
                resource = Self::RESOURCE,
                meshed = n,
                listed = pods.len(),
                "discovery reconciled with the pod list"
            );
        }
        Ok(())
    }

    fn upsert(&mut self, pod: Pod) -> Result<(), SinkError> {
        match meshed_pod(&pod, &self.trust_domain, self.inbound_port) {
            Ok(p) => {
                let (ns, name, id, addrs) = (
                    p.namespace.clone(),
                    p.name.clone(),
                    p.spiffe_id.clone(),
                    p.addresses.clone(),
                );
                if self.registry.upsert_kubernetes_pod(p) {
                    tracing::info!(namespace = %ns, pod = %name, spiffe_id = %id, addresses = ?addrs, "pod in discovery");
                }
            }
            Err(skip) => {
                Self::log_skip(&pod, &skip);
                let m = &pod.metadata;
                if self.registry.remove_kubernetes_pod(&m.namespace, &m.name) {
                    tracing::info!(namespace = %m.namespace, pod = %m.name, reason = %skip, "pod left discovery");
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, pod: Pod) -> Result<(), SinkError> {
        let m = &pod.metadata;
        if self.registry.remove_kubernetes_pod(&m.namespace, &m.name) {
            tracing::info!(namespace = %m.namespace, pod = %m.name, reason = "deleted", "pod left discovery");
        }
        Ok(())
    }

    fn tracked(&self) -> (usize, usize) {
        (self.registry.kubernetes_pod_count(), 0)
    }
}
