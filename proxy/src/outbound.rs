//! The outbound side: takes the application's connection, finds the destination's
//! endpoints and the SPIFFE ID it must present (`discovery`), and dials it over mTLS.
//!
//! Two ways in:
//! * **Transparent**: netfilter redirected the app's connection to the outbound
//!   listener; the original destination comes from SO_ORIGINAL_DST. A meshed
//!   destination IP is dialled at its original address over mTLS; an unmeshed one is
//!   refused or passed through in plaintext, per configuration.
//! * **Explicit**: the app dials a local upstream port bound to a mesh service; the
//!   proxy picks one of the service's endpoints (random order, next one on connect
//!   failure) and dials its inbound listener.
//!
//! In both cases the server must present exactly the expected identity, chained to the
//! current trust bundle; otherwise the connection is closed and the reason logged.
//! A destination known to be meshed is never dialled in plaintext.
//!
//! By default application connections to the same server proxy share one pooled mTLS
//! connection as `ferrule/2` streams (`outbound::pool`, `hop::mux`); `outbound.pool:
//! false` dials one `ferrule/1` connection per application connection.

mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrule_tls::{IdentityHandle, TlsOptions, TrustBundle};
use rustls::pki_types::ServerName;
use spiffe::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::Instrument;

use crate::config::file::{Limits, Unmeshed};
use crate::discovery::Discovery;
use crate::drain::Drain;
use crate::hop;
use crate::io::{CopyStats, Relay};
use crate::metrics::{ConnLabels, ConnMetrics, Metrics};

/// Where an accepted application connection wants to go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Explicit upstream: a service name and application port.
    Service { service: Arc<str>, port: u16 },
    /// Transparent capture: the original destination address.
    Original,
}

/// Outbound configuration.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// What to do with unmeshed destinations (transparent mode).
    pub unmeshed: Unmeshed,
    /// Timeouts and caps.
    pub limits: Limits,
    /// TLS options.
    pub tls: TlsOptions,
    /// Carry application connections as streams over pooled `ferrule/2` connections.
    pub pool: bool,
    /// Close a pooled connection that carried no stream for this long.
    pub pool_idle_timeout: Duration,
}

/// Why an outbound connection failed. Each has a stable label.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("no discovery data from the control plane yet; refusing rather than guessing")]
    NotSynced,
    #[error("original destination: {0}")]
    OriginalDst(std::io::Error),
    #[error("service {service:?} has no endpoints for port {port}")]
    NoEndpoints { service: String, port: u16 },
    #[error("destination {0} is not in the mesh and this proxy refuses unmeshed traffic")]
    Unmeshed(SocketAddr),
    #[error("destination {0} is this proxy's own outbound listener (forwarding loop)")]
    Loop(SocketAddr),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("no identity certificate yet; mesh connections fail closed")]
    NoCertificate,
    #[error("TLS handshake with {addr} failed ({reason}): {source}")]
    Handshake {
        addr: SocketAddr,
        reason: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {0} timed out")]
    HandshakeTimeout(SocketAddr),
    #[error("server proxy {addr}: {source}")]
    Peer {
        addr: SocketAddr,
        #[source]
        source: ferrule_tls::VerifyError,
    },
    #[error("opening a stream to {addr}: {source}")]
    Stream {
        addr: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] ferrule_tls::ConfigError),
}

impl OutboundError {
    /// Stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotSynced => "not_synced",
            Self::OriginalDst(_) => "original_dst",
            Self::NoEndpoints { .. } => "no_endpoints",
            Self::Unmeshed(_) => "unmeshed_refused",
            Self::Loop(_) => "loop",
            Self::Connect { .. } => "connect",
            Self::ConnectTimeout(_) => "connect_timeout",
            Self::NoCertificate => "no_certificate",
            Self::Handshake { reason, .. } => reason,
            Self::HandshakeTimeout(_) => "timeout",
            Self::Peer { source, .. } => source.reason(),
            Self::Stream { .. } => "mux_stream",
            Self::Tls(_) => "tls_config",
        }
    }
}

/// The outbound proxy.
pub struct Outbound {
    metrics: Metrics,
    settings: OutboundSettings,
    identity: IdentityHandle,
    discovery: Discovery,
    /// Client TLS configurations, per expected server identity and whether `ferrule/2`
    /// is offered.
    configs: Mutex<HashMap<(SpiffeId, bool), Arc<rustls::ClientConfig>>>,
    /// Pooled `ferrule/2` connections.
    pool: pool::Pool,
    /// The addresses this proxy's outbound listeners are bound to: never dialled, since
    /// each connection to one would dial again (a forwarding loop).
    own_listeners: Mutex<Vec<SocketAddr>>,
}

impl Outbound {
    /// Builds the outbound side.
    pub fn new(
        settings: OutboundSettings,
        identity: IdentityHandle,
        discovery: Discovery,
        metrics: Metrics,
    ) -> Self {
        Self {
            metrics,
            settings,
            identity,
            discovery,
            configs: Mutex::new(HashMap::new()),
            pool: pool::Pool::default(),
            own_listeners: Mutex::new(Vec::new()),
        }
    }

    /// Accepts application connections on `listener` for `dest` until the drain starts.
    pub async fn run(self: Arc<Self>, listener: TcpListener, dest: Destination, drain: Drain) {
        let local = listener.local_addr().ok().map(crate::io::canonical);
        if let Some(local) = local {
            self.own_listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(local);
        }
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = drain.signaled() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "outbound accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Some(guard) = drain.try_track() else {
                tracing::warn!(%remote, limit = drain.max(), "outbound connection refused: connection cap reached");
                self.metrics.failure("outbound", "connection_cap");
                continue;
            };
            let this = self.clone();
            let dest = dest.clone();
            // The per-connection span is at debug level: at info it would be entered and
            // exited on every poll of the task and its fields formatted up front (~5 k
            // instructions per connection, ~1 k per request), for the few events that
            // happen inside it. Those events carry their own fields instead.
            let span = tracing::debug_span!("outbound", %remote, dst = tracing::field::Empty, server_id = tracing::field::Empty);
            tokio::spawn(
                async move {
                    let _guard = guard;
                    match this.serve_conn(tcp, dest, local).await {
                        Ok(s) => tracing::debug!(bytes_out = s.a_to_b, bytes_in = s.b_to_a, "outbound connection closed"),
                        Err(e) => {
                            this.metrics.failure("outbound", e.reason());
                            tracing::info!(%remote, reason = e.reason(), error = %e, "outbound connection refused");
                        }
                    }
                }
                .instrument(span),
            );
        }
    }

    async fn serve_conn(
        &self,
        app: TcpStream,
        dest: Destination,
        listener_addr: Option<SocketAddr>,
    ) -> Result<CopyStats, OutboundError> {
        let _ = app.set_nodelay(true);
        let limits = &self.settings.limits;
        let original = match &dest {
            Destination::Original => {
                let orig =
                    crate::intercept::original_dst(&app).map_err(OutboundError::OriginalDst)?;
                let orig = crate::io::canonical(orig);
                if Some(orig) == listener_addr {
                    return Err(OutboundError::Loop(orig));
                }
                Some(orig)
            }
            Destination::Service { .. } => None,
        };
        if !self.discovery.wait_synced(limits.connect_timeout).await {
            return Err(OutboundError::NotSynced);
        }
        let snapshot = self.discovery.snapshot();
        // Each candidate: (mesh address, identity, the port its hop names: the dialled
        // application port, or the targetPort discovery maps a Service port to).
        let candidates: Vec<(SocketAddr, SpiffeId, u16)> = match (dest, original) {
            (Destination::Service { service, port }, _) => {
                let mut eps = snapshot.endpoints(&service, port);
                if eps.is_empty() {
                    return Err(OutboundError::NoEndpoints {
                        service: service.to_string(),
                        port,
                    });
                }
                shuffle(&mut eps);
                eps.into_iter()
                    .map(|(addr, id)| (addr, id, snapshot.hop_port(addr.ip(), port)))
                    .collect()
            }
            (Destination::Original, Some(orig)) => match snapshot.by_ip(orig.ip()) {
                Some(w) => vec![(
                    orig,
                    w.spiffe_id.clone(),
                    snapshot.hop_port(orig.ip(), orig.port()),
                )],
                None => {
                    tracing::Span::current().record("dst", tracing::field::display(orig));
                    return match self.settings.unmeshed {
                        Unmeshed::Refuse => Err(OutboundError::Unmeshed(orig)),
                        Unmeshed::Passthrough => {
                            let server = connect(orig, limits.connect_timeout).await?;
                            tracing::debug!("unmeshed destination: passthrough in plaintext");
                            let m = self.metrics.open(ConnLabels {
                                direction: "outbound",
                                peer: "unmeshed".into(),
                                tls: "plaintext",
                            });
                            Ok(copy(app, server, limits, m).await)
                        }
                    };
                }
            },
            (Destination::Original, None) => {
                return Err(OutboundError::OriginalDst(
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
        };
        if self.identity.credentials().is_none() {
            return Err(OutboundError::NoCertificate);
        }
        let mut last_err = None;
        for (addr, id, port) in candidates {
            if self.is_own_listener(addr) {
                // Discovery (a bad registration or configuration) points at one of our
                // own listeners: each connection there would dial it again.
                tracing::warn!(%addr, "mesh endpoint is this proxy's own listener; refused (forwarding loop)");
                last_err = Some(OutboundError::Loop(addr));
                continue;
            }
            tracing::Span::current().record("dst", tracing::field::display(addr));
            tracing::Span::current().record("server_id", tracing::field::display(&id));
            let hop = match self.open_hop(addr, &id, port).await {
                Ok(hop) => hop,
                Err(e @ (OutboundError::Connect { .. } | OutboundError::ConnectTimeout(_))) => {
                    tracing::debug!(%addr, error = %e, "endpoint unreachable; trying the next");
                    last_err = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let stats = match hop {
                pool::Hop::Pooled(stream, handles) => {
                    copy(app, stream, limits, self.metrics.open_with(handles)).await
                }
                pool::Hop::Single(mut tls) => {
                    hop::write_header(&mut tls, port)
                        .await
                        .map_err(|source| OutboundError::Connect { addr, source })?;
                    let m = self.metrics.open(ConnLabels {
                        direction: "outbound",
                        peer: id.to_string(),
                        tls: "mtls",
                    });
                    copy(app, tls, limits, m).await
                }
            };
            return Ok(stats);
        }
        Err(last_err.unwrap_or(OutboundError::NotSynced))
    }

    /// TCP connect and mTLS handshake with the server proxy at `addr`, which must prove
    /// `id`; offers `ferrule/2` (before `ferrule/1`) when `pooled`. Returns the stream and
    /// the trust bundle held before the handshake started (see
    /// [`ferrule_tls::VerifiedPeer::after_handshake`]).
    async fn dial(
        &self,
        addr: SocketAddr,
        id: &SpiffeId,
        pooled: bool,
    ) -> Result<(TlsStream<TcpStream>, Option<Arc<TrustBundle>>), OutboundError> {
        let limits = &self.settings.limits;
        let tcp = connect(addr, limits.connect_timeout).await?;
        let connector = TlsConnector::from(self.client_config(id, pooled)?);
        // Verification is by SPIFFE ID; the server name is only a placeholder.
        let name = ServerName::try_from("mesh.ferrule.invalid").expect("static name is valid");
        let bundle_before = self.identity.bundle();
        match tokio::time::timeout(limits.handshake_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                self.metrics
                    .handshake("outbound", tls.get_ref().1.alpn_protocol());
                Ok((tls, bundle_before))
            }
            Ok(Err(e)) => Err(OutboundError::Handshake {
                addr,
                reason: ferrule_tls::classify_io(&e),
                source: e,
            }),
            Err(_) => Err(OutboundError::HandshakeTimeout(addr)),
        }
    }

    fn client_config(
        &self,
        id: &SpiffeId,
        pooled: bool,
    ) -> Result<Arc<rustls::ClientConfig>, OutboundError> {
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        let key = (id.clone(), pooled);
        if let Some(c) = configs.get(&key) {
            return Ok(c.clone());
        }
        let mut opts = self.settings.tls.clone();
        opts.alpn = if pooled {
            vec![hop::ALPN_MUX.to_vec(), hop::ALPN.to_vec()]
        } else {
            vec![hop::ALPN.to_vec()]
        };
        let c = ferrule_tls::client_config(&self.identity, vec![id.clone()], &opts)?;
        configs.insert(key, c.clone());
        Ok(c)
    }
}

impl Outbound {
    /// Whether `addr` reaches one of this proxy's outbound listeners: the same address,
    /// or a loopback address when the listener is bound to the unspecified address.
    /// (Another local interface address of an unspecified listener is not recognised.)
    fn is_own_listener(&self, addr: SocketAddr) -> bool {
        let addr = crate::io::canonical(addr);
        let own = self.own_listeners.lock().unwrap_or_else(|p| p.into_inner());
        own.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip() || (l.ip().is_unspecified() && addr.ip().is_loopback()))
        })
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, OutboundError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(OutboundError::Connect { addr, source }),
        Err(_) => Err(OutboundError::ConnectTimeout(addr)),
    }
}

/// Copies between the application's connection and `b` until both finish, and counts
/// the bytes in `m`. When the copy aborts (a reset, or the mesh hop cut without
/// `close_notify`), the application's connection is reset too, not closed cleanly
/// ([`crate::io::reset`]).
async fn copy<B: Relay>(app: TcpStream, b: B, limits: &Limits, m: ConnMetrics) -> CopyStats {
    let idle = Some(limits.idle_timeout).filter(|d| !d.is_zero());
    let reset = crate::io::ResetHandle::new(&app).ok();
    // `relay` counts from the mesh side (a) to the application (b); here a is the app.
    let swap = |s: CopyStats| CopyStats {
        a_to_b: s.b_to_a,
        b_to_a: s.a_to_b,
    };
    let stats = match b.relay(app, idle).await {
        Ok(s) => swap(s),
        Err(e) => {
            tracing::debug!(error = %e, "outbound copy ended with an error");
            if let (crate::io::copy::CopyError::Io { .. }, Some(r)) = (&e, reset) {
                r.reset();
            }
            swap(e.stats())
        }
    };
    m.bytes(stats.a_to_b, stats.b_to_a);
    stats
}

fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rand::random_range(0..=i);
        v.swap(i, j);
    }
}
