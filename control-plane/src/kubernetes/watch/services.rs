//! Services → discovery: every ClusterIP of a Service whose meshed backends share one
//! identity maps to it (see `discovery::kubernetes::services` for the rule and why).
//!
//! Read from `spec` (Service API reference): `type` (`ExternalName` services have no
//! ClusterIP: skipped), `clusterIPs` (falling back to `clusterIP`; `None` marks a
//! headless Service, whose DNS name resolves to the pod IPs, already in discovery:
//! skipped), `selector`, and `ports` (`port`, `protocol`, `targetPort`). Only TCP ports
//! are meshed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::wire::{Object, ObjectMeta};
use super::{Sink, SinkError};
use crate::discovery::{KubernetesService, Registry, TargetPort};

/// The fields of a Service the watcher reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<ServiceSpec>,
}

/// `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    #[serde(default)]
    pub selector: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub ports: Option<Vec<ServicePort>>,
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
    /// An integer or a named container port (IntOrString).
    #[serde(default)]
    pub target_port: Option<serde_json::Value>,
}

impl Object for Service {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// Why a Service has no ClusterIPs to consider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceSkip {
    /// `type: ExternalName`: a DNS alias, no ClusterIP.
    #[error("ExternalName")]
    ExternalName,
    /// `clusterIP: None`: headless, its name resolves to the pod IPs.
    #[error("headless")]
    Headless,
    /// No ClusterIP (yet).
    #[error("no ClusterIP")]
    NoClusterIp,
    /// A ClusterIP that does not parse, or is unspecified/multicast.
    #[error("bad ClusterIP {0:?}")]
    BadAddress(String),
}

/// The discovery view of `svc`, or why it has none. Its backing (one identity or not)
/// is decided by the registry against the pods.
pub fn cluster_service(svc: &Service) -> Result<KubernetesService, ServiceSkip> {
    let no_spec = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&no_spec);
    if spec.kind.as_deref() == Some("ExternalName") {
        return Err(ServiceSkip::ExternalName);
    }
    let mut raw: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if raw.is_empty()
        && let Some(ip) = spec.cluster_ip.as_deref()
    {
        raw.push(ip);
    }
    raw.retain(|s| !s.is_empty());
    if raw.contains(&"None") {
        return Err(ServiceSkip::Headless);
    }
    let mut cluster_ips: Vec<IpAddr> = Vec::new();
    for s in raw {
        let ip = s
            .parse::<IpAddr>()
            .map_err(|_| ServiceSkip::BadAddress(s.to_string()))?
            .to_canonical();
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(ServiceSkip::BadAddress(s.to_string()));
        }
        if !cluster_ips.contains(&ip) {
            cluster_ips.push(ip);
        }
    }
    if cluster_ips.is_empty() {
        return Err(ServiceSkip::NoClusterIp);
    }
    let mut ports = Vec::new();
    let mut target_ports = BTreeMap::new();
    for p in spec.ports.iter().flatten() {
        // Protocol defaults to TCP; UDP and SCTP never reach the mesh.
        if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
            continue;
        }
        let Some(port) = p
            .port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
        else {
            continue;
        };
        if ports.contains(&port) {
            continue;
        }
        // A targetPort the API server would not accept leaves the port out (closed).
        let Some(target) = target_port(p.target_port.as_ref(), port) else {
            tracing::warn!(namespace = %svc.metadata.namespace, service = %svc.metadata.name, port, target_port = ?p.target_port, "Service port with an invalid targetPort left out of discovery");
            continue;
        };
        ports.push(port);
        if target != TargetPort::Number(port) {
            target_ports.insert(port, target);
        }
    }
    ports.sort_unstable();
    Ok(KubernetesService {
        namespace: svc.metadata.namespace.clone(),
        name: svc.metadata.name.clone(),
        cluster_ips,
        selector: spec.selector.clone().unwrap_or_default(),
        ports,
        target_ports,
    })
}

/// A Service port's `targetPort` (IntOrString): absent, `0` and `""` default to the
/// Service port (as the API server defaults them); `None` for what is neither a port
/// number nor a name.
fn target_port(v: Option<&serde_json::Value>, port: u16) -> Option<TargetPort> {
    match v {
        None | Some(serde_json::Value::Null) => Some(TargetPort::Number(port)),
        Some(serde_json::Value::Number(n)) => match n.as_u64().map(u16::try_from) {
            Some(Ok(0)) => Some(TargetPort::Number(port)),
            Some(Ok(t)) => Some(TargetPort::Number(t)),
            _ => None,
        },
        Some(serde_json::Value::String(s)) if s.is_empty() => Some(TargetPort::Number(port)),
        Some(serde_json::Value::String(s)) => Some(TargetPort::Name(s.clone())),
        Some(_) => None,
    }
}

/// Applies Services to the registry.
pub struct ServiceSink {
    registry: Arc<Registry>,
}

impl ServiceSink {
    /// A sink feeding `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

impl Sink for ServiceSink {
    type Object = Service;
    const RESOURCE: &'static str = "services";
    const PATH: &'static str = "/api/v1/services";

    fn replace(&mut self, services: Vec<Service>) -> Result<(), SinkError> {
        let kept: Vec<KubernetesService> = services
            .iter()
            .filter_map(|s| cluster_service(s).ok())
            .collect();
        let n = kept.len();
        if self.registry.replace_kubernetes_services(kept) {
            tracing::info!(
                resource = Self::RESOURCE,
                with_cluster_ips = n,
                listed = services.len(),
                "discovery reconciled with the Service list"
            );
        }
        Ok(())
    }

    fn upsert(&mut self, svc: Service) -> Result<(), SinkError> {
        match cluster_service(&svc) {
            Ok(s) => {
                self.registry.upsert_kubernetes_service(s);
            }
            Err(skip) => {
                let m = &svc.metadata;
                if self
                    .registry
                    .remove_kubernetes_service(&m.namespace, &m.name)
                {
                    tracing::info!(namespace = %m.namespace, service = %m.name, reason = %skip, "Service left discovery");
                }
            }
        }
        Ok(())
    }

    fn remove(&mut self, svc: Service) -> Result<(), SinkError> {
        let m = &svc.metadata;
        if self
            .registry
            .remove_kubernetes_service(&m.namespace, &m.name)
        {
            tracing::info!(namespace = %m.namespace, service = %m.name, reason = "deleted", "Service left discovery");
        }
        Ok(())
    }

    /// (Services whose ClusterIPs are published, Services left out because their meshed
    /// backends have several identities).
    fn tracked(&self) -> (usize, usize) {
        self.registry.kubernetes_service_counts()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::kubernetes::watch::{Cursor, Next};

    /// A Service as the API server returns it (fields from the Service API reference).
    fn service(name: &str, rv: &str, spec: Value) -> Value {
        json!({"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "prod", "resourceVersion": rv,
                "uid": "u", "creationTimestamp": "2025-01-02T03:04:05Z"},
            "spec": spec})
    }

    fn parse(spec: Value) -> Result<KubernetesService, ServiceSkip> {
        cluster_service(&serde_json::from_value(service("s", "1", spec)).unwrap())
    }

    #[test]
    fn which_services_have_cluster_ips() {
        let s = parse(json!({"type": "ClusterIP", "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:96::a"], "selector": {"app": "api"},
            "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
                      {"port": 9090, "targetPort": "metrics"},
                      {"port": 53, "protocol": "UDP"},
                      {"port": 70000}]}))
        .unwrap();
        assert_eq!(s.cluster_ips.len(), 2);
        assert_eq!(s.ports, [80, 9090], "TCP ports only, in range");
        assert_eq!(
            s.target_ports,
            BTreeMap::from([(9090, TargetPort::Name("metrics".into()))]),
            "named targetPort; 80 -> 80 is no mapping"
        );
        assert_eq!(s.selector.get("app").map(String::as_str), Some("api"));
        assert_eq!(s.mesh_name(), "s.prod.svc");
        // clusterIP alone (older servers), no selector, no ports, LoadBalancer.
        let s = parse(json!({"type": "LoadBalancer", "clusterIP": "10.96.0.11"})).unwrap();
        assert_eq!(s.cluster_ips, ["10.96.0.11".parse::<IpAddr>().unwrap()]);
        assert!(s.selector.is_empty() && s.ports.is_empty());
        assert_eq!(
            parse(json!({"clusterIP": "None", "clusterIPs": ["None"]})).unwrap_err(),
            ServiceSkip::Headless
        );
        assert_eq!(
            parse(json!({"type": "ExternalName", "externalName": "db.example"})).unwrap_err(),
            ServiceSkip::ExternalName
        );
        assert_eq!(parse(json!({})).unwrap_err(), ServiceSkip::NoClusterIp);
        assert_eq!(parse(Value::Null).unwrap_err(), ServiceSkip::NoClusterIp);
        assert!(matches!(
            parse(json!({"clusterIP": "0.0.0.0"})),
            Err(ServiceSkip::BadAddress(_))
        ));
        assert!(matches!(
            parse(json!({"clusterIPs": ["nope"]})),
            Err(ServiceSkip::BadAddress(_))
        ));
    }

    #[test]
    fn target_ports_decode() {
        let s = parse(json!({"clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "targetPort": 8080},
                      {"port": 81, "targetPort": 0},
                      {"port": 82, "targetPort": ""},
                      {"port": 83, "targetPort": 70000},
                      {"port": 84, "targetPort": -1},
                      {"port": 85, "targetPort": true},
                      {"port": 86, "targetPort": "web"}]}))
        .unwrap();
        assert_eq!(
            s.ports,
            [80, 81, 82, 86],
            "invalid targetPorts leave the port out"
        );
        assert_eq!(
            s.target_ports,
            BTreeMap::from([
                (80, TargetPort::Number(8080)),
                (86, TargetPort::Name("web".into()))
            ]),
            "0 and \"\" default to the Service port"
        );
    }

    fn published(r: &Registry) -> Vec<(String, u16, String)> {
        let mut v: Vec<_> = r
            .snapshot()
            .workloads
            .iter()
            .map(|w| {
                (
                    w.address.to_string(),
                    w.inbound_port,
                    w.spiffe_id.to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn event(kind: &str, object: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap()
    }

    #[test]
    fn the_cursor_follows_services() {
        let registry = Arc::new(Registry::new(Duration::from_secs(60)));
        let td = spiffe::TrustDomain::new("td").unwrap();
        let mut pods = super::super::PodSink::new(registry.clone(), td, 15006);
        let pod: super::super::Pod = serde_json::from_value(json!({
            "metadata": {"name": "api-1", "namespace": "prod", "labels": {"app": "api"},
                "annotations": {"ferrule.dev/injected": "true"}},
            "spec": {"serviceAccountName": "api"},
            "status": {"phase": "Running", "podIP": "10.1.0.5"}}))
        .unwrap();
        pods.replace(vec![pod]).unwrap();
        let mut sink = ServiceSink::new(registry.clone());
        let mut cursor = Cursor::default();
        let api = json!({"clusterIPs": ["10.96.0.10"], "selector": {"app": "api"},
            "ports": [{"port": 8080}]});
        cursor
            .apply_list(
                &mut sink,
                vec![service("api", "5", api.clone()), json!({"spec": 7})],
                "10".into(),
            )
            .unwrap();
        const ID: &str = "spiffe://td/ns/prod/sa/api";
        let with_cluster_ip = vec![
            ("10.1.0.5".to_string(), 15006, ID.to_string()),
            ("10.96.0.10".to_string(), 8080, ID.to_string()),
        ];
        assert_eq!(published(&registry), with_cluster_ip);
        // Turning headless withdraws it, turning back publishes it again.
        let headless = service(
            "api",
            "11",
            json!({"clusterIP": "None", "selector": {"app": "api"}}),
        );
        assert_eq!(
            cursor.apply_line(&mut sink, &event("MODIFIED", &headless), |_| {}),
            Next::Continue
        );
        assert_eq!(published(&registry).len(), 1);
        let back = service("api", "12", api);
        cursor.apply_line(&mut sink, &event("MODIFIED", &back), |_| {});
        assert_eq!(published(&registry), with_cluster_ip);
        cursor.apply_line(&mut sink, &event("DELETED", &back), |_| {});
        assert_eq!(published(&registry).len(), 1);
        assert_eq!(cursor.resource_version.as_deref(), Some("12"));
    }
}
