//! Service ClusterIPs in discovery (`--k8s-watch`).
//!
//! With transparent interception in the pod's network namespace, an application's
//! connection to a Service's ClusterIP reaches the sidecar *before* kube-proxy (or the
//! CNI) translates it to a backend pod IP on the node, so the proxy sees the ClusterIP as
//! the original destination. A ClusterIP is therefore published as a meshed destination
//! whose identity is that of the Service's backends: the proxy dials the ClusterIP over
//! mTLS (the node translates it to a backend pod, whose proxy terminates the hop) and
//! requires the server to present exactly that identity.
//!
//! The backends are the meshed pods (the registry's Kubernetes pods) in the Service's
//! namespace whose labels the Service's selector matches. A ClusterIP is published only
//! when they all share **one** service-account identity: a connection may land on any
//! of them and the client must name the one identity to expect before it knows which.
//! When they span several identities, or none is meshed, or the Service has no selector
//! (its endpoints are managed by hand), nothing is published for its ClusterIPs (fail
//! closed: never dial with a guessed identity); the proxy then treats the ClusterIP as
//! an unmeshed destination (refused, or passed through in plaintext if the proxy is
//! configured for passthrough). Unmeshed backends next to meshed ones are ignored: the
//! connections kube-proxy sends to them fail the handshake (closed).
//!
//! Every ClusterIP of a Service, published or not, belongs to the API server: a proxy's
//! registration at one is refused and an existing one is hidden. A Service selects pods
//! of its own namespace only, so whoever may create Services in a namespace can publish
//! that namespace's identities and no other (the API server allocates ClusterIPs once
//! each; a ClusterIP two Services claim is published only if they agree).
//!
//! Each published (ClusterIP, Service port) is one registration whose "inbound port" is
//! the Service port and whose service name is `<name>.<namespace>.svc`: transparent
//! clients dial the original destination anyway, and explicit upstreams naming
//! `<name>.<namespace>.svc` dial `ClusterIP:port`. The mesh hop names the port the
//! client dialled, which the server side checks against the port the connection arrived
//! at: Service ports whose `targetPort` differs from `port` do not work through the
//! ClusterIP yet (the handshake succeeds, the server proxy refuses the hop with
//! `port_mismatch`, closed). They are logged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use spiffe::SpiffeId;

use super::KubernetesPod;
use crate::discovery::Registration;

/// A Service with ClusterIPs, as the Kubernetes API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesService {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.clusterIPs` (IPv4 and IPv6), canonical, without duplicates.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.selector`; empty when the Service has none.
    pub selector: BTreeMap<String, String>,
    /// The TCP Service ports.
    pub ports: Vec<u16>,
    /// Service ports whose `targetPort` is not the same number (see the module header).
    pub remapped_ports: Vec<u16>,
}

impl KubernetesService {
    pub(super) fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }

    /// The service name its registrations carry: `<name>.<namespace>.svc`.
    pub fn mesh_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }

    /// Whether the selector is set and `pod` (in the same namespace) matches it.
    pub fn selects(&self, pod: &KubernetesPod) -> bool {
        !self.selector.is_empty()
            && pod.namespace == self.namespace
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }
}

/// What a Service's backends say about its ClusterIPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// Every selected meshed pod has this identity: published.
    One(SpiffeId),
    /// The selected meshed pods have several identities: not published.
    Several(Vec<SpiffeId>),
    /// No selected pod is meshed: not published.
    NoMeshedPods,
    /// No selector: the backends are unknown, not published.
    NoSelector,
}

/// The backing of `svc` among `pods`.
pub fn backing<'a>(
    svc: &KubernetesService,
    pods: impl IntoIterator<Item = &'a KubernetesPod>,
) -> Backing {
    if svc.selector.is_empty() {
        return Backing::NoSelector;
    }
    let ids: BTreeSet<&SpiffeId> = pods
        .into_iter()
        .filter(|p| svc.selects(p))
        .map(|p| &p.spiffe_id)
        .collect();
    let mut ids: Vec<SpiffeId> = ids.into_iter().cloned().collect();
    match ids.len() {
        0 => Backing::NoMeshedPods,
        1 => Backing::One(ids.remove(0)),
        _ => Backing::Several(ids),
    }
}

/// The Services, and derived from them and the pods, what each ClusterIP publishes.
#[derive(Default)]
pub(super) struct Services {
    pub(super) services: BTreeMap<(String, String), KubernetesService>,
    /// Every ClusterIP → the Services claiming it (normally one).
    claims: BTreeMap<IpAddr, Vec<(String, String)>>,
    backing: BTreeMap<(String, String), Backing>,
}

impl Services {
    /// Whether a Service claims `ip`.
    pub(super) fn owns(&self, ip: IpAddr) -> bool {
        self.claims.contains_key(&ip)
    }

    /// The Service claiming `ip`, for messages.
    pub(super) fn owner_name(&self, ip: IpAddr) -> Option<String> {
        let (ns, name) = self.claims.get(&ip)?.first()?;
        Some(format!("{ns}/{name}"))
    }

    /// Recomputes every Service's backing from `pods` (keyed by namespace and name, so
    /// each Service looks at its own namespace's pods only), logging what changed.
    pub(super) fn rebuild(&mut self, pods: &BTreeMap<(String, String), KubernetesPod>) {
        let mut claims: BTreeMap<IpAddr, Vec<(String, String)>> = BTreeMap::new();
        let mut next = BTreeMap::new();
        for (key, svc) in &self.services {
            for ip in &svc.cluster_ips {
                claims.entry(*ip).or_default().push(key.clone());
            }
            let in_namespace = pods
                .range((svc.namespace.clone(), String::new())..)
                .take_while(|((ns, _), _)| *ns == svc.namespace)
                .map(|(_, pod)| pod);
            let b = backing(svc, in_namespace);
            if self.backing.get(key) != Some(&b) {
                log_change(svc, &b);
            }
            next.insert(key.clone(), b);
        }
        self.claims = claims;
        self.backing = next;
    }

    /// One registration per published (ClusterIP, port). A ClusterIP two Services claim
    /// is published only if both resolve to the same identity.
    pub(super) fn registrations(&self) -> impl Iterator<Item = Registration> + '_ {
        self.services.iter().flat_map(move |(key, svc)| {
            let id = match self.backing.get(key) {
                Some(Backing::One(id)) => Some(id.clone()),
                _ => None,
            };
            svc.cluster_ips
                .iter()
                .filter(move |ip| {
                    self.claims.get(ip).is_some_and(|keys| {
                        keys.iter()
                            .all(|k| self.backing.get(k) == self.backing.get(key))
                    })
                })
                .flat_map(move |ip| {
                    let id = id.clone();
                    svc.ports.iter().filter_map(move |port| {
                        Some(Registration {
                            spiffe_id: id.clone()?,
                            service: svc.mesh_name(),
                            address: *ip,
                            inbound_port: *port,
                            app_ports: vec![*port],
                            proxy_version: String::new(),
                        })
                    })
                })
        })
    }

    /// (Services published, Services whose backends span several identities).
    pub(super) fn counts(&self) -> (usize, usize) {
        let one = self
            .backing
            .values()
            .filter(|b| matches!(b, Backing::One(_)))
            .count();
        let several = self
            .backing
            .values()
            .filter(|b| matches!(b, Backing::Several(_)))
            .count();
        (one, several)
    }
}

fn log_change(svc: &KubernetesService, b: &Backing) {
    let (ns, name, ips) = (&svc.namespace, &svc.name, &svc.cluster_ips);
    match b {
        Backing::One(id) => {
            tracing::info!(namespace = %ns, service = %name, cluster_ips = ?ips, spiffe_id = %id, "Service ClusterIPs in discovery");
            if !svc.remapped_ports.is_empty() {
                tracing::warn!(
                    namespace = %ns,
                    service = %name,
                    ports = ?svc.remapped_ports,
                    "Service ports with a different targetPort do not work through the ClusterIP (the mesh hop names the Service port); use targetPort == port"
                );
            }
        }
        Backing::Several(ids) => tracing::warn!(
            namespace = %ns,
            service = %name,
            cluster_ips = ?ips,
            identities = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "Service selects meshed pods of several service accounts: its ClusterIPs are not in discovery"
        ),
        Backing::NoMeshedPods | Backing::NoSelector => tracing::debug!(
            namespace = %ns,
            service = %name,
            reason = if *b == Backing::NoSelector { "no selector" } else { "no meshed pods" },
            "Service ClusterIPs not in discovery"
        ),
    }
}
