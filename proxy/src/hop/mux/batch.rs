//! Batching a pooled connection's writes: one socket write per turn of the connection
//! task, not one per HTTP/2 frame.
//!
//! h2 flushes its transport after every DATA frame, and tokio-rustls turns each write
//! into a socket write at once. With many streams on one connection (the point of
//! pooling), a busy connection would make a `writev` per frame: 64 streams answering in
//! the same instant, 64 system calls and 64 loopback deliveries. [`Batched`] sits
//! between h2 and the TLS stream: a write only encrypts into rustls's outgoing buffer,
//! and a flush does nothing; the connection's task calls [`FlushHandle::poll_flush`]
//! after each time it polled h2. When records are queued, that yields once (the task
//! wakes itself and goes to the back of the run queue: the other runnable tasks, e.g.
//! streams with more data, run and queue their frames), then sends everything queued at
//! once. (Not `tokio::task::yield_now`, which also polls the I/O driver first: one more
//! `epoll_wait` per batch.)
//!
//! A batch waits for nothing but one turn of the scheduler: the flush runs in the same
//! task before it sleeps. Memory stays bounded by rustls's buffer limit (64 KiB of
//! records): a write that finds it full sends what is queued first, and waits for the
//! socket like any write.

use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS stream that can take plaintext without writing to its socket.
pub trait TlsIo: AsyncRead + AsyncWrite + Unpin {
    /// Encrypts as much of `bufs` as the outgoing buffer takes; no I/O.
    fn buffer(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether records wait to be written to the socket.
    fn wants_write(&self) -> bool;
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsIo for tokio_rustls::client::TlsStream<IO> {
    fn buffer(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.get_mut().1.writer().write_vectored(bufs)
    }

    fn wants_write(&self) -> bool {
        self.get_ref().1.wants_write()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsIo for tokio_rustls::server::TlsStream<IO> {
    fn buffer(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.get_mut().1.writer().write_vectored(bufs)
    }

    fn wants_write(&self) -> bool {
        self.get_ref().1.wants_write()
    }
}

/// The transport handed to h2 (see the module docs).
pub struct Batched<T>(Arc<Mutex<T>>);

/// Sends what the connection queued; held by the connection's task.
pub struct FlushHandle<T> {
    io: Arc<Mutex<T>>,
    /// The task yielded once since records were queued.
    yielded: bool,
}

/// Wraps `io`; the handle flushes it.
pub fn batched<T: TlsIo>(io: T) -> (Batched<T>, FlushHandle<T>) {
    let shared = Arc::new(Mutex::new(io));
    (
        Batched(shared.clone()),
        FlushHandle {
            io: shared,
            yielded: false,
        },
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: TlsIo> FlushHandle<T> {
    /// Call after each poll of the connection: when records are queued, yields once,
    /// then writes them all to the socket (`Pending` meanwhile; the task is woken to
    /// continue).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !lock(&self.io).wants_write() {
            self.yielded = false;
            return Poll::Ready(Ok(()));
        }
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        Pin::new(&mut *lock(&self.io)).poll_flush(cx)
    }
}

impl<T: TlsIo> AsyncRead for Batched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl<T: TlsIo> Batched<T> {
    fn poll_buffer(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let mut io = lock(&self.0);
        let n = io.buffer(bufs)?;
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        // The outgoing buffer is full: send it, then take more.
        ready!(Pin::new(&mut *io).poll_flush(cx))?;
        let n = io.buffer(bufs)?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        Poll::Ready(Ok(n))
    }
}

impl<T: TlsIo> AsyncWrite for Batched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_buffer(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_buffer(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Deferred: the connection's task flushes after its turn ([`FlushHandle`]).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = lock(&self.0);
        ready!(Pin::new(&mut *io).poll_flush(cx))?;
        Pin::new(&mut *io).poll_shutdown(cx)
    }
}
