//! The mesh API (`ferrule.mesh.v1.Mesh/Sync`): each proxy's live session.
//!
//! A session starts with the proxy's `Register`; the identity is the one in the
//! proxy's verified client certificate, the address is the connection's source address.
//! The control plane then streams the discovery snapshot (and later policy) and ends
//! the session when the client certificate expires, so a session never outlives the
//! credential that opened it.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferrule_proto::mesh::v1 as pb;
use ferrule_proto::mesh::v1::mesh_server::Mesh;
use spiffe::SpiffeId;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::ca::CertificateAuthority;
use crate::discovery::{Registration, Registry, Snapshot};
use crate::metrics::Metrics;
use crate::policy::PolicyService;
use crate::server::tls_listener::PeerInfo;

/// Most application ports one registration may declare.
const MAX_APP_PORTS: usize = 64;

/// Time a new session has to send its `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Implementation of the mesh gRPC service.
pub struct MeshApi {
    ca: Arc<CertificateAuthority>,
    registry: Arc<Registry>,
    policies: Arc<PolicyService>,
    metrics: Metrics,
}

impl MeshApi {
    /// Creates the service.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        registry: Arc<Registry>,
        policies: Arc<PolicyService>,
        metrics: Metrics,
    ) -> Self {
        Self {
            ca,
            registry,
            policies,
            metrics,
        }
    }
}

/// Converts a discovery snapshot into its wire form.
pub fn discovery_pb(s: &Snapshot) -> pb::Discovery {
    pb::Discovery {
        version: s.version,
        workloads: s
            .workloads
            .iter()
            .map(|w| pb::Workload {
                spiffe_id: w.spiffe_id.to_string(),
                service: w.service.clone(),
                addresses: vec![w.address.to_string()],
                inbound_port: u32::from(w.inbound_port),
                app_ports: w.app_ports.iter().map(|p| u32::from(*p)).collect(),
                target_ports: w
                    .app_ports
                    .iter()
                    .filter_map(|p| {
                        let hop = s.hop_ports.get(&std::net::SocketAddr::new(w.address, *p))?;
                        Some((u32::from(*p), u32::from(*hop)))
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Turns a proxy's `Register` into a [`Registration`] for the identity its certificate
/// proved (`spiffe_id`) at the address it connects from (`remote`), or refuses it.
///
/// Nothing the proxy writes chooses its identity or address: a service name must be the
/// last segment of its SPIFFE ID path (the service account), so no mesh member can
/// register as `api` and receive api's clients; `advertise_address` is refused until an
/// administrator can declare one. Ports are range-checked here; the [`Registry`]
/// refuses port 0 and malformed service names.
pub fn registration_from_pb(
    r: pb::Register,
    spiffe_id: &SpiffeId,
    remote: IpAddr,
) -> Result<Registration, Status> {
    if !r.advertise_address.is_empty() {
        return Err(Status::permission_denied(format!(
            "advertise_address {:?} was not declared by an administrator for {spiffe_id}; \
             proxies may only register the address they connect from",
            r.advertise_address
        )));
    }
    let port = |p: u32, field: &str| {
        u16::try_from(p)
            .map_err(|_| Status::invalid_argument(format!("{field}: {p} is not a port")))
    };
    let bound = spiffe_id
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    if r.service != bound {
        return Err(Status::permission_denied(format!(
            "{spiffe_id} may only register service {bound:?}, not {:?}",
            r.service
        )));
    }
    if r.app_ports.len() > MAX_APP_PORTS {
        return Err(Status::invalid_argument(format!(
            "app_ports: {} ports; at most {MAX_APP_PORTS}",
            r.app_ports.len()
        )));
    }
    Ok(Registration {
        spiffe_id: spiffe_id.clone(),
        service: r.service,
        address: remote.to_canonical(),
        inbound_port: port(r.inbound_port, "inbound_port")?,
        app_ports: r
            .app_ports
            .iter()
            .map(|p| port(*p, "app_ports"))
            .collect::<Result<_, _>>()?,
        proxy_version: r.proxy_version.chars().take(64).collect(),
    })
}

/// Ends the registry session when the response stream is dropped.
struct SessionGuard {
    registry: Arc<Registry>,
    session: u64,
    metrics: Metrics,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.disconnect(self.session);
        self.metrics.connected_proxies.dec();
        tracing::info!(session = self.session, "mesh session ended");
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Mesh for MeshApi {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        req: Request<Streaming<pb::ProxyMessage>>,
    ) -> Result<Response<SyncStream>, Status> {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("connection information missing"))?;
        let bundle = self
            .ca
            .trust_bundle()
            .to_tls_bundle(self.ca.trust_domain())
            .map_err(|e| {
                tracing::error!(error = %e, "trust bundle unusable");
                Status::internal("trust bundle unusable")
            })?;
        let spiffe_id = match peer.verified_identity(&bundle) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(Status::unauthenticated(
                    "mesh sessions require the proxy's client certificate",
                ));
            }
            Err(e) => {
                return Err(Status::unauthenticated(format!(
                    "client certificate rejected ({}): {e}",
                    e.reason()
                )));
            }
        };
        let cert_not_after = peer.leaf_not_after();
        let mut inbound = req.into_inner();
        let first = match tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err(Status::invalid_argument("session closed before register")),
            Ok(Err(s)) => return Err(s),
            Err(_) => return Err(Status::deadline_exceeded("no register message within 10s")),
        };
        let Some(pb::proxy_message::Msg::Register(r)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message must be register",
            ));
        };
        let reg = registration_from_pb(r, &spiffe_id, peer.remote.ip())?;
        let session = self
            .registry
            .register(reg.clone(), cert_not_after)
            .map_err(|e| match e {
                crate::discovery::RegisterError::AddressTaken { .. } => {
                    Status::already_exists(e.to_string())
                }
                crate::discovery::RegisterError::Invalid(_) => {
                    Status::invalid_argument(e.to_string())
                }
            })?;
        tracing::info!(
            session,
            %spiffe_id,
            service = %reg.service,
            address = %reg.address,
            inbound_port = reg.inbound_port,
            "mesh session started"
        );

        // Acknowledgements from the proxy.
        let registry = self.registry.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(pb::proxy_message::Msg::Ack(a)) = msg.msg {
                    registry.ack(session, a.discovery_version, a.policy_version);
                }
            }
        });

        self.metrics.connected_proxies.inc();
        let guard = SessionGuard {
            registry: self.registry.clone(),
            session,
            metrics: self.metrics.clone(),
        };
        // The session ends when the certificate that opened it expires.
        let expiry = cert_not_after
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        let mut snapshots = self.registry.subscribe();
        let mut policy_rx = self.policies.subscribe();
        let mesh_default = self.policies.mesh_default();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (registry, policies) = (self.registry.clone(), self.policies.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let deadline = tokio::time::sleep(expiry);
            tokio::pin!(deadline);
            // With `--k8s-watch`, nothing until the pods and the policy resources have
            // been listed: a view without them could open what they close.
            tokio::select! {
                _ = async { registry.wait_complete().await; policies.wait_complete().await } => {}
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
            // Policy first, so a proxy that becomes ready has its policy.
            let mut send_policy = true;
            let mut send_discovery = true;
            loop {
                if send_policy {
                    let state = policy_rx.borrow_and_update().clone();
                    let msg = pb::ControlMessage {
                        msg: Some(pb::control_message::Msg::Policy(pb::Policy {
                            version: state.set.version(),
                            mesh_default: mesh_default.as_str().to_string(),
                            documents_json: PolicyService::documents_for(&state, &spiffe_id),
                        })),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                if send_discovery {
                    let snap = snapshots.borrow_and_update().clone();
                    let msg = pb::ControlMessage {
                        msg: Some(pb::control_message::Msg::Discovery(discovery_pb(&snap))),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                send_policy = false;
                send_discovery = false;
                tokio::select! {
                    r = snapshots.changed() => {
                        if r.is_err() { return }
                        send_discovery = true;
                    }
                    r = policy_rx.changed() => {
                        if r.is_err() { return }
                        send_policy = true;
                    }
                    _ = &mut deadline => {
                        let _ = tx
                            .send(Err(Status::unauthenticated(
                                "client certificate expired; reconnect with the renewed certificate",
                            )))
                            .await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}
