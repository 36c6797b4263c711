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
//! server's proxy will see the connection arrive at, which it checks (`port_mismatch`):
//! after kube-proxy's translation that is the Service port's `targetPort`, so a
//! `targetPort` that differs from `port` is published with the registration
//! ([`crate::discovery::Snapshot::hop_ports`]) and the client's proxy names it instead.
//! A numeric `targetPort` is taken as it is; a named one is resolved against the
//! container ports of the selected meshed pods that declare that name (kube-proxy only
//! sends that Service port's connections to those), and the Service port is published
//! only when they all agree on one number. When they disagree, or none declares it, that
//! Service port is not published (fail closed: the hop would name the wrong port for
//! some backends), logged, and the Service counted as invalid.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

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
    /// Service ports whose `targetPort` is not the same number: port → `targetPort`
    /// (see the module header). Absent: the backends listen on the Service port.
    pub target_ports: BTreeMap<u16, TargetPort>,
}

/// A Service port's `targetPort` (IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetPort {
    /// A port number on the pods.
    Number(u16),
    /// The name of a container port on the pods, whose number each pod declares.
    Name(String),
}

/// Why a Service port's `targetPort` has no one number to name in the mesh hop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetPortError {
    /// No selected meshed pod declares a TCP container port of this name.
    #[error("no selected meshed pod declares a TCP container port named {0:?}")]
    Unresolved(String),
    /// The selected meshed pods declare this name with different numbers.
    #[error("the selected meshed pods declare container port {name:?} as {numbers:?}")]
    Disagree {
        /// The `targetPort` name.
        name: String,
        /// The numbers the pods declare for it, sorted.
        numbers: Vec<u16>,
    },
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

/// The port Service port `port` of `svc` reaches its backends at, among `pods` (the
/// mesh hop must name it): `port` itself, the numeric `targetPort`, or the one number the
/// selected meshed pods declaring the named `targetPort` agree on. Pods not declaring
/// the name are no backends of this port (kube-proxy skips them) and are ignored.
pub fn target_port<'a>(
    svc: &KubernetesService,
    port: u16,
    pods: impl IntoIterator<Item = &'a KubernetesPod>,
) -> Result<u16, TargetPortError> {
    let name = match svc.target_ports.get(&port) {
        None => return Ok(port),
        Some(TargetPort::Number(n)) => return Ok(*n),
        Some(TargetPort::Name(name)) => name,
    };
    let numbers: BTreeSet<u16> = pods
        .into_iter()
        .filter(|p| svc.selects(p))
        .filter_map(|p| p.named_ports.get(name).copied())
        .collect();
    let mut numbers: Vec<u16> = numbers.into_iter().collect();
    match numbers.len() {
        0 => Err(TargetPortError::Unresolved(name.clone())),
        1 => Ok(numbers.remove(0)),
        _ => Err(TargetPortError::Disagree {
            name: name.clone(),
            numbers,
        }),
    }
}

/// Every Service port of one Service → the port its hop names, or why it has none.
type Targets = BTreeMap<u16, Result<u16, TargetPortError>>;

/// The Services, and derived from them and the pods, what each ClusterIP publishes.
#[derive(Default)]
pub(super) struct Services {
    pub(super) services: BTreeMap<(String, String), KubernetesService>,
    /// Every ClusterIP → the Services claiming it (normally one).
    claims: BTreeMap<IpAddr, Vec<(String, String)>>,
    backing: BTreeMap<(String, String), Backing>,
    targets: BTreeMap<(String, String), Targets>,
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
        let mut next_targets = BTreeMap::new();
        for (key, svc) in &self.services {
            for ip in &svc.cluster_ips {
                claims.entry(*ip).or_default().push(key.clone());
            }
            let in_namespace: Vec<&KubernetesPod> = pods
                .range((svc.namespace.clone(), String::new())..)
                .take_while(|((ns, _), _)| *ns == svc.namespace)
                .map(|(_, pod)| pod)
                .collect();
            let b = backing(svc, in_namespace.iter().copied());
            let t: Targets = svc
                .ports
                .iter()
                .map(|p| (*p, target_port(svc, *p, in_namespace.iter().copied())))
                .collect();
            if self.backing.get(key) != Some(&b) || self.targets.get(key) != Some(&t) {
                log_change(svc, &b, &t);
            }
            next.insert(key.clone(), b);
            next_targets.insert(key.clone(), t);
        }
        self.claims = claims;
        self.backing = next;
        self.targets = next_targets;
    }

    /// One registration per published (ClusterIP, port). A ClusterIP two Services claim
    /// is published only if both resolve to the same identity.
    pub(super) fn registrations(&self) -> impl Iterator<Item = Registration> + '_ {
        self.published()
            .map(|(svc, id, address, port, _)| Registration {
                spiffe_id: id.clone(),
                service: svc.mesh_name(),
                address,
                inbound_port: port,
                app_ports: vec![port],
                proxy_version: String::new(),
            })
    }

    /// (ClusterIP, Service port) → the `targetPort` the mesh hop names, for every
    /// published Service port whose `targetPort` is another number.
    pub(super) fn hop_ports(&self) -> impl Iterator<Item = (SocketAddr, u16)> + '_ {
        self.published().filter_map(|(_, _, address, port, hop)| {
            (hop != port).then_some((SocketAddr::new(address, port), hop))
        })
    }

    /// Every published (ClusterIP, Service port): its Service, identity, address, port
    /// and the port its hop names.
    fn published(
        &self,
    ) -> impl Iterator<Item = (&KubernetesService, &SpiffeId, IpAddr, u16, u16)> + '_ {
        self.services.iter().flat_map(move |(key, svc)| {
            let id = match self.backing.get(key) {
                Some(Backing::One(id)) => Some(id),
                _ => None,
            };
            let targets = self.targets.get(key);
            svc.cluster_ips
                .iter()
                .filter(move |ip| {
                    self.claims.get(ip).is_some_and(|keys| {
                        keys.iter()
                            .all(|k| self.backing.get(k) == self.backing.get(key))
                    })
                })
                .flat_map(move |ip| {
                    svc.ports.iter().filter_map(move |port| {
                        let hop = *targets?.get(port)?.as_ref().ok()?;
                        Some((svc, id?, *ip, *port, hop))
                    })
                })
        })
    }

    /// (Services published, Services invalid: their backends span several identities,
    /// or a published one has a Service port whose `targetPort` has no one number).
    pub(super) fn counts(&self) -> (usize, usize) {
        let one = self
            .backing
            .values()
            .filter(|b| matches!(b, Backing::One(_)))
            .count();
        let invalid = self
            .backing
            .iter()
            .filter(|(key, b)| match b {
                Backing::Several(_) => true,
                Backing::One(_) => self
                    .targets
                    .get(*key)
                    .is_some_and(|t| t.values().any(Result::is_err)),
                _ => false,
            })
            .count();
        (one, invalid)
    }
}

fn log_change(svc: &KubernetesService, b: &Backing, targets: &Targets) {
    let (ns, name, ips) = (&svc.namespace, &svc.name, &svc.cluster_ips);
    match b {
        Backing::One(id) => {
            let hops: BTreeMap<u16, u16> = targets
                .iter()
                .filter_map(|(p, t)| t.as_ref().ok().filter(|t| *t != p).map(|t| (*p, *t)))
                .collect();
            tracing::info!(namespace = %ns, service = %name, cluster_ips = ?ips, spiffe_id = %id, target_ports = ?hops, "Service ClusterIPs in discovery");
            for (port, e) in targets
                .iter()
                .filter_map(|(p, t)| Some((p, t.as_ref().err()?)))
            {
                tracing::warn!(
                    namespace = %ns,
                    service = %name,
                    port,
                    error = %e,
                    "Service port not in discovery: its targetPort has no one number on the meshed pods"
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
