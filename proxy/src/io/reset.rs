//! Propagating a reset: when one end of a proxied connection aborts (a TCP reset, a
//! TLS stream cut without `close_notify`), the proxy must abort the other end too,
//! not close it cleanly. A FIN after an abort would tell the application that a
//! truncated stream ended normally: a half-received upload would look complete.
//!
//! The copy loop owns (and drops) the streams, so [`ResetHandle`] keeps a duplicate of
//! a plain TCP socket's descriptor: the connection stays open until both the stream and
//! the handle are gone, and [`ResetHandle::reset`] closes it with `SO_LINGER` 0 (an RST)
//! instead of the FIN an ordinary drop sends. Dropping the handle unused changes
//! nothing. The mesh side needs no handle: a TLS stream dropped without `close_notify`
//! is an error for the peer proxy, which then resets its own application side.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::{setsockopt, sockopt::Linger};

/// A second reference to a TCP connection, able to abort it (see the module docs).
#[derive(Debug)]
pub struct ResetHandle(OwnedFd);

impl ResetHandle {
    /// A handle on `socket`'s connection (duplicates its descriptor).
    pub fn new(socket: &impl AsFd) -> io::Result<Self> {
        socket.as_fd().try_clone_to_owned().map(Self)
    }

    /// Aborts the connection: the peer's next read or write fails with
    /// `ECONNRESET`. The reset goes out when the socket's last descriptor closes: here
    /// if the stream was already dropped, else when it is.
    pub fn reset(self) {
        let abort = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        if let Err(e) = setsockopt(&self.0, Linger, &abort) {
            tracing::debug!(error = %e, "cannot set SO_LINGER for a reset; closing normally");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair on loopback: (the proxy's end, the application's end).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let app = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        (ours, app)
    }

    #[test]
    fn reset_after_the_stream_is_dropped_reaches_the_peer_as_a_reset() {
        let (mut ours, mut app) = pair();
        let handle = ResetHandle::new(&ours).unwrap();
        ours.write_all(b"partial").unwrap();
        drop(ours); // what the copy loop does on an error
        handle.reset();
        // The application sees an error, never a clean end of stream.
        let end = app.read_to_end(&mut Vec::new());
        assert_eq!(end.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    }

    #[test]
    fn an_unused_handle_leaves_a_clean_close() {
        let (mut ours, mut app) = pair();
        let handle = ResetHandle::new(&ours).unwrap();
        ours.write_all(b"all of it").unwrap();
        drop(ours);
        drop(handle);
        let mut got = Vec::new();
        app.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"all of it");
    }
}
