//! The pooled mesh hop, ALPN `ferrule/2`: many application connections over one mTLS
//! connection between two proxies, each an HTTP/2 `CONNECT` stream.
//!
//! ```text
//! client proxy                                          server proxy
//!   TLS 1.3, ALPN "ferrule/2" (offered before "ferrule/1"), both X.509-SVIDs
//!   HTTP/2 preface, SETTINGS  ◄────────────────────────► SETTINGS
//!   per application connection:
//!   HEADERS :method CONNECT, :authority <ip>:<port> ──►  port = what the hop header said;
//!   DATA (app bytes, sent at once, no round trip)        peer re-checked, port rules,
//!                                                        authorization, connect the app
//!                                ◄── HEADERS :status 200, sent with the app's first bytes
//!   DATA both ways; END_STREAM = half-close (FIN); RST_STREAM = abort (reset)
//! ```
//!
//! * **Backpressure** is HTTP/2 flow control per stream ([`STREAM_WINDOW`]) and per
//!   connection ([`CONNECTION_WINDOW`], the sum of [`MAX_STREAMS`] stream windows): a slow
//!   application slows its own stream only, and a proxy buffers at most a window per stream.
//! * **Half-close and aborts** map one to one: an application's FIN becomes END_STREAM
//!   and the other proxy shuts down the write side of its socket; an error on either
//!   side resets the stream, which the other side reports as an error, never as a clean
//!   end of data.
//! * **Trust.** The connection was verified once, at its handshake. Before every new
//!   stream, each side checks that the peer still passes verification *now*
//!   ([`ferrule_tls::VerifiedPeer::check`]: no certificate of its chain expired, and the
//!   chain re-verified after any trust-bundle change), and that it still holds its own
//!   certificate; otherwise the stream is refused and no new stream is opened on that
//!   connection. Streams already open continue, as established connections do after a
//!   rotation.
//! * **Limits.** A server advertises [`MAX_STREAMS`] concurrent streams, and each stream
//!   takes one slot of the inbound connection cap, like a version-1 connection. Rapid
//!   reset (CVE-2023-44487) is bounded as on the L7 ports.
//!
//! [`MuxStream`] turns one stream into an `AsyncRead + AsyncWrite` byte stream, so the
//! L7 handler runs over it unchanged; opaque ports relay it to the application without
//! an intermediate copy (`mux::relay`). DATA frames may be up to [`MAX_FRAME`] bytes, so
//! a bulk transfer fills four 16 KiB TLS records per frame instead of two records (one
//! of them 9 bytes) per 16 KiB frame.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::HopError;

/// Receive window per stream: what one application connection may have in flight.
pub const STREAM_WINDOW: u32 = 2 << 20;
/// Concurrent streams a server accepts on one connection (and a client opens on one).
pub const MAX_STREAMS: u32 = 16;
/// Receive window per connection, shared by its streams: the sum of every stream's window,
/// so streams whose applications stop reading can never use up the connection's window
/// and stall the other streams (head-of-line blocking; a deadlock if an application waits
/// on one stream before draining another).
pub const CONNECTION_WINDOW: u32 = STREAM_WINDOW * MAX_STREAMS;
/// Longest request header block a server accepts (a CONNECT needs a few dozen bytes).
pub const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Largest DATA frame either side accepts (SETTINGS_MAX_FRAME_SIZE).
pub const MAX_FRAME: u32 = 64 * 1024;

pub mod batch;
mod relay;
pub use relay::BULK_READ;

/// The client side's HTTP/2 settings.
pub fn client_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false);
    b
}

/// The server side's HTTP/2 settings.
pub fn server_builder() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(32)
        .max_local_error_reset_streams(Some(64));
    b
}

/// The request that opens a stream to application port `port`; `host` is informational
/// (the address the client dialled).
pub fn connect_request(host: std::net::IpAddr, port: u16) -> Result<Request<()>, HopError> {
    let authority = std::net::SocketAddr::new(host, port).to_string();
    Request::builder()
        .method(Method::CONNECT)
        .uri(authority)
        .body(())
        .map_err(|_| HopError::BadConnect("unrepresentable authority"))
}

/// The application port a stream's request names (server side).
pub fn parse_connect<T>(req: &Request<T>) -> Result<u16, HopError> {
    if req.method() != Method::CONNECT {
        return Err(HopError::BadConnect("method is not CONNECT"));
    }
    let authority = req
        .uri()
        .authority()
        .ok_or(HopError::BadConnect("no authority"))?;
    match authority.port_u16() {
        None => Err(HopError::BadConnect("no port in the authority")),
        Some(0) => Err(HopError::ZeroPort),
        Some(p) => Ok(p),
    }
}

enum SendSide {
    /// Server: the `200` goes out with the first bytes (or the end) the application sends,
    /// in the same write.
    Respond(h2::server::SendResponse<Bytes>),
    Open(h2::SendStream<Bytes>),
    /// END_STREAM sent (or sending failed).
    Closed,
}

impl SendSide {
    /// The stream to send DATA on; a server sends its `200` first.
    fn stream(&mut self) -> io::Result<&mut h2::SendStream<Bytes>> {
        if matches!(self, SendSide::Respond(_)) {
            let SendSide::Respond(mut respond) = std::mem::replace(self, SendSide::Closed) else {
                unreachable!("checked above")
            };
            let stream = respond
                .send_response(Response::new(()), false)
                .map_err(h2_io)?;
            *self = SendSide::Open(stream);
        }
        match self {
            SendSide::Open(s) => Ok(s),
            _ => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Ends our direction: END_STREAM (a server that has not answered yet sends its
    /// `200` with it). Idempotent.
    fn end(&mut self) -> io::Result<()> {
        match std::mem::replace(self, SendSide::Closed) {
            SendSide::Respond(mut respond) => {
                respond
                    .send_response(Response::new(()), true)
                    .map_err(h2_io)?;
            }
            SendSide::Open(mut send) => {
                // Hand back any capacity still reserved, then END_STREAM (needs none).
                send.reserve_capacity(0);
                send.send_data(Bytes::new(), true).map_err(h2_io)?;
            }
            SendSide::Closed => {}
        }
        Ok(())
    }
}

enum RecvSide {
    /// Client: waiting for the server's response headers.
    Response(h2::client::ResponseFuture),
    Open(h2::RecvStream),
    /// END_STREAM received.
    Done,
}

/// One `ferrule/2` stream as a byte stream. Dropping it before both directions ended
/// resets the stream (the peer sees an abort).
pub struct MuxStream {
    send: SendSide,
    recv: RecvSide,
    /// Rest of the last DATA frame, not read yet.
    buf: Bytes,
    /// Dropped with the stream (e.g. the pool's accounting of live streams).
    _hold: Option<Box<dyn Send + Sync>>,
}

impl MuxStream {
    /// The client side of a stream opened with [`connect_request`].
    pub fn client(send: h2::SendStream<Bytes>, response: h2::client::ResponseFuture) -> Self {
        Self {
            send: SendSide::Open(send),
            recv: RecvSide::Response(response),
            buf: Bytes::new(),
            _hold: None,
        }
    }

    /// The server side of an accepted stream; the `200` is sent with the first bytes.
    pub fn server(body: h2::RecvStream, respond: h2::server::SendResponse<Bytes>) -> Self {
        Self {
            send: SendSide::Respond(respond),
            recv: RecvSide::Open(body),
            buf: Bytes::new(),
            _hold: None,
        }
    }

    /// Keeps `value` alive as long as the stream.
    pub fn hold(mut self, value: impl Send + Sync + 'static) -> Self {
        self._hold = Some(Box::new(value));
        self
    }
}

/// An HTTP/2 error as an I/O error. A stream reset is an abort, never an end of data.
fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

/// The body of a stream's response; a status other than `200` is the server proxy's
/// refusal (client side).
fn response_body(resp: Response<h2::RecvStream>) -> io::Result<h2::RecvStream> {
    if resp.status() != StatusCode::OK {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("the server proxy refused the stream: {}", resp.status()),
        ));
    }
    Ok(resp.into_body())
}

/// Waits until `send` has flow-control capacity (reserve it first) and returns it.
fn poll_capacity(
    send: &mut h2::SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        let cap = send.capacity();
        if cap > 0 {
            return Poll::Ready(Ok(cap));
        }
        match ready!(send.poll_capacity(cx)) {
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
            None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.buf.is_empty() {
                let n = this.buf.len().min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            match &mut this.recv {
                RecvSide::Response(response) => {
                    let resp = ready!(Pin::new(response).poll(cx)).map_err(h2_io)?;
                    match response_body(resp) {
                        Ok(body) => this.recv = RecvSide::Open(body),
                        Err(e) => {
                            this.recv = RecvSide::Done;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                RecvSide::Open(body) => match ready!(body.poll_data(cx)) {
                    Some(Ok(data)) => {
                        // At most one frame is held here beyond the window.
                        let _ = body.flow_control().release_capacity(data.len());
                        this.buf = data;
                    }
                    Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                    None => {
                        this.recv = RecvSide::Done;
                        return Poll::Ready(Ok(()));
                    }
                },
                RecvSide::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let send = self.send.stream()?;
        // Total reservation (not additive); what is not used is given back below.
        send.reserve_capacity(buf.len());
        let n = ready!(poll_capacity(send, cx))?.min(buf.len());
        send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data handed to h2 is written by the connection task, in order.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.send.end())
    }
}

#[cfg(test)]
mod tests;
