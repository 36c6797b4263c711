//! The proxy's mesh session (`Mesh/Sync`): registers the local workload, applies the
//! discovery snapshots the control plane streams, and acknowledges each version.
//!
//! The session is opened with the proxy's current certificate and reopened (with the
//! renewed one) whenever it ends. While the control plane is unreachable the last
//! snapshot stays in force.

use std::net::IpAddr;

use ferrule_proto::mesh::v1 as pb;
use ferrule_proto::mesh::v1::mesh_client::MeshClient;
use ferrule_tls::IdentityHandle;
use spiffe::SpiffeId;
use tokio::sync::{mpsc, watch};

use super::ControlClient;
use crate::config::{RETRY_MAX, RETRY_MIN};
use crate::discovery::{Discovery, Snapshot, Workload};
use crate::metrics::Metrics;
use crate::policy::Authorizer;
use crate::telemetry::Backoff;

/// What the proxy registers for its workload.
#[derive(Debug, Clone)]
pub struct RegisterInfo {
    /// Service name.
    pub service: String,
    /// Inbound (mesh) port.
    pub inbound_port: u16,
    /// Declared application ports.
    pub app_ports: Vec<u16>,
}

/// State of the control-plane session, for metrics and the admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    /// Whether a session is currently open.
    pub connected: bool,
    /// Last discovery version applied.
    pub discovery_version: u64,
    /// Last error, if the session is down.
    pub last_error: Option<String>,
    /// Policy version in force, once one arrived.
    pub policy_version: Option<u64>,
}

/// Runs the session forever.
pub async fn run(
    client: ControlClient,
    identity: IdentityHandle,
    discovery: Discovery,
    info: RegisterInfo,
    status: watch::Sender<SyncStatus>,
    metrics: Metrics,
    authz: Authorizer,
) {
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        let Some(creds) = identity.credentials() else {
            // No certificate yet: the identity manager is still bootstrapping.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        };
        let mut info = info.clone();
        if info.service.is_empty() {
            info.service = default_service(creds.spiffe_id());
        }
        let result = session(
            &client,
            &discovery,
            &info,
            &status,
            &metrics,
            &authz,
            &mut backoff,
        )
        .await;
        metrics.control_plane_connected.set(0);
        status.send_modify(|s| {
            s.connected = false;
            s.last_error = result.as_ref().err().map(|e| e.to_string());
        });
        match result {
            Ok(()) => tracing::info!("control-plane session ended; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %e, "control-plane session failed; keeping the last discovery data")
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn session(
    client: &ControlClient,
    discovery: &Discovery,
    info: &RegisterInfo,
    status: &watch::Sender<SyncStatus>,
    metrics: &Metrics,
    authz: &Authorizer,
    backoff: &mut Backoff,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = client.connect().await?;
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ProxyMessage {
        msg: Some(pb::proxy_message::Msg::Register(pb::Register {
            service: info.service.clone(),
            inbound_port: u32::from(info.inbound_port),
            app_ports: info.app_ports.iter().map(|p| u32::from(*p)).collect(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            advertise_address: String::new(),
        })),
    })
    .await?;
    let mut stream = MeshClient::new(channel)
        .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    status.send_modify(|s| {
        s.connected = true;
        s.last_error = None;
    });
    metrics.control_plane_connected.set(1);
    while let Some(msg) = stream.message().await? {
        backoff.reset();
        match msg.msg {
            Some(pb::control_message::Msg::Discovery(d)) => {
                let version = d.version;
                let snapshot = match snapshot_from_pb(d) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(version, error = %e, "invalid discovery snapshot ignored; keeping the last good one");
                        continue;
                    }
                };
                tracing::debug!(
                    version,
                    workloads = snapshot.len(),
                    "discovery snapshot applied"
                );
                discovery.publish(snapshot);
                status.send_modify(|s| s.discovery_version = version);
                metrics.discovery_version.set(version as i64);
                let ack = pb::ProxyMessage {
                    msg: Some(pb::proxy_message::Msg::Ack(pb::Ack {
                        discovery_version: version,
                        policy_version: status.borrow().policy_version.unwrap_or(0),
                    })),
                };
                if tx.send(ack).await.is_err() {
                    break;
                }
            }
            Some(pb::control_message::Msg::Policy(p)) => {
                let version = p.version;
                match policy_from_pb(p) {
                    Ok(set) => {
                        tracing::info!(version, policies = set.policies().len(), "policy applied");
                        authz.install(set);
                        metrics.policy_version.set(version as i64);
                        status.send_modify(|s| s.policy_version = Some(version));
                        let ack = pb::ProxyMessage {
                            msg: Some(pb::proxy_message::Msg::Ack(pb::Ack {
                                discovery_version: status.borrow().discovery_version,
                                policy_version: version,
                            })),
                        };
                        if tx.send(ack).await.is_err() {
                            break;
                        }
                    }
                    // Never install a partial policy: keep the last good one, don't ack,
                    // so the control plane reports this proxy as stale.
                    Err(e) => {
                        tracing::error!(version, error = %e, "invalid policy from the control plane ignored; keeping the last good policy")
                    }
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// Service name when none is configured: the last segment of the SPIFFE ID path
/// (`.../sa/web` → `web`), which is also the only name the control plane accepts for
/// this identity.
pub fn default_service(id: &SpiffeId) -> String {
    id.path()
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("unnamed")
        .to_string()
}

/// Converts the wire policy into a compiled set; any invalid document rejects it all.
pub fn policy_from_pb(p: pb::Policy) -> Result<ferrule_policy::PolicySet, String> {
    let default: ferrule_policy::MeshDefault = p
        .mesh_default
        .parse()
        .map_err(|e| format!("mesh_default {:?}: {e}", p.mesh_default))?;
    let policies = p
        .documents_json
        .iter()
        .enumerate()
        .map(|(i, d)| {
            serde_json::from_str::<ferrule_policy::Policy>(d)
                .map_err(|e| format!("document {i}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ferrule_policy::PolicySet::compile(policies, default).with_version(p.version))
}

/// Converts the wire snapshot. Any malformed entry rejects the whole snapshot: skipping
/// it would make a meshed workload look unmeshed (and, with passthrough, reachable in
/// plaintext).
pub fn snapshot_from_pb(d: pb::Discovery) -> Result<Snapshot, String> {
    let workloads = d
        .workloads
        .iter()
        .map(|w| workload_from_pb(w).map_err(|e| format!("workload {:?}: {e}", w.spiffe_id)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot::new(d.version, workloads))
}

fn workload_from_pb(w: &pb::Workload) -> Result<Workload, String> {
    let spiffe_id = SpiffeId::new(&w.spiffe_id).map_err(|e| e.to_string())?;
    let addresses = w
        .addresses
        .iter()
        .map(|a| {
            a.parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|e| format!("address {a:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let port = |p: u32| u16::try_from(p).map_err(|_| format!("port {p} out of range"));
    Ok(Workload {
        spiffe_id,
        service: w.service.clone(),
        addresses,
        inbound_port: port(w.inbound_port)?,
        app_ports: w
            .app_ports
            .iter()
            .map(|p| port(*p))
            .collect::<Result<_, _>>()?,
        target_ports: w
            .target_ports
            .iter()
            .map(|(app, hop)| match (port(*app)?, port(*hop)?) {
                (_, 0) | (0, _) => Err(format!("target port {app} -> {hop}: port 0")),
                pair => Ok(pair),
            })
            .collect::<Result<_, _>>()?,
    })
}
