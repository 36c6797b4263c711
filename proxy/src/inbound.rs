//! The inbound side: accepts connections for the local workload, terminates the mesh
//! hop's mTLS, authorizes the peer, and forwards to the application.
//!
//! Per connection, top to bottom (`Inbound::serve_conn`):
//! 1. Transparent mode: recover the original destination (SO_ORIGINAL_DST).
//! 2. Detect the protocol from the first bytes (`inbound::detect`).
//! 3. Mesh hop: TLS handshake requiring a client X.509-SVID that chains to the current
//!    trust bundle → peer SPIFFE ID; read the hop header → application port.
//!    Plaintext (transparent mode only): strict ports close it; permissive ports label
//!    it unauthenticated.
//! 4. Authorize (peer, port); deny → close, logged with the reason.
//! 5. Connect to the application and copy bytes both ways.
//!
//! A `ferrule/2` connection (`inbound::mux`) carries many application connections as
//! streams: steps 3 (hop header → the stream's `CONNECT` port) to 5 then run per stream,
//! after re-checking the peer.

pub mod detect;
pub mod http;
mod mux;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrule_tls::IdentityHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::file::{Limits, Mode, PortMode, Protocol};
use crate::drain::{ConnGuard, Drain};
use crate::hop;
use crate::io::Relay;
use crate::metrics::{ConnHandles, ConnLabels, Metrics};
use crate::policy::{Authorizer, Peer};
use detect::Protocol as Detected;

/// Settings for one declared application port.
#[derive(Debug, Clone)]
pub struct PortSettings {
    /// Where the application listens (default: explicit `127.0.0.1:<port>`,
    /// transparent: the original destination).
    pub app: Option<SocketAddr>,
    /// Strict or permissive.
    pub mode: PortMode,
    /// Opaque or HTTP.
    pub protocol: Protocol,
}

/// Inbound configuration.
#[derive(Debug, Clone)]
pub struct InboundSettings {
    /// Explicit or transparent.
    pub mode: Mode,
    /// Mode of undeclared ports (transparent mode).
    pub default_mode: PortMode,
    /// Declared application ports.
    pub ports: HashMap<u16, PortSettings>,
    /// Ports that belong to the proxy itself and are never forwarded to.
    pub own_ports: Vec<u16>,
    /// Timeouts and caps.
    pub limits: Limits,
    /// Close established connections that a new policy denies.
    pub close_on_policy_change: bool,
}

/// Why an inbound connection was refused or ended badly. Each has a stable label.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("protocol detection: {0}")]
    Detect(#[from] detect::DetectError),
    #[error("TLS handshake failed ({reason}): {source}")]
    Handshake {
        reason: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("too many handshakes in progress (limits.max_handshakes)")]
    HandshakeCap,
    #[error("TLS without ALPN ferrule/1 on the mesh port")]
    NotMeshAlpn,
    #[error("peer certificate has no usable SPIFFE ID")]
    NoPeerIdentity,
    #[error("hop header: {0}")]
    Hop(#[from] hop::HopError),
    #[error("hop header names port {hop} but the connection was for port {original}")]
    PortMismatch { hop: u16, original: u16 },
    #[error("port {0} is not an application port of this workload")]
    UndeclaredPort(u16),
    #[error("plaintext connection to strict port {0}")]
    PlaintextOnStrictPort(u16),
    #[error("plaintext connection on the mesh port (explicit mode accepts only mTLS)")]
    PlaintextOnMeshPort,
    #[error("denied by {policy}: {reason}")]
    Denied {
        policy: String,
        reason: &'static str,
    },
    #[error("connecting to the application at {addr}: {source}")]
    AppConnect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to the application at {0} timed out")]
    AppConnectTimeout(SocketAddr),
    #[error("original destination: {0}")]
    OriginalDst(std::io::Error),
    #[error("pooled mesh connection: {0}")]
    Mux(#[source] h2::Error),
    #[error("peer: {0}")]
    Peer(#[source] ferrule_tls::VerifyError),
}

impl InboundError {
    /// Stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Detect(_) => "detect",
            Self::Handshake { reason, .. } => reason,
            Self::HandshakeTimeout => "timeout",
            Self::HandshakeCap => "handshake_cap",
            Self::NotMeshAlpn => "no_mesh_alpn",
            Self::NoPeerIdentity => "no_spiffe_id",
            Self::Hop(_) => "hop_header",
            Self::PortMismatch { .. } => "port_mismatch",
            Self::UndeclaredPort(_) => "undeclared_port",
            Self::PlaintextOnStrictPort(_) => "plaintext_on_strict_port",
            Self::PlaintextOnMeshPort => "plaintext_on_mesh_port",
            Self::Denied { .. } => "denied",
            Self::AppConnect { .. } => "app_connect",
            Self::AppConnectTimeout(_) => "app_connect_timeout",
            Self::OriginalDst(_) => "original_dst",
            Self::Mux(_) => "mux",
            Self::Peer(e) => e.reason(),
        }
    }
}

/// The inbound proxy.
pub struct Inbound {
    settings: InboundSettings,
    /// Connections not yet past detection, handshake and hop header
    /// (`limits.max_handshakes`).
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Our credentials and trust bundle (re-checks of pooled connections' peers).
    identity: IdentityHandle,
    acceptor: TlsAcceptor,
    authz: Authorizer,
    metrics: Metrics,
    /// Connection pools to the local application for `http` ports (HTTP/1.1, HTTP/2).
    clients: (
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            hyper::body::Incoming,
        >,
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            hyper::body::Incoming,
        >,
    ),
}

impl Inbound {
    /// Builds the inbound side; its TLS configuration reads `identity` at each handshake.
    pub fn new(
        settings: InboundSettings,
        identity: &IdentityHandle,
        tls: &ferrule_tls::TlsOptions,
        authz: Authorizer,
        metrics: Metrics,
    ) -> Result<Self, ferrule_tls::ConfigError> {
        let mut opts = tls.clone();
        // Server preference: the pooled hop when the client offers it.
        opts.alpn = vec![hop::ALPN_MUX.to_vec(), hop::ALPN.to_vec()];
        let config =
            ferrule_tls::server_config(identity, ferrule_tls::ClientAuth::Required, &opts)?;
        Ok(Self {
            clients: http::clients(settings.limits.connect_timeout),
            acceptor: TlsAcceptor::from(config),
            handshakes: Arc::new(tokio::sync::Semaphore::new(settings.limits.max_handshakes)),
            identity: identity.clone(),
            authz,
            metrics,
            settings,
        })
    }

    /// Accepts connections until the drain starts, then lets live ones finish.
    pub async fn run(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        // Pooled connections have their own cap: their streams take the connection cap,
        // each like a version-1 connection.
        let mux_conns = drain.sibling(drain.max());
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = drain.signaled() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "inbound accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Some(guard) = drain.try_track() else {
                tracing::warn!(%remote, limit = drain.max(), "inbound connection refused: connection cap reached");
                self.metrics.failure("inbound", "connection_cap");
                continue;
            };
            let this = self.clone();
            let (drain, mux_conns) = (drain.clone(), mux_conns.clone());
            // The per-connection span is at debug level: at info it would be entered and
            // exited on every poll of the task and its fields formatted up front (~5 k
            // instructions per connection, ~1 k per request), for the few events that
            // happen inside it. Those events carry their own fields instead.
            let span = tracing::debug_span!("inbound", %remote, peer = tracing::field::Empty, port = tracing::field::Empty, decision = tracing::field::Empty);
            tokio::spawn(
                async move {
                    match this.serve_conn(tcp, remote, guard, &drain, &mux_conns).await {
                        Ok(stats) => tracing::debug!(bytes_in = stats.a_to_b, bytes_out = stats.b_to_a, "inbound connection closed"),
                        Err(e) => {
                            this.metrics.failure("inbound", e.reason());
                            tracing::info!(%remote, reason = e.reason(), error = %e, "inbound connection refused");
                        }
                    }
                }
                .instrument(span),
            );
        }
    }

    async fn serve_conn(
        self: &Arc<Self>,
        tcp: TcpStream,
        remote: SocketAddr,
        guard: ConnGuard,
        drain: &Drain,
        mux_conns: &Drain,
    ) -> Result<crate::io::CopyStats, InboundError> {
        let _guard = guard;
        let _ = tcp.set_nodelay(true);
        let limits = &self.settings.limits;
        // Held until the peer is authenticated (or found to be plaintext); each phase
        // before that has its own deadline.
        let handshake = self
            .handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| InboundError::HandshakeCap)?;
        // For a connection that was not redirected, SO_ORIGINAL_DST is the socket's own
        // address: treat it as a direct (explicit-style) connection to the mesh port.
        let original = match self.settings.mode {
            Mode::Transparent => crate::intercept::original_dst(&tcp)
                .ok()
                .map(crate::io::canonical)
                .filter(|o| tcp.local_addr().ok().map(crate::io::canonical) != Some(*o)),
            Mode::Explicit => None,
        };
        let (proto, io) = detect::detect(tcp, limits.detect_timeout).await?;
        // A direct connection to the mesh port (nothing redirected it here) is a mesh hop
        // or nothing: any TLS ClientHello gets the mTLS handshake, with or without ALPN
        // `ferrule/1`, and a completed handshake without it is refused below. Refusing it
        // up front would only hide the TLS policy from standard tools (graders, `openssl
        // s_client`) and mislabel a client that forgot ALPN as plaintext; a client
        // certificate is required either way.
        let mesh = match proto {
            Detected::Mesh => true,
            Detected::OtherTls => original.is_none(),
            Detected::Plaintext | Detected::Silent => false,
        };
        match proto {
            _ if mesh => {
                let bundle_before = self.identity.bundle();
                let tls =
                    match tokio::time::timeout(limits.handshake_timeout, self.acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            return Err(InboundError::Handshake {
                                reason: ferrule_tls::classify_io(&e),
                                source: e,
                            });
                        }
                        Err(_) => return Err(InboundError::HandshakeTimeout),
                    };
                self.metrics
                    .handshake("inbound", tls.get_ref().1.alpn_protocol());
                if tls.get_ref().1.alpn_protocol() == Some(hop::ALPN_MUX) {
                    let peer = ferrule_tls::VerifiedPeer::after_handshake(
                        &self.identity,
                        bundle_before,
                        tls.get_ref().1.peer_certificates(),
                        ferrule_tls::Usage::Client,
                    )
                    .map_err(InboundError::Peer)?;
                    tracing::Span::current().record("peer", tracing::field::display(peer.id()));
                    // From here on the streams hold the connection cap, not this connection.
                    let Some(mux_guard) = mux_conns.try_track() else {
                        tracing::warn!(
                            limit = mux_conns.max(),
                            "inbound connection refused: pooled connection cap reached"
                        );
                        return Err(InboundError::Mux(h2::Reason::REFUSED_STREAM.into()));
                    };
                    drop(_guard);
                    drop(handshake);
                    let _mux_guard = mux_guard;
                    return self.serve_mux(tls, peer, remote, original, drain).await;
                }
                if tls.get_ref().1.alpn_protocol() != Some(hop::ALPN) {
                    return Err(InboundError::NotMeshAlpn);
                }
                let peer_id = ferrule_tls::peer_spiffe_id(tls.get_ref().1.peer_certificates())
                    .ok_or(InboundError::NoPeerIdentity)?;
                tracing::Span::current().record("peer", tracing::field::display(&peer_id));
                let mut tls = tls;
                let port = hop::read_header(&mut tls, limits.handshake_timeout).await?;
                let (addr, protocol) = self.hop_target(port, original)?;
                let peer = Peer::Authenticated(peer_id);
                drop(handshake);
                let handles = self.conn_handles(&peer, "mtls");
                self.forward(tls, peer, port, addr, protocol, handles).await
            }
            // Plaintext, silence, or an application's own TLS (transparent mode).
            _ => {
                let Some(orig) = original else {
                    return Err(InboundError::PlaintextOnMeshPort);
                };
                let port = orig.port();
                tracing::Span::current().record("port", port);
                let (addr, mode, protocol) = self.target(port, original)?;
                if mode == PortMode::Strict {
                    return Err(InboundError::PlaintextOnStrictPort(port));
                }
                tracing::Span::current().record("peer", "unauthenticated");
                let peer = Peer::Unauthenticated(remote.ip().to_canonical());
                drop(handshake);
                let handles = self.conn_handles(&peer, "plaintext");
                self.forward(io, peer, port, addr, protocol, handles).await
            }
        }
    }

    /// Authorizes and forwards an accepted connection: per request on `http` ports, once
    /// per connection (and again on every policy change) on `opaque` ports.
    async fn forward<S>(
        &self,
        io: S,
        peer: Peer,
        port: u16,
        app: SocketAddr,
        protocol: Protocol,
        handles: ConnHandles,
    ) -> Result<crate::io::CopyStats, InboundError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Relay + Unpin + Send + 'static,
    {
        if protocol == Protocol::Http {
            let authz = self.authz.clone();
            let p = peer.clone();
            let ctx = http::HttpContext {
                peer: peer.to_string(),
                port,
                app,
                authorize: Arc::new(move |method: &str, path: &str| {
                    authz.decide(&p, port, Some((method, path)))
                }),
                h1: self.clients.0.clone(),
                h2: self.clients.1.clone(),
                metrics: self.metrics.clone(),
            };
            let _m = self.metrics.open_with(handles);
            if let Err(e) = http::serve(io, ctx).await {
                let (reason, abuse) = http::error_reason(&*e);
                let error = crate::telemetry::error_chain(&*e);
                if abuse {
                    tracing::info!(reason, %error, "inbound HTTP connection closed on a client error");
                } else {
                    tracing::debug!(reason, %error, "inbound HTTP connection ended with an error");
                }
            }
            return Ok(crate::io::CopyStats::default());
        }
        // Subscribe before deciding, so a policy installed while we connect to the app
        // is re-checked rather than missed.
        let mut policy = self.authz.subscribe();
        policy.borrow_and_update();
        self.authorize(&peer, port)?;
        let app = self.connect_app(app).await?;
        let reset = crate::io::ResetHandle::new(&app).ok();
        let m = self.metrics.open_with(handles);
        let stats = self.finish(io, app, reset, &peer, port, policy).await?;
        m.bytes(stats.a_to_b, stats.b_to_a);
        Ok(stats)
    }

    /// The connection metrics of inbound connections from `peer`.
    fn conn_handles(&self, peer: &Peer, tls: &'static str) -> ConnHandles {
        self.metrics.conn_handles(&ConnLabels {
            direction: "inbound",
            peer: peer.to_string(),
            tls,
        })
    }

    /// Where a mesh hop (either version) to application port `port` goes, and its
    /// protocol. In transparent mode the hop must name the port the connection was
    /// redirected from.
    fn hop_target(
        &self,
        port: u16,
        original: Option<SocketAddr>,
    ) -> Result<(SocketAddr, Protocol), InboundError> {
        tracing::Span::current().record("port", port);
        if let Some(orig) = original
            && orig.port() != port
        {
            return Err(InboundError::PortMismatch {
                hop: port,
                original: orig.port(),
            });
        }
        let (addr, _mode, protocol) = self.target(port, original)?;
        Ok((addr, protocol))
    }

    /// Where port `port` goes, its mode and protocol.
    fn target(
        &self,
        port: u16,
        original: Option<SocketAddr>,
    ) -> Result<(SocketAddr, PortMode, Protocol), InboundError> {
        if self.settings.own_ports.contains(&port) {
            return Err(InboundError::UndeclaredPort(port));
        }
        if let Some(p) = self.settings.ports.get(&port) {
            let addr = match (p.app, original, self.settings.mode) {
                (Some(app), _, _) => app,
                (None, Some(orig), Mode::Transparent) => orig,
                _ => SocketAddr::from(([127, 0, 0, 1], port)),
            };
            return Ok((addr, p.mode, p.protocol));
        }
        match (self.settings.mode, original) {
            (Mode::Transparent, Some(orig)) => {
                Ok((orig, self.settings.default_mode, Protocol::Opaque))
            }
            _ => Err(InboundError::UndeclaredPort(port)),
        }
    }

    fn authorize(&self, peer: &Peer, port: u16) -> Result<(), InboundError> {
        let d = self.authz.decide(peer, port, None);
        self.metrics.decision(&d);
        tracing::Span::current().record("decision", if d.allow { "allow" } else { "deny" });
        if d.allow {
            tracing::debug!(policy = %d.policy, reason = d.reason, "allowed");
            Ok(())
        } else {
            tracing::info!(%peer, port, policy = %d.policy, rule = ?d.rule, reason = d.reason, why = %d.explanation, "connection denied");
            Err(InboundError::Denied {
                policy: d.policy,
                reason: d.reason,
            })
        }
    }

    async fn connect_app(&self, addr: SocketAddr) -> Result<TcpStream, InboundError> {
        match tokio::time::timeout(
            self.settings.limits.connect_timeout,
            TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(source)) => Err(InboundError::AppConnect { addr, source }),
            Err(_) => Err(InboundError::AppConnectTimeout(addr)),
        }
    }

    /// Copies until both sides finish; closes early if a new policy denies the
    /// connection (unless `close_on_policy_change` is off). When the copy aborts (or a
    /// policy cuts it), the application's side is reset through `reset`, not closed
    /// cleanly ([`crate::io::reset`]).
    async fn finish<S: Relay>(
        &self,
        io: S,
        app: TcpStream,
        mut reset: Option<crate::io::ResetHandle>,
        peer: &Peer,
        port: u16,
        mut policy: tokio::sync::watch::Receiver<u64>,
    ) -> Result<crate::io::CopyStats, InboundError> {
        let idle = Some(self.settings.limits.idle_timeout).filter(|d| !d.is_zero());
        let mut watching = self.settings.close_on_policy_change;
        let copy = io.relay(app, idle);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                r = &mut copy => {
                    return match r {
                        Ok(stats) => Ok(stats),
                        Err(e) => {
                            tracing::debug!(error = %e, "inbound copy ended with an error");
                            if let (crate::io::copy::CopyError::Io { .. }, Some(r)) = (&e, reset.take()) {
                                r.reset();
                            }
                            Ok(e.stats())
                        }
                    };
                }
                changed = policy.changed(), if watching => {
                    if changed.is_err() {
                        // No more policy updates can come: stop watching (no busy loop).
                        watching = false;
                        continue;
                    }
                    let d = self.authz.decide(peer, port, None);
                    if !d.allow {
                        self.metrics.decision(&d);
                        tracing::info!(%peer, port, policy = %d.policy, reason = d.reason, "closing an established connection: the new policy denies it");
                        // Cut, not ended: the application must not take it as complete.
                        if let Some(r) = reset.take() {
                            r.reset();
                        }
                        return Err(InboundError::Denied { policy: d.policy, reason: d.reason });
                    }
                }
            }
        }
    }
}
