//! Relaying a `ferrule/2` stream to the application's TCP connection without an
//! intermediate copy (the generic copy loop reads into a buffer and writes from it, which
//! for an HTTP/2 stream would add a copy each way).
//!
//! * Application → peer: read from the socket straight into a `BytesMut` (allocated when
//!   the socket is first readable: an idle connection holds no buffer), and hand the
//!   frozen bytes to h2, which writes them to TLS from there. Reads are sized so that a
//!   full DATA frame and its 9-byte header fill exactly four 16 KiB TLS records
//!   ([`BULK_READ`]); small exchanges use a small buffer ([`FIRST_READ`]).
//! * Peer → application: write each DATA frame's bytes to the socket from h2's own
//!   buffer, and give the flow-control window back only once the application took them
//!   (backpressure).
//!
//! Semantics are the copy loop's: END_STREAM ↔ FIN both ways, an error on either side
//! ends both (the caller then resets the application's connection, and dropping the
//! stream resets it for the peer), the idle timeout.

use std::future::{Future, poll_fn};
use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::{MuxStream, RecvSide, SendSide, h2_io, poll_capacity, response_body};
use crate::io::Relay;
use crate::io::copy::{Activity, CopyError, CopyStats, join_directions};

/// First read from the application: enough for a typical request or response.
pub const FIRST_READ: usize = 16 * 1024;
/// Reads once a read filled its buffer (a bulk transfer): with the 9-byte DATA frame
/// header, exactly four full TLS records (4 × 16,384 bytes).
pub const BULK_READ: usize = 4 * 16 * 1024 - 9;

impl Relay for MuxStream {
    fn relay(
        self,
        app: TcpStream,
        idle_timeout: Option<Duration>,
    ) -> impl Future<Output = Result<CopyStats, CopyError>> + Send {
        relay(self, app, idle_timeout)
    }
}

async fn relay(
    mux: MuxStream,
    mut app: TcpStream,
    idle_timeout: Option<Duration>,
) -> Result<CopyStats, CopyError> {
    let MuxStream {
        mut send,
        recv,
        buf,
        _hold: hold,
    } = mux;
    let (mut ar, mut aw) = app.split();
    let activity = Activity::new(idle_timeout);
    let to_app = to_app(recv, buf, &mut aw, &activity);
    let from_app = from_app(&mut ar, &mut send, &activity);
    let r = join_directions(to_app, from_app, &activity).await;
    drop(hold);
    r
}

/// Peer → application. Returns the bytes written to the application.
async fn to_app(
    recv: RecvSide,
    pending: Bytes,
    aw: &mut WriteHalf<'_>,
    activity: &Activity,
) -> Result<u64, (u64, io::Error)> {
    let mut total = 0u64;
    if !pending.is_empty() {
        aw.write_all(&pending).await.map_err(|e| (total, e))?;
        total += pending.len() as u64;
    }
    let mut body = match recv {
        RecvSide::Response(response) => {
            let resp = response.await.map_err(|e| (total, h2_io(e)))?;
            response_body(resp).map_err(|e| (total, e))?
        }
        RecvSide::Open(body) => body,
        RecvSide::Done => return shutdown(aw, total).await,
    };
    loop {
        let data = match poll_fn(|cx| body.poll_data(cx)).await {
            None => break,
            Some(Ok(data)) => data,
            Some(Err(e)) => return Err((total, h2_io(e))),
        };
        if data.is_empty() {
            continue;
        }
        aw.write_all(&data).await.map_err(|e| (total, e))?;
        // The window reopens only for what the application took.
        let _ = body.flow_control().release_capacity(data.len());
        total += data.len() as u64;
        activity.moved();
    }
    shutdown(aw, total).await
}

async fn shutdown(aw: &mut WriteHalf<'_>, total: u64) -> Result<u64, (u64, io::Error)> {
    match aw.shutdown().await {
        // The application may already be gone after a clean end; that's not data loss.
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err((total, e)),
        _ => Ok(total),
    }
}

/// Application → peer. Returns the bytes read from the application.
async fn from_app(
    ar: &mut ReadHalf<'_>,
    send: &mut SendSide,
    activity: &Activity,
) -> Result<u64, (u64, io::Error)> {
    let mut buf = BytesMut::new();
    let mut want = FIRST_READ;
    let mut total = 0u64;
    loop {
        // No buffer until there is something to read.
        ar.readable().await.map_err(|e| (total, e))?;
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        // `read_buf` (not `try_read_buf`): tokio treats a short read as "drained" and
        // waits for the next readiness, saving a read that would only say EAGAIN.
        let n = match ar.read_buf(&mut (&mut buf).limit(want)).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err((total, e)),
        };
        if n == want {
            want = BULK_READ;
        }
        send_all(send, buf.split().freeze())
            .await
            .map_err(|e| (total, e))?;
        total += n as u64;
        activity.moved();
    }
    // END_STREAM (with the `200` first on a server that has not answered yet).
    send.end().map_err(|e| (total, e))?;
    Ok(total)
}

/// Hands `data` to h2 as the stream's flow-control window allows (no copy: `Bytes`
/// slices of the same buffer).
async fn send_all(send: &mut SendSide, mut data: Bytes) -> io::Result<()> {
    let stream = send.stream()?;
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let cap = poll_fn(|cx| poll_capacity(stream, cx)).await?;
        let part = data.split_to(cap.min(data.len()));
        stream.send_data(part, false).map_err(h2_io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
