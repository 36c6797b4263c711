//! Inbound `ferrule/2` connections: one mTLS connection from a client proxy carries many
//! application connections as HTTP/2 `CONNECT` streams (see `hop::mux` for the protocol).
//!
//! The connection's task accepts streams; before each one it checks, failing closed:
//! * we still hold a certificate (an expired one is withdrawn: no new work is accepted
//!   under it);
//! * the client still passes verification now ([`VerifiedPeer::check`]: no expired
//!   certificate in its chain, chain re-verified after any trust-bundle change). If not,
//!   the stream is refused and the connection told to go away (GOAWAY): the client
//!   must handshake again, against the current bundle;
//! * a slot of the inbound connection cap is free (one per stream, as per version-1
//!   connection).
//!
//! Then each stream runs in its own task exactly like a version-1 connection after its
//! hop header: port rules, authorization (per request on `http` ports), app connection,
//! copy loop, closing on a policy that denies it. On shutdown the connection sends
//! GOAWAY and its live streams drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use ferrule_tls::VerifiedPeer;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use super::{Inbound, InboundError};
use crate::drain::{ConnGuard, Drain};
use crate::hop::mux::batch::batched;
use crate::hop::{self, mux::MuxStream};
use crate::io::{CopyStats, PrefixedIo};
use crate::policy::Peer;

impl Inbound {
    /// Serves a `ferrule/2` connection until the client closes it (or shutdown drains it).
    pub(super) async fn serve_mux(
        self: &Arc<Self>,
        tls: TlsStream<PrefixedIo<TcpStream>>,
        peer: VerifiedPeer,
        remote: SocketAddr,
        original: Option<SocketAddr>,
        drain: &Drain,
    ) -> Result<CopyStats, InboundError> {
        let limits = &self.settings.limits;
        // Frames go out once per turn of this task (`hop::mux::batch`).
        let (io, mut flush) = batched(tls);
        let mut conn = match tokio::time::timeout(
            limits.handshake_timeout,
            hop::mux::server_builder().handshake::<_, Bytes>(io),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(InboundError::Mux(e)),
            Err(_) => return Err(InboundError::HandshakeTimeout),
        };
        let peer = Arc::new(peer);
        // Every stream of this connection has the same peer: resolve its metrics once.
        let handles = self.conn_handles(&Peer::Authenticated(peer.id().clone()), "mtls");
        let mut going_away = false;
        let mut streams = 0u64;
        loop {
            let next = tokio::select! {
                next = std::future::poll_fn(|cx| {
                    let next = conn.poll_accept(cx);
                    match flush.poll_flush(cx) {
                        std::task::Poll::Ready(Err(e)) => {
                            tracing::debug!(error = %e, "pooled mesh connection: write failed");
                            std::task::Poll::Ready(None)
                        }
                        _ => next,
                    }
                }) => next,
                _ = drain.signaled(), if !going_away => {
                    conn.graceful_shutdown();
                    going_away = true;
                    continue;
                }
            };
            let (req, mut respond) = match next {
                None => break,
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, streams, "pooled mesh connection ended with an error");
                    break;
                }
            };
            if let Err(e) = self.admit(&peer) {
                self.metrics.failure("inbound", e.reason());
                tracing::info!(%remote, peer = %peer.id(), reason = e.reason(), error = %e, "stream refused; asking the client to reconnect");
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                if !going_away {
                    conn.graceful_shutdown();
                    going_away = true;
                }
                continue;
            }
            let Some(guard) = drain.try_track() else {
                tracing::warn!(
                    %remote,
                    limit = drain.max(),
                    "inbound connection refused: connection cap reached"
                );
                self.metrics.failure("inbound", "connection_cap");
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                continue;
            };
            streams += 1;
            let this = self.clone();
            let peer = peer.clone();
            let handles = handles.clone();
            // Same (debug-level) span as a version-1 connection's, so logs read the same.
            let span = tracing::debug_span!(parent: None, "inbound", %remote, peer = %peer.id(), port = tracing::field::Empty, decision = tracing::field::Empty);
            tokio::spawn(
                async move {
                    match this.serve_stream(req, respond, &peer, original, guard, handles).await {
                        Ok(stats) => tracing::debug!(bytes_in = stats.a_to_b, bytes_out = stats.b_to_a, "inbound stream closed"),
                        Err(e) => {
                            this.metrics.failure("inbound", e.reason());
                            tracing::info!(%remote, peer = %peer.id(), reason = e.reason(), error = %e, "inbound connection refused");
                        }
                    }
                }
                .instrument(span),
            );
        }
        Ok(CopyStats::default())
    }

    /// Whether a new stream may be accepted on a connection from `peer` now.
    fn admit(&self, peer: &VerifiedPeer) -> Result<(), InboundError> {
        if self.identity.credentials().is_none() {
            return Err(InboundError::Handshake {
                reason: "no_local_certificate",
                source: std::io::Error::other("our certificate was withdrawn"),
            });
        }
        peer.check(&self.identity, SystemTime::now())
            .map_err(InboundError::Peer)
    }

    /// One stream: the version-1 path after the hop header.
    async fn serve_stream(
        &self,
        req: http::Request<h2::RecvStream>,
        respond: h2::server::SendResponse<Bytes>,
        peer: &VerifiedPeer,
        original: Option<SocketAddr>,
        guard: ConnGuard,
        handles: crate::metrics::ConnHandles,
    ) -> Result<CopyStats, InboundError> {
        let _guard = guard;
        let port = hop::mux::parse_connect(&req)?;
        let (addr, protocol) = self.hop_target(port, original)?;
        let io = MuxStream::server(req.into_body(), respond);
        let peer = Peer::Authenticated(peer.id().clone());
        self.forward(io, peer, port, addr, protocol, handles).await
    }
}

#[cfg(test)]
mod tests;
