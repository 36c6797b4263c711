//! The client side's pool of mesh connections: one mTLS connection per (server proxy
//! address, expected server identity) carries many application connections as
//! `ferrule/2` streams (`hop::mux`), so a new application connection costs a stream, not
//! a handshake.
//!
//! Rules, all fail closed:
//! * A pooled connection takes a new stream only while it still presents our *current*
//!   certificate (after our renewal, new streams go on a new connection), and while its
//!   server still passes verification now ([`ferrule_tls::VerifiedPeer::check`]: chain
//!   not expired, re-verified after any trust-bundle change). Otherwise it is retired: no
//!   new streams; its live streams finish; it closes when the last one ends.
//! * One dial at a time per key: a burst of new application connections waits for one
//!   handshake instead of starting one each. At most [`STREAMS_PER_CONNECTION`] streams per
//!   connection; more open another connection.
//! * A server that answers `ferrule/1` (an older proxy) is dialled per application
//!   connection, as before, for [`V1_RETRY`] before `ferrule/2` is offered again.
//! * A connection without streams for `outbound.pool_idle_timeout` (default 60 s) is
//!   closed. Every
//!   [`KEEPALIVE_INTERVAL`] the client sends an HTTP/2 PING; a server that does not answer
//!   within [`KEEPALIVE_TIMEOUT`] (a dead host or a hung process, which a version-1
//!   connection would have met as a handshake timeout) has its connection closed, and
//!   every stream on it fails instead of hanging.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferrule_tls::{Credentials, Usage, VerifiedPeer};
use spiffe::SpiffeId;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Outbound, OutboundError};
use crate::hop::mux::batch::{Batched, FlushHandle, batched};
use crate::hop::{self, mux::MuxStream};
use crate::metrics::{ConnHandles, ConnLabels};

/// Streams per pooled connection before another connection is opened (each connection is
/// served by one task, so several spread the work over the runtime's workers).
/// As many as the server accepts ([`MAX_STREAMS`](crate::hop::mux::MAX_STREAMS)), whose
/// connection window covers every stream's window.
pub const STREAMS_PER_CONNECTION: usize = crate::hop::mux::MAX_STREAMS as usize;
/// How long a server that answered `ferrule/1` is dialled per connection before
/// `ferrule/2` is offered to it again.
pub const V1_RETRY: Duration = Duration::from_secs(60);
/// How often a pooled connection proves its server is alive (HTTP/2 PING).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a connection's task looks for idleness and unanswered PINGs (at most; more
/// often with a short idle timeout).
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// How an application connection reaches the server proxy.
pub enum Hop {
    /// A stream on a pooled `ferrule/2` connection, and the connection's metrics.
    Pooled(MuxStream, ConnHandles),
    /// A `ferrule/1` connection of its own (the caller writes the hop header).
    Single(Box<TlsStream<TcpStream>>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    server_id: SpiffeId,
}

type Slots = Arc<Mutex<HashMap<Key, Arc<Slot>>>>;

/// The pooled connections of every key.
#[derive(Default)]
pub struct Pool {
    slots: Slots,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Slot {
    /// Held while dialling, so concurrent callers share one handshake.
    dialing: tokio::sync::Mutex<()>,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Until when the server is known to answer only `ferrule/1`.
    v1_until: Mutex<Option<Instant>>,
}

/// One pooled `ferrule/2` connection.
struct Conn {
    id: u64,
    send: h2::client::SendRequest<Bytes>,
    peer: VerifiedPeer,
    /// The credentials we held when dialling: streams go on only while they are current.
    creds: Arc<Credentials>,
    /// Metrics of its streams, resolved once.
    handles: ConnHandles,
    /// Streams open, plus reservations of callers about to open one.
    live: AtomicUsize,
    idle_since: Mutex<Instant>,
    retired: AtomicBool,
}

/// Counts a stream for its connection while it lives.
struct StreamGuard(Arc<Conn>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    fn v1_only(&self) -> bool {
        lock(&self.v1_until).is_some_and(|t| Instant::now() < t)
    }

    /// A connection that may take one more stream now, with that stream reserved;
    /// retires (and forgets) the ones that may not.
    fn pick(&self, out: &Outbound) -> Option<StreamGuard> {
        let creds = out.identity.credentials();
        let now = SystemTime::now();
        let mut conns = lock(&self.conns);
        let mut chosen = None;
        conns.retain(|c| {
            if c.retired.load(Ordering::Acquire) {
                return false;
            }
            if !creds.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &c.creds)) {
                tracing::debug!(conn = c.id, "pooled mesh connection retired: our certificate changed");
                c.retired.store(true, Ordering::Release);
                return false;
            }
            if let Err(e) = c.peer.check(&out.identity, now) {
                tracing::info!(conn = c.id, server_id = %c.peer.id(), reason = e.reason(), error = %e,
                    "pooled mesh connection retired: the server no longer passes verification");
                out.metrics.failure("outbound", e.reason());
                c.retired.store(true, Ordering::Release);
                return false;
            }
            if chosen.is_none() && c.live.load(Ordering::Acquire) < STREAMS_PER_CONNECTION {
                c.live.fetch_add(1, Ordering::AcqRel);
                chosen = Some(StreamGuard(c.clone()));
            }
            true
        });
        chosen
    }
}

impl Pool {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        lock(&self.slots).entry(key.clone()).or_default().clone()
    }
}

impl Outbound {
    /// A way to the server proxy at `addr`, which must prove `server_id`, for application
    /// port `port`: a stream on a pooled connection, or (pooling off, or an older server)
    /// a connection of its own.
    pub(super) async fn open_hop(
        &self,
        addr: SocketAddr,
        server_id: &SpiffeId,
        port: u16,
    ) -> Result<Hop, OutboundError> {
        if !self.settings.pool {
            return Ok(Hop::Single(Box::new(
                self.dial(addr, server_id, false).await?.0,
            )));
        }
        let key = Key {
            addr,
            server_id: server_id.clone(),
        };
        let slot = self.pool.slot(&key);
        if slot.v1_only() {
            return Ok(Hop::Single(Box::new(
                self.dial(addr, server_id, false).await?.0,
            )));
        }
        if let Some(s) = self.stream_on_pooled(&slot, addr, port).await {
            return Ok(s);
        }
        let dialing = slot.dialing.lock().await;
        // Someone else may have dialled while we waited.
        if let Some(s) = self.stream_on_pooled(&slot, addr, port).await {
            return Ok(s);
        }
        let creds = self
            .identity
            .credentials()
            .ok_or(OutboundError::NoCertificate)?;
        let (tls, bundle_before) = self.dial(addr, server_id, true).await?;
        if tls.get_ref().1.alpn_protocol() != Some(hop::ALPN_MUX) {
            tracing::debug!(%addr, "server proxy speaks ferrule/1 only; not pooling");
            *lock(&slot.v1_until) = Some(Instant::now() + V1_RETRY);
            return Ok(Hop::Single(Box::new(tls)));
        }
        let peer = VerifiedPeer::after_handshake(
            &self.identity,
            bundle_before,
            tls.get_ref().1.peer_certificates(),
            Usage::Server,
        )
        .map_err(|e| OutboundError::Peer { addr, source: e })?;
        if peer.id() != server_id {
            // The verifier pinned it; never pool a connection on a mismatch regardless.
            return Err(OutboundError::Peer {
                addr,
                source: ferrule_tls::VerifyError::IdentityMismatch {
                    expected: vec![server_id.clone()],
                    got: peer.id().clone(),
                },
            });
        }
        let (io, flush) = batched(tls);
        let (send, connection) = hop::mux::client_builder()
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| OutboundError::Stream { addr, source: e })?;
        let conn = Arc::new(Conn {
            id: self.pool.next_id.fetch_add(1, Ordering::Relaxed),
            send,
            peer,
            creds,
            handles: self.metrics.conn_handles(&ConnLabels {
                direction: "outbound",
                peer: server_id.to_string(),
                tls: "mtls",
            }),
            live: AtomicUsize::new(1), // this caller's stream
            idle_since: Mutex::new(Instant::now()),
            retired: AtomicBool::new(false),
        });
        lock(&slot.conns).push(conn.clone());
        tracing::debug!(conn = conn.id, %addr, server_id = %server_id, "pooled mesh connection established");
        tokio::spawn(drive(
            self.settings.pool_idle_timeout,
            connection,
            flush,
            Arc::downgrade(&conn),
            key,
            Arc::downgrade(&self.pool.slots),
        ));
        drop(dialing);
        self.open_stream(StreamGuard(conn), addr, port).await
    }

    /// A stream on an existing pooled connection, if one can take it.
    async fn stream_on_pooled(&self, slot: &Slot, addr: SocketAddr, port: u16) -> Option<Hop> {
        loop {
            let guard = slot.pick(self)?;
            let conn = guard.0.clone();
            match self.open_stream(guard, addr, port).await {
                Ok(s) => return Some(s),
                Err(e) => {
                    // Closed or going away (GOAWAY): never again, try the next one.
                    tracing::debug!(conn = conn.id, error = %e, "pooled mesh connection unusable");
                    conn.retired.store(true, Ordering::Release);
                }
            }
        }
    }

    async fn open_stream(
        &self,
        guard: StreamGuard,
        addr: SocketAddr,
        port: u16,
    ) -> Result<Hop, OutboundError> {
        let stream_err = |source| OutboundError::Stream { addr, source };
        let mut send = guard.0.send.clone().ready().await.map_err(stream_err)?;
        let req =
            hop::mux::connect_request(addr.ip(), port).map_err(|e| OutboundError::Connect {
                addr,
                source: std::io::Error::other(e),
            })?;
        let (response, stream) = send.send_request(req, false).map_err(stream_err)?;
        let handles = guard.0.handles.clone();
        Ok(Hop::Pooled(
            MuxStream::client(stream, response).hold(guard),
            handles,
        ))
    }
}

/// Drives one pooled connection until it closes; retires it when it has been idle for
/// `idle_timeout`, and forgets its key when nothing else uses it.
async fn drive(
    idle_timeout: Duration,
    mut connection: h2::client::Connection<Batched<TlsStream<TcpStream>>, Bytes>,
    mut flush: FlushHandle<TlsStream<TcpStream>>,
    conn: Weak<Conn>,
    key: Key,
    slots: Weak<Mutex<HashMap<Key, Arc<Slot>>>>,
) {
    let mut ping = connection.ping_pong();
    tokio::pin!(connection);
    let mut tick = tokio::time::interval(
        IDLE_CHECK
            .min(idle_timeout / 2)
            .max(Duration::from_millis(50)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    let mut unanswered: Option<Instant> = None;
    loop {
        tokio::select! {
            // Each turn of h2 queues frames; one flush sends them all (`hop::mux::batch`).
            r = std::future::poll_fn(|cx| {
                let r = connection.as_mut().poll(cx).map_err(|e| e.to_string());
                match flush.poll_flush(cx) {
                    std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e.to_string())),
                    _ => r,
                }
            }) => {
                if let Err(e) = r {
                    tracing::debug!(addr = %key.addr, error = %e, "pooled mesh connection ended with an error");
                }
                break;
            }
            pong = std::future::poll_fn(|cx| match ping.as_mut() {
                Some(p) => p.poll_pong(cx),
                None => std::task::Poll::Pending,
            }), if unanswered.is_some() => {
                if pong.is_ok() {
                    unanswered = None;
                }
            }
            _ = tick.tick() => {
                if unanswered.is_some_and(|t| t.elapsed() >= KEEPALIVE_TIMEOUT) {
                    tracing::warn!(addr = %key.addr, "pooled mesh connection unresponsive (no PING answer); closing it and its streams");
                    break;
                }
                if unanswered.is_none() && last_ping.elapsed() >= KEEPALIVE_INTERVAL {
                    if let Some(p) = ping.as_mut() && p.send_ping(h2::Ping::opaque()).is_ok() {
                        unanswered = Some(Instant::now());
                    }
                    last_ping = Instant::now();
                }
                let Some(c) = conn.upgrade() else { continue };
                let idle = c.live.load(Ordering::Acquire) == 0
                    && lock(&c.idle_since).elapsed() >= idle_timeout;
                if idle && !c.retired.swap(true, Ordering::AcqRel) {
                    tracing::debug!(conn = c.id, addr = %key.addr, "idle pooled mesh connection closed");
                }
                if c.retired.load(Ordering::Acquire) {
                    // Dropping the pool's handle lets h2 close the connection once its
                    // last stream ends.
                    forget(&slots, &key, &c);
                }
            }
        }
    }
    if let Some(c) = conn.upgrade() {
        c.retired.store(true, Ordering::Release);
        forget(&slots, &key, &c);
    }
}

/// Removes `conn` from its slot, and the slot from the pool when nothing uses it.
fn forget(slots: &Weak<Mutex<HashMap<Key, Arc<Slot>>>>, key: &Key, conn: &Arc<Conn>) {
    let Some(slots) = slots.upgrade() else {
        return;
    };
    let mut map = lock(&slots);
    if let Some(slot) = map.get(key) {
        let empty = {
            let mut conns = lock(&slot.conns);
            conns.retain(|c| !Arc::ptr_eq(c, conn));
            conns.is_empty()
        };
        // Only the map holds the slot: nobody is dialling or picking from it.
        if empty && Arc::strong_count(slot) == 1 && !slot.v1_only() {
            map.remove(key);
        }
    }
}
