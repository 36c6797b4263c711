//! The proxy's view of the mesh: which workloads exist, their addresses, and the SPIFFE
//! ID each must present. Filled from the control plane's stream (`control::sync`) and
//! swapped atomically; the last snapshot stays in force while the control plane is away.
//!
//! Outbound connections use it to answer two questions: "is this destination meshed?"
//! (then it is never reached in plaintext) and "which identity must it present?".

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use spiffe::SpiffeId;
use tokio::sync::watch;

/// One meshed workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The identity its proxy presents.
    pub spiffe_id: SpiffeId,
    /// Its service name.
    pub service: String,
    /// Its IP addresses.
    pub addresses: Vec<IpAddr>,
    /// Port of its proxy's inbound listener (the mesh port in explicit mode).
    pub inbound_port: u16,
    /// Application ports it declares (empty: any).
    pub app_ports: Vec<u16>,
    /// Application port → the port the mesh hop names instead (a Kubernetes Service
    /// port's `targetPort`: the server's proxy sees the connection arrive there after
    /// kube-proxy's translation, and checks the hop against it). Absent: the same port.
    pub target_ports: BTreeMap<u16, u16>,
}

/// An immutable snapshot with lookup indexes.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Control-plane version of this snapshot.
    pub version: u64,
    by_ip: HashMap<IpAddr, Arc<Workload>>,
    by_service: HashMap<String, Vec<Arc<Workload>>>,
    hop_ports: HashMap<SocketAddr, u16>,
}

impl Snapshot {
    /// Indexes `workloads`.
    pub fn new(version: u64, workloads: Vec<Workload>) -> Self {
        let mut by_ip = HashMap::new();
        let mut by_service: HashMap<String, Vec<Arc<Workload>>> = HashMap::new();
        let mut hop_ports = HashMap::new();
        for w in workloads {
            let w = Arc::new(w);
            for ip in &w.addresses {
                by_ip.insert(*ip, w.clone());
                for (app, hop) in &w.target_ports {
                    hop_ports.insert(SocketAddr::new(*ip, *app), *hop);
                }
            }
            by_service.entry(w.service.clone()).or_default().push(w);
        }
        Self {
            version,
            by_ip,
            by_service,
            hop_ports,
        }
    }

    /// The port the mesh hop names for a connection to application port `port` at
    /// `ip`: the mapped `targetPort` of a Kubernetes Service port, else `port` itself.
    pub fn hop_port(&self, ip: IpAddr, port: u16) -> u16 {
        self.hop_ports
            .get(&SocketAddr::new(ip, port))
            .copied()
            .unwrap_or(port)
    }

    /// The workload owning `ip`, if meshed.
    pub fn by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.by_ip.get(&ip)
    }

    /// Endpoints of `service` for application port `port`: (mesh address, identity).
    pub fn endpoints(&self, service: &str, port: u16) -> Vec<(SocketAddr, SpiffeId)> {
        self.by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter(|w| w.app_ports.is_empty() || w.app_ports.contains(&port))
            .flat_map(|w| {
                w.addresses
                    .iter()
                    .map(|ip| (SocketAddr::new(*ip, w.inbound_port), w.spiffe_id.clone()))
            })
            .collect()
    }

    /// Number of workloads.
    pub fn len(&self) -> usize {
        self.by_service.values().map(Vec::len).sum()
    }

    /// Whether there are no workloads.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shared handle to the current snapshot.
#[derive(Clone)]
pub struct Discovery {
    current: Arc<ArcSwap<Snapshot>>,
    synced: watch::Sender<bool>,
}

impl Default for Discovery {
    fn default() -> Self {
        Self::new()
    }
}

impl Discovery {
    /// Empty and not yet synced.
    pub fn new() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            synced: watch::Sender::new(false),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot and marks discovery as synced.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.synced.send_replace(true);
    }

    /// Whether a first snapshot has arrived.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits up to `timeout` for the first snapshot. Until then the proxy cannot know
    /// which destinations are meshed, so outbound connections must wait (never guess
    /// "not meshed" and send plaintext: istio/istio#42610).
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, svc: &str, ip: &str, ports: &[u16]) -> Workload {
        Workload {
            spiffe_id: SpiffeId::new(id).unwrap(),
            service: svc.into(),
            addresses: vec![ip.parse().unwrap()],
            inbound_port: 15006,
            app_ports: ports.to_vec(),
            target_ports: BTreeMap::new(),
        }
    }

    #[test]
    fn lookups() {
        let s = Snapshot::new(
            3,
            vec![
                w("spiffe://td/ns/a/sa/api", "api", "10.0.0.1", &[8080]),
                w("spiffe://td/ns/a/sa/api", "api", "10.0.0.2", &[]),
                w("spiffe://td/ns/a/sa/db", "db", "10.0.0.3", &[5432]),
            ],
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.endpoints("api", 8080).len(), 2);
        assert_eq!(s.endpoints("api", 9090).len(), 1, "declared ports filter");
        assert!(s.endpoints("nope", 1).is_empty());
        assert_eq!(s.by_ip("10.0.0.3".parse().unwrap()).unwrap().service, "db");
        assert!(s.by_ip("10.9.9.9".parse().unwrap()).is_none());
    }

    #[test]
    fn hop_ports_follow_the_service_port() {
        // A ClusterIP with two Service ports, one of them mapped to another targetPort.
        let mut p80 = w("spiffe://td/ns/a/sa/api", "api.a.svc", "10.96.0.1", &[80]);
        p80.inbound_port = 80;
        p80.target_ports = [(80, 8080)].into();
        let mut p9090 = w("spiffe://td/ns/a/sa/api", "api.a.svc", "10.96.0.1", &[9090]);
        p9090.inbound_port = 9090;
        let s = Snapshot::new(1, vec![p80, p9090]);
        let ip: IpAddr = "10.96.0.1".parse().unwrap();
        assert_eq!(s.hop_port(ip, 80), 8080);
        assert_eq!(
            s.hop_port(ip, 9090),
            9090,
            "unmapped port of the same address"
        );
        assert_eq!(
            s.hop_port("10.0.0.1".parse().unwrap(), 80),
            80,
            "other address"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_first_snapshot() {
        let d = Discovery::new();
        assert!(!d.wait_synced(Duration::from_secs(1)).await);
        let d2 = d.clone();
        tokio::spawn(async move { d2.publish(Snapshot::new(1, vec![])) });
        assert!(d.wait_synced(Duration::from_secs(1)).await);
    }
}
