//! Discovery entries read from the Kubernetes API (`--k8s-watch`): one per IP of every
//! meshed pod, mapping it to the pod's service-account identity.
//!
//! The API server assigns pod IPs, so it is the authority on who owns one: a pod's
//! addresses are published whether or not its proxy has registered (transparent-mode
//! clients then know the identity to expect from any meshed pod IP, IPv4 and IPv6 alike,
//! instead of only the address the proxy dialled the control plane from), and a proxy's
//! registration cannot claim an address a pod of another identity owns.
//!
//! Two pods may briefly list one IP (the API server reuses a released address while an
//! old pod's deletion is still in flight). The newest pod (by `creationTimestamp`, then
//! namespace/name) owns it: never both, and never none, so the address stays meshed
//! (a wrong expectation fails the handshake, closed; no expectation would let
//! passthrough clients send plaintext).
//!
//! Services' ClusterIPs map to the one identity of their meshed backends (`services`).

mod services;

pub use services::{Backing, KubernetesService, TargetPort, TargetPortError, backing};

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use spiffe::SpiffeId;

use super::{Registration, Registry};

/// A meshed pod as the Kubernetes API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesPod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spiffe://<td>/ns/<namespace>/sa/<serviceAccountName>`.
    pub spiffe_id: SpiffeId,
    /// The service name: the service account (the last segment of the SPIFFE ID, as for
    /// registrations).
    pub service: String,
    /// Every IP in `status.podIPs`, canonical, without duplicates.
    pub addresses: Vec<IpAddr>,
    /// The injected proxy's inbound (mesh) port.
    pub inbound_port: u16,
    /// `metadata.creationTimestamp` (RFC 3339, UTC, so it orders as a string).
    pub created: String,
    /// `metadata.labels`, matched against Services' selectors (`services`).
    pub labels: BTreeMap<String, String>,
    /// Its named TCP container ports (name → number), which resolve Services' named
    /// `targetPort`s (`services`).
    pub named_ports: BTreeMap<String, u16>,
}

impl KubernetesPod {
    fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }

    /// The ordering that decides which of two pods owns a shared IP (greater wins).
    fn rank(&self) -> (&str, &str, &str) {
        (&self.created, &self.namespace, &self.name)
    }
}

/// The pods and Services and, derived from them, the owner of every pod IP and what
/// every ClusterIP publishes.
#[derive(Default)]
pub(super) struct Pods {
    pods: BTreeMap<(String, String), KubernetesPod>,
    owners: HashMap<IpAddr, (String, String)>,
    services: services::Services,
    /// Set by [`Registry::await_kubernetes`] until each collection is listed once.
    awaiting_pods: bool,
    awaiting_services: bool,
}

impl Pods {
    /// The pod owning `ip`, if any.
    pub(super) fn owner(&self, ip: IpAddr) -> Option<&KubernetesPod> {
        self.owners.get(&ip).and_then(|k| self.pods.get(k))
    }

    /// The Service claiming `ip` (a ClusterIP, published or not), as `namespace/name`.
    pub(super) fn cluster_ip_owner(&self, ip: IpAddr) -> Option<String> {
        self.services
            .owns(ip)
            .then(|| self.services.owner_name(ip))
            .flatten()
    }

    /// One registration per owned pod IP and per published (ClusterIP, Service port).
    pub(super) fn registrations(&self) -> impl Iterator<Item = Registration> + '_ {
        self.pod_registrations()
            .chain(self.services.registrations())
    }

    /// (ClusterIP, Service port) → the `targetPort` the mesh hop names, where it differs.
    pub(super) fn hop_ports(&self) -> impl Iterator<Item = (SocketAddr, u16)> + '_ {
        self.services.hop_ports()
    }

    fn pod_registrations(&self) -> impl Iterator<Item = Registration> + '_ {
        self.owners.iter().filter_map(|(ip, key)| {
            self.pods.get(key).map(|pod| Registration {
                spiffe_id: pod.spiffe_id.clone(),
                service: pod.service.clone(),
                address: *ip,
                inbound_port: pod.inbound_port,
                // Container ports are informational in Kubernetes (an application may
                // listen on any port), so the pod declares none: any port.
                app_ports: Vec::new(),
                proxy_version: String::new(),
            })
        })
    }

    fn rebuild(&mut self) {
        let mut owners: HashMap<IpAddr, (String, String)> = HashMap::new();
        for (key, pod) in &self.pods {
            for ip in &pod.addresses {
                match owners.get(ip).and_then(|k| self.pods.get(k)) {
                    Some(other) => {
                        let (old, new) = if pod.rank() > other.rank() {
                            (other, pod)
                        } else {
                            (pod, other)
                        };
                        tracing::warn!(
                            address = %ip,
                            owner = %format!("{}/{}", new.namespace, new.name),
                            other = %format!("{}/{}", old.namespace, old.name),
                            "two pods list one IP; the newest owns it"
                        );
                        if std::ptr::eq(new, pod) {
                            owners.insert(*ip, key.clone());
                        }
                    }
                    None => {
                        owners.insert(*ip, key.clone());
                    }
                }
            }
        }
        self.owners = owners;
        self.services.rebuild(&self.pods);
    }
}

impl Registry {
    /// Marks the view incomplete until the pods have been listed once (`--k8s-watch`):
    /// until then proxies get no discovery at all rather than a view without the pods.
    /// Services count too: without their ClusterIPs, a passthrough proxy would send
    /// plaintext to a meshed Service.
    pub fn await_kubernetes(&self) {
        let mut st = self.lock();
        st.pods.awaiting_pods = true;
        st.pods.awaiting_services = true;
        self.complete.send_replace(false);
    }

    fn listed(&self, pods: bool) {
        let mut st = self.lock();
        if pods {
            st.pods.awaiting_pods = false;
        } else {
            st.pods.awaiting_services = false;
        }
        if !st.pods.awaiting_pods && !st.pods.awaiting_services {
            self.complete.send_replace(true);
        }
    }

    /// Waits until the view is complete (at once without [`Self::await_kubernetes`]).
    pub async fn wait_complete(&self) {
        let mut rx = self.complete.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Replaces every Kubernetes pod with `pods` (the complete set after a (re)list)
    /// and marks the view complete. Returns whether the published view changed.
    pub fn replace_kubernetes_pods(&self, pods: Vec<KubernetesPod>) -> bool {
        let next = pods.into_iter().map(|p| (p.key(), p)).collect();
        let changed = self.change_kubernetes(|k| replace_all(&mut k.pods, next));
        self.listed(true);
        changed
    }

    /// Replaces every Kubernetes Service with `services` (the complete set after a
    /// (re)list). Returns whether the published view changed.
    pub fn replace_kubernetes_services(&self, services: Vec<KubernetesService>) -> bool {
        let next = services.into_iter().map(|s| (s.key(), s)).collect();
        let changed = self.change_kubernetes(|k| replace_all(&mut k.services.services, next));
        self.listed(false);
        changed
    }

    /// Adds or updates one Service. Returns whether anything changed.
    pub fn upsert_kubernetes_service(&self, service: KubernetesService) -> bool {
        self.change_kubernetes(|k| upsert(&mut k.services.services, service.key(), service))
    }

    /// Removes one Service (deleted, or no longer with ClusterIPs). Returns whether it
    /// was there.
    pub fn remove_kubernetes_service(&self, namespace: &str, name: &str) -> bool {
        self.change_kubernetes(|k| remove(&mut k.services.services, namespace, name))
    }

    /// The Kubernetes Services with ClusterIPs and their backing.
    pub fn kubernetes_services(&self) -> Vec<(KubernetesService, Backing)> {
        let st = self.lock();
        st.pods
            .services
            .services
            .values()
            .map(|s| (s.clone(), backing(s, st.pods.pods.values())))
            .collect()
    }

    /// (Services whose ClusterIPs are published, Services not published because their
    /// meshed backends have several identities).
    pub fn kubernetes_service_counts(&self) -> (usize, usize) {
        self.lock().pods.services.counts()
    }

    /// Adds or updates one pod. Returns whether anything changed.
    pub fn upsert_kubernetes_pod(&self, pod: KubernetesPod) -> bool {
        self.change_kubernetes(|k| upsert(&mut k.pods, pod.key(), pod))
    }

    /// Removes one pod (deleted, or no longer meshed, running or addressed). Returns
    /// whether it was there.
    pub fn remove_kubernetes_pod(&self, namespace: &str, name: &str) -> bool {
        self.change_kubernetes(|k| remove(&mut k.pods, namespace, name))
    }

    /// How many Kubernetes pods are in discovery.
    pub fn kubernetes_pod_count(&self) -> usize {
        self.lock().pods.pods.len()
    }

    /// The Kubernetes pods, by namespace and name.
    pub fn kubernetes_pods(&self) -> Vec<KubernetesPod> {
        self.lock().pods.pods.values().cloned().collect()
    }

    /// Applies `f` to the pods and Services; if it changed anything, derives the IP
    /// owners and ClusterIP backings again and publishes a new version.
    fn change_kubernetes(&self, f: impl FnOnce(&mut Pods) -> bool) -> bool {
        let mut st = self.lock();
        if !f(&mut st.pods) {
            return false;
        }
        st.pods.rebuild();
        st.version += 1;
        self.publish(&st);
        true
    }
}

/// Pods and Services are kept by (namespace, name).
type Key = (String, String);

/// `map = next`; whether that changed it.
fn replace_all<V: PartialEq>(map: &mut BTreeMap<Key, V>, next: BTreeMap<Key, V>) -> bool {
    if *map == next {
        return false;
    }
    *map = next;
    true
}

/// Sets `key` to `value`; whether that changed anything.
fn upsert<V: PartialEq>(map: &mut BTreeMap<Key, V>, key: Key, value: V) -> bool {
    if map.get(&key) == Some(&value) {
        return false;
    }
    map.insert(key, value);
    true
}

/// Removes `namespace/name`; whether it was there.
fn remove<V>(map: &mut BTreeMap<Key, V>, namespace: &str, name: &str) -> bool {
    map.remove(&(namespace.to_string(), name.to_string()))
        .is_some()
}

#[cfg(test)]
mod tests;
