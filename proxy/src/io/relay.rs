//! [`Relay`]: how the proxy's side of a connection (a TLS stream, a pooled-hop stream, a
//! replayed plaintext stream) is relayed to and from the application's TCP connection.
//!
//! Byte streams go through the generic copy loop ([`copy_bidirectional`]). A `ferrule/2`
//! stream has its own relay (`hop::mux::relay`) that hands the application's bytes to
//! HTTP/2 and the peer's frames to the socket without copying them through a buffer.
//! The semantics are the same for every kind: half-close both ways, an error in either
//! direction ends both, the idle timeout, and [`CopyStats`] with `a` = the proxy's side,
//! `b` = the application.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpStream;

use super::copy::{CopyError, CopyStats, copy_bidirectional};

/// A stream the proxy relays to an application's TCP connection.
pub trait Relay: Sized {
    /// Moves bytes both ways between `self` and `app` until both directions ended.
    fn relay(
        self,
        app: TcpStream,
        idle_timeout: Option<Duration>,
    ) -> impl Future<Output = Result<CopyStats, CopyError>> + Send;
}

macro_rules! relay_by_copy_loop {
    ($($t:ty),* $(,)?) => {$(
        impl Relay for $t {
            fn relay(
                self,
                app: TcpStream,
                idle_timeout: Option<Duration>,
            ) -> impl Future<Output = Result<CopyStats, CopyError>> + Send {
                copy_bidirectional(self, app, idle_timeout)
            }
        }
    )*};
}

relay_by_copy_loop!(
    TcpStream,
    super::PrefixedIo<TcpStream>,
    tokio_rustls::server::TlsStream<super::PrefixedIo<TcpStream>>,
    tokio_rustls::client::TlsStream<TcpStream>,
    Box<tokio_rustls::client::TlsStream<TcpStream>>,
);
