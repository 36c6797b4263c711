//! The copy loop: moves bytes both ways between two streams until both directions end.
//!
//! * Backpressure: each direction has one fixed buffer; we read only after the previous
//!   chunk is fully written, so a slow reader slows the writer down instead of growing
//!   memory.
//! * Half-close: when one side ends its stream (EOF), we shut down the write side of the
//!   other (FIN, or TLS close_notify then FIN) and keep copying the other direction —
//!   request/response protocols that half-close keep working.
//! * Nothing is lost or reordered: a direction only finishes after a flush of everything
//!   it read. An error in either direction aborts both (the peers then see a reset).
//! * Optional idle timeout: the connection is closed when no byte moved either way for
//!   that long.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Buffer per direction. 64 KiB lets one read drain several TLS records.
pub const BUF_SIZE: usize = 64 * 1024;

/// Bytes moved in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// From `a` to `b`.
    pub a_to_b: u64,
    /// From `b` to `a`.
    pub b_to_a: u64,
}

/// How a copy ended when it did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// An I/O error in one direction, with the bytes moved until then.
    #[error("{direction}: {source} (after {stats:?})")]
    Io {
        direction: &'static str,
        stats: CopyStats,
        #[source]
        source: std::io::Error,
    },
    /// Nothing moved for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration, CopyStats),
}

impl CopyError {
    /// Bytes moved before the copy ended.
    pub fn stats(&self) -> CopyStats {
        match self {
            Self::Io { stats, .. } | Self::Idle(_, stats) => *stats,
        }
    }
}

/// Copies `a` → `b` and `b` → `a` until both directions reach EOF (see module docs).
pub async fn copy_bidirectional<A, B>(
    a: A,
    b: B,
    idle_timeout: Option<Duration>,
) -> Result<CopyStats, CopyError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let activity = Activity::new(idle_timeout);
    let forward = pump(&mut ar, &mut bw, &activity);
    let backward = pump(&mut br, &mut aw, &activity);
    join_directions(forward, backward, &activity).await
}

/// Signals traffic to the idle timeout; free when there is none.
pub(crate) struct Activity {
    timeout: Option<Duration>,
    tx: tokio::sync::watch::Sender<()>,
}

impl Activity {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            tx: tokio::sync::watch::Sender::new(()),
        }
    }

    /// Bytes moved: restart the idle timer. Without an idle timeout nobody listens, so
    /// the per-chunk signal is skipped (a hot path).
    pub(crate) fn moved(&self) {
        if self.timeout.is_some() {
            self.tx.send_replace(());
        }
    }
}

/// Runs the two directions of a copy until both ended (`Ok`), one failed, or nothing
/// moved for the idle timeout. `forward` moves `a` → `b`; each yields the bytes moved,
/// with them on failure too.
pub(crate) async fn join_directions<F, B>(
    forward: F,
    backward: B,
    activity: &Activity,
) -> Result<CopyStats, CopyError>
where
    F: Future<Output = Result<u64, (u64, std::io::Error)>>,
    B: Future<Output = Result<u64, (u64, std::io::Error)>>,
{
    let idle_timeout = activity.timeout;
    let mut stats = CopyStats::default();
    tokio::pin!(forward);
    tokio::pin!(backward);
    let mut fwd_done: Option<u64> = None;
    let mut bwd_done: Option<u64> = None;
    let mut idle_rx = activity.tx.subscribe();
    loop {
        if let (Some(f), Some(b)) = (fwd_done, bwd_done) {
            stats.a_to_b = f;
            stats.b_to_a = b;
            return Ok(stats);
        }
        let idle = async {
            match idle_timeout {
                Some(t) => loop {
                    match tokio::time::timeout(t, idle_rx.changed()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) => std::future::pending::<()>().await,
                        Err(_) => return,
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut forward, if fwd_done.is_none() => match r {
                Ok(n) => fwd_done = Some(n),
                Err((n, e)) => {
                    stats.a_to_b = n;
                    stats.b_to_a = bwd_done.unwrap_or(0);
                    return Err(CopyError::Io { direction: "a->b", stats, source: e });
                }
            },
            r = &mut backward, if bwd_done.is_none() => match r {
                Ok(n) => bwd_done = Some(n),
                Err((n, e)) => {
                    stats.b_to_a = n;
                    stats.a_to_b = fwd_done.unwrap_or(0);
                    return Err(CopyError::Io { direction: "b->a", stats, source: e });
                }
            },
            _ = idle => {
                stats.a_to_b = fwd_done.unwrap_or(0);
                stats.b_to_a = bwd_done.unwrap_or(0);
                return Err(CopyError::Idle(idle_timeout.unwrap_or_default(), stats));
            }
        }
    }
}

/// One direction: read, write all, repeat; on EOF flush and shut down the writer.
async fn pump<R, W>(r: &mut R, w: &mut W, activity: &Activity) -> Result<u64, (u64, std::io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err((total, e)),
        };
        if let Err(e) = w.write_all(&buf[..n]).await {
            return Err((total, e));
        }
        total += n as u64;
        activity.moved();
        // Flush per chunk: TLS writers buffer a record until flushed.
        if let Err(e) = w.flush().await {
            return Err((total, e));
        }
    }
    if let Err(e) = w.shutdown().await {
        // The peer may already be gone after a clean EOF; that's not data loss.
        if e.kind() != std::io::ErrorKind::NotConnected {
            return Err((total, e));
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (client, proxy_a) = tokio::io::duplex(1024);
        let (proxy_b, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(copy_bidirectional(proxy_a, proxy_b, None));

        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            cw.write_all(&p2).await.unwrap();
            cw.shutdown().await.unwrap(); // half-close: client done sending
        });
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        // Server answers after seeing EOF, then closes.
        sw.write_all(b"thanks").await.unwrap();
        sw.shutdown().await.unwrap();
        let mut answer = Vec::new();
        cr.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"thanks");
        writer.await.unwrap();
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.a_to_b, payload.len() as u64);
        assert_eq!(stats.b_to_a, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_an_idle_timeout_from_firing() {
        let (mut client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, mut server) = tokio::io::duplex(64);
        let copy = tokio::spawn(copy_bidirectional(
            proxy_a,
            proxy_b,
            Some(Duration::from_secs(5)),
        ));
        // A byte every 3 s for 12 s: never idle for 5 s.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
        }
        assert!(!copy.is_finished(), "closed while traffic was flowing");
        // Then silence: the timeout fires.
        let r = copy.await.unwrap();
        assert!(matches!(r, Err(CopyError::Idle(..))), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes() {
        let (_client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, _server) = tokio::io::duplex(64);
        let r = copy_bidirectional(proxy_a, proxy_b, Some(Duration::from_secs(5))).await;
        assert!(matches!(r, Err(CopyError::Idle(..))), "{r:?}");
    }
}
