//! The registry of meshed workloads: identity, addresses, ports, service name.
//!
//! Proxies register their own workload over their mesh session (`mesh_api`). The
//! registry enforces that a registration carries the caller's own certified identity
//! and the address it connects from, and that no address:port is claimed by two
//! identities at once. Every change bumps the version and is broadcast to all
//! sessions.
//!
//! Entries outlive their session for `retention` (a proxy reconnecting after a
//! control-plane restart or a network blip does not vanish from everyone's view in the
//! meantime), and the registry is persisted through the store so a restarted control
//! plane serves the same view at once.
//!
//! With `--k8s-watch`, the Kubernetes API is a second, authoritative source
//! (`kubernetes`): every IP of a meshed pod maps to the pod's service-account identity.
//! A proxy cannot register an address a pod of another identity owns, and an existing
//! registration conflicting with a pod is hidden from the snapshot. Services' ClusterIPs
//! map to the one identity of their meshed backends, and belong to the API server alone.

mod kubernetes;

pub use kubernetes::{Backing, KubernetesPod, KubernetesService, TargetPort, TargetPortError};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use spiffe::SpiffeId;
use tokio::sync::watch;

use crate::store::Store;

/// One registered workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub spiffe_id: SpiffeId,
    pub service: String,
    pub address: IpAddr,
    pub inbound_port: u16,
    pub app_ports: Vec<u16>,
    pub proxy_version: String,
}

/// A registry entry with its session state.
#[derive(Debug, Clone)]
pub struct Entry {
    pub reg: Registration,
    /// Live session id, or `None` when disconnected.
    pub session: Option<u64>,
    /// When the session started, or when it ended.
    pub since: SystemTime,
    /// Certificate expiry of the session's proxy.
    pub cert_not_after: Option<SystemTime>,
    /// Versions the proxy acknowledged.
    pub acked_discovery: u64,
    pub acked_policy: u64,
}

/// A versioned view of all entries.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    pub workloads: Vec<Registration>,
    /// (address, application port) → the port a client's mesh hop names instead, for
    /// Kubernetes Service ports whose `targetPort` is another number: the server's proxy
    /// sees the connection arrive at the `targetPort` after kube-proxy's translation.
    pub hop_ports: std::collections::BTreeMap<SocketAddr, u16>,
}

/// Registration refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// Another identity holds this address:port with a live session, a Kubernetes
    /// pod of another identity owns the address, or it is a Service's ClusterIP.
    #[error("{address}:{port} is registered by {holder}")]
    AddressTaken {
        address: IpAddr,
        port: u16,
        holder: String,
    },
    /// The registration is malformed.
    #[error("invalid registration: {0}")]
    Invalid(String),
}

/// The registry (shared as `Arc<Registry>`).
pub struct Registry {
    state: Mutex<State>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// Whether the view is complete: false from [`Self::await_kubernetes`] until the
    /// pods have been listed once. Proxies get no discovery before.
    complete: watch::Sender<bool>,
    retention: Duration,
    /// Write-through persistence (best effort: a failed write is logged, the in-memory
    /// registry stays authoritative for this run).
    store: Option<Arc<Store>>,
}

#[derive(Default)]
struct State {
    version: u64,
    next_session: u64,
    /// Keyed by (address, inbound port).
    entries: HashMap<(IpAddr, u16), Entry>,
    /// Meshed pods read from the Kubernetes API.
    pods: kubernetes::Pods,
}

impl State {
    /// Who, according to the Kubernetes API, holds `address` against `spiffe_id`: a pod
    /// of another identity, or a Service (the address is its ClusterIP). Such an address
    /// can neither be registered nor published from a registration.
    fn kubernetes_holder(&self, address: IpAddr, spiffe_id: &SpiffeId) -> Option<String> {
        if let Some(pod) = self.pods.owner(address)
            && pod.spiffe_id != *spiffe_id
        {
            return Some(format!(
                "{} (Kubernetes pod {}/{})",
                pod.spiffe_id, pod.namespace, pod.name
            ));
        }
        self.pods
            .cluster_ip_owner(address)
            .map(|service| format!("Kubernetes Service {service} (ClusterIP)"))
    }
}

impl Registry {
    /// An empty registry keeping disconnected entries for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            tx: watch::Sender::new(Arc::new(Snapshot::default())),
            complete: watch::Sender::new(true),
            retention,
            store: None,
        }
    }

    /// A registry persisted in `store`, starting with what the store holds (entries
    /// come back as disconnected and expire after the retention unless their proxies
    /// reconnect). Versions continue from the current Unix time in milliseconds so they keep increasing
    /// across restarts.
    pub fn persistent(
        retention: Duration,
        store: Arc<Store>,
    ) -> Result<Self, crate::store::StoreError> {
        let saved = store.load_workloads()?;
        let mut reg = Self::new(retention);
        let version = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        reg.restore(version, saved);
        reg.store = Some(store);
        Ok(reg)
    }

    fn persist(&self, reg: &Registration, seen: SystemTime) {
        if let Some(store) = &self.store
            && let Err(e) = store.save_workload(reg, seen)
        {
            tracing::error!(error = %e, spiffe_id = %reg.spiffe_id, "cannot persist the workload registry");
        }
    }

    /// Restores entries (as disconnected) from persistence, with their version.
    pub fn restore(&self, version: u64, regs: Vec<(Registration, SystemTime)>) {
        let mut st = self.lock();
        st.version = version;
        // The retention counts from now, not from the stored time: a session that was
        // live when the control plane stopped has a stale `since` (its start), and its
        // proxy needs time to reconnect before the entry may expire.
        let now = SystemTime::now();
        for (reg, _stored) in regs {
            let since = now;
            st.entries.insert(
                (reg.address, reg.inbound_port),
                Entry {
                    reg,
                    session: None,
                    since,
                    cert_not_after: None,
                    acked_discovery: 0,
                    acked_policy: 0,
                },
            );
        }
        self.publish(&st);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, st: &State) {
        // A registration at an address a pod of another identity owns, or at a
        // ClusterIP, is hidden: the Kubernetes API assigned that address, the
        // registration is stale or worse.
        let mut workloads: Vec<Registration> = st
            .entries
            .values()
            .filter(|e| {
                st.kubernetes_holder(e.reg.address, &e.reg.spiffe_id)
                    .is_none()
            })
            .map(|e| e.reg.clone())
            .collect();
        // A pod's address its own proxy registered is listed once, as registered (with
        // the proxy's real inbound and application ports).
        let registered: std::collections::HashSet<IpAddr> =
            workloads.iter().map(|r| r.address).collect();
        workloads.extend(
            st.pods
                .registrations()
                .filter(|r| !registered.contains(&r.address)),
        );
        workloads.sort_by(|a, b| {
            (a.service.as_str(), a.address, a.inbound_port).cmp(&(
                b.service.as_str(),
                b.address,
                b.inbound_port,
            ))
        });
        self.tx.send_replace(Arc::new(Snapshot {
            version: st.version,
            workloads,
            hop_ports: st.pods.hop_ports().collect(),
        }));
    }

    /// Registers a live session; returns its session id.
    pub fn register(
        &self,
        reg: Registration,
        cert_not_after: Option<SystemTime>,
    ) -> Result<u64, RegisterError> {
        if reg.inbound_port == 0 {
            return Err(RegisterError::Invalid("inbound_port must not be 0".into()));
        }
        if reg.app_ports.contains(&0) {
            return Err(RegisterError::Invalid(
                "app_ports must not contain 0".into(),
            ));
        }
        validate_service(&reg.service).map_err(RegisterError::Invalid)?;
        let mut st = self.lock();
        if let Some(holder) = st.kubernetes_holder(reg.address, &reg.spiffe_id) {
            return Err(RegisterError::AddressTaken {
                address: reg.address,
                port: reg.inbound_port,
                holder,
            });
        }
        let key = (reg.address, reg.inbound_port);
        if let Some(existing) = st.entries.get(&key)
            && existing.reg.spiffe_id != reg.spiffe_id
            && existing.session.is_some()
        {
            return Err(RegisterError::AddressTaken {
                address: reg.address,
                port: reg.inbound_port,
                holder: existing.reg.spiffe_id.to_string(),
            });
        }
        st.next_session += 1;
        let session = st.next_session;
        let changed = st.entries.get(&key).is_none_or(|e| e.reg != reg);
        self.persist(&reg, SystemTime::now());
        st.entries.insert(
            key,
            Entry {
                reg,
                session: Some(session),
                since: SystemTime::now(),
                cert_not_after,
                acked_discovery: 0,
                acked_policy: 0,
            },
        );
        if changed {
            st.version += 1;
            self.publish(&st);
        }
        Ok(session)
    }

    /// Marks a session as ended (the entry is kept for the retention period).
    pub fn disconnect(&self, session: u64) {
        let mut st = self.lock();
        let now = SystemTime::now();
        for e in st.entries.values_mut() {
            if e.session == Some(session) {
                e.session = None;
                e.since = now;
                self.persist(&e.reg, now);
            }
        }
    }

    /// Records the versions a session acknowledged.
    pub fn ack(&self, session: u64, discovery: u64, policy: u64) {
        let mut st = self.lock();
        for e in st.entries.values_mut() {
            if e.session == Some(session) {
                e.acked_discovery = discovery;
                e.acked_policy = policy;
            }
        }
    }

    /// Drops entries disconnected for longer than the retention. Returns how many.
    pub fn expire(&self, now: SystemTime) -> usize {
        let mut st = self.lock();
        let before = st.entries.len();
        let retention = self.retention;
        let store = self.store.clone();
        st.entries.retain(|(addr, port), e| {
            let keep =
                e.session.is_some() || now.duration_since(e.since).unwrap_or_default() < retention;
            if !keep
                && let Some(store) = &store
                && let Err(err) = store.delete_workload(*addr, *port)
            {
                tracing::error!(error = %err, "cannot delete an expired workload from the store");
            }
            keep
        });
        let removed = before - st.entries.len();
        if removed > 0 {
            st.version += 1;
            self.publish(&st);
        }
        removed
    }

    /// Subscribes to snapshots (current one first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// All entries with session state, for `ferrulectl workloads`.
    pub fn entries(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.lock().entries.values().cloned().collect();
        v.sort_by(|a, b| {
            a.reg
                .spiffe_id
                .to_string()
                .cmp(&b.reg.spiffe_id.to_string())
        });
        v
    }
}

/// Service names are the last segment of a workload's SPIFFE ID path, so they allow
/// what a SPIFFE path segment allows: 1-255 characters of `A-Z a-z 0-9 . - _`, not `.`
/// or `..` alone.
pub fn validate_service(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service {s:?}: use 1-255 characters A-Z, a-z, 0-9, '.', '-', '_' (a SPIFFE path segment)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, ip: &str, port: u16) -> Registration {
        Registration {
            spiffe_id: SpiffeId::new(id).unwrap(),
            service: "api".into(),
            address: ip.parse().unwrap(),
            inbound_port: port,
            app_ports: vec![8080],
            proxy_version: "test".into(),
        }
    }

    #[test]
    fn address_cannot_be_claimed_by_another_live_identity() {
        let r = Registry::new(Duration::from_secs(60));
        let s1 = r
            .register(reg("spiffe://td/a", "10.0.0.1", 15006), None)
            .unwrap();
        let e = r
            .register(reg("spiffe://td/b", "10.0.0.1", 15006), None)
            .unwrap_err();
        assert!(matches!(e, RegisterError::AddressTaken { .. }));
        // Same identity reconnecting is fine; another port is fine.
        r.register(reg("spiffe://td/a", "10.0.0.1", 15006), None)
            .unwrap();
        r.register(reg("spiffe://td/b", "10.0.0.1", 15007), None)
            .unwrap();
        // After the holder disconnects, the address can move to another identity.
        r.disconnect(s1);
        r.disconnect(s1 + 1);
        r.register(reg("spiffe://td/b", "10.0.0.1", 15006), None)
            .unwrap();
    }

    #[test]
    fn versions_bump_only_on_change_and_expire_after_retention() {
        let r = Registry::new(Duration::from_secs(60));
        let s = r
            .register(reg("spiffe://td/a", "10.0.0.1", 15006), None)
            .unwrap();
        let v1 = r.snapshot().version;
        r.register(reg("spiffe://td/a", "10.0.0.1", 15006), None)
            .unwrap();
        assert_eq!(r.snapshot().version, v1, "identical re-registration");
        r.disconnect(s);
        r.disconnect(s + 1);
        assert_eq!(r.expire(SystemTime::now()), 0, "within retention");
        assert_eq!(r.snapshot().workloads.len(), 1);
        assert_eq!(r.expire(SystemTime::now() + Duration::from_secs(61)), 1);
        assert!(r.snapshot().workloads.is_empty());
        assert!(r.snapshot().version > v1);
    }

    #[test]
    fn persisted_registry_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let store = Arc::new(Store::open(&dir.path().join("data")).unwrap());
        let r = Registry::persistent(Duration::from_secs(60), store.clone()).unwrap();
        let s = r
            .register(reg("spiffe://td/a", "10.0.0.1", 15006), None)
            .unwrap();
        r.disconnect(s);
        let v1 = r.snapshot().version;
        drop(r);
        std::thread::sleep(Duration::from_millis(5));
        let r2 = Registry::persistent(Duration::from_secs(60), store.clone()).unwrap();
        assert_eq!(
            r2.snapshot().workloads,
            vec![reg("spiffe://td/a", "10.0.0.1", 15006)]
        );
        assert!(r2.snapshot().version >= v1);
        // Expiry removes it from the store too.
        r2.expire(SystemTime::now() + Duration::from_secs(61));
        let r3 = Registry::persistent(Duration::from_secs(60), store).unwrap();
        assert!(r3.snapshot().workloads.is_empty());
    }

    #[test]
    fn rejects_bad_registrations() {
        let r = Registry::new(Duration::from_secs(60));
        let mut bad = reg("spiffe://td/a", "10.0.0.1", 0);
        assert!(r.register(bad.clone(), None).is_err());
        bad.inbound_port = 1;
        bad.service = "bad name".into();
        assert!(r.register(bad, None).is_err());
        assert!(validate_service("backend").is_ok());
        assert!(validate_service("my_Svc-2.v1").is_ok());
        assert!(validate_service("..").is_err());
        assert!(validate_service("a/b").is_err());
        assert!(validate_service(&"a".repeat(256)).is_err());
    }
}
