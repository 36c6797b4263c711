//! Protocol detection on the inbound listener: is this connection a Ferrule mesh hop
//! (TLS with ALPN `ferrule/1` or `ferrule/2`), some other TLS, or plaintext?
//!
//! We read (not peek) the first bytes into a buffer and feed them to rustls's
//! sans-I/O `Acceptor`, which reassembles a ClientHello even when it is fragmented over
//! several records or TCP segments (RUSTSEC-2024-0399). The buffered bytes are then
//! replayed ([`PrefixedIo`]) either to the real TLS handshake or to the application.
//!
//! A client that sends nothing within the detection timeout is treated as plaintext
//! (server-speaks-first protocols such as SMTP or MySQL) — only on permissive ports; on
//! strict ports the caller closes it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::hop;
use crate::io::PrefixedIo;

/// Bytes we are willing to buffer while looking for a complete ClientHello.
pub const MAX_DETECT_BYTES: usize = 32 * 1024;

/// What the first bytes of a connection revealed.
#[derive(Debug)]
pub enum Protocol {
    /// TLS whose ClientHello offers ALPN `ferrule/1` or `ferrule/2`: a mesh hop.
    Mesh,
    /// TLS, but not ours (an application's own TLS).
    OtherTls,
    /// Not TLS.
    Plaintext,
    /// The client sent nothing within the timeout.
    Silent,
}

/// Detection failures (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Reading failed or the peer closed before sending anything decisive.
    #[error("reading the first bytes: {0}")]
    Io(#[from] std::io::Error),
    /// A TLS ClientHello larger than we accept.
    #[error("ClientHello exceeds {MAX_DETECT_BYTES} bytes")]
    TooLarge,
    /// The peer closed the connection before the ClientHello was complete.
    #[error("connection closed during the ClientHello")]
    Truncated,
}

/// Reads enough of `tcp` to classify it; returns the class and the stream with the
/// consumed bytes put back. (Generic over the stream so the fuzz targets can drive it
/// with scripted reads; the proxy passes its `TcpStream`.)
pub async fn detect<S: AsyncRead + Unpin>(
    mut tcp: S,
    timeout: Duration,
) -> Result<(Protocol, PrefixedIo<S>), DetectError> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0usize;
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(DetectError::Io(e)),
            Err(_) if buf.is_empty() => return Ok((Protocol::Silent, PrefixedIo::new(buf, tcp))),
            // Partial TLS record after the timeout: not a well-behaved TLS client.
            Err(_) => return Ok((Protocol::Plaintext, PrefixedIo::new(buf, tcp))),
        };
        if n == 0 {
            if buf.is_empty() {
                return Err(DetectError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            if buf[0] == 0x16 {
                return Err(DetectError::Truncated);
            }
            return Ok((Protocol::Plaintext, PrefixedIo::new(buf, tcp)));
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS handshake record starts with 0x16 0x03 <minor>.
        if buf[0] != 0x16 || (buf.len() >= 2 && buf[1] != 0x03) {
            return Ok((Protocol::Plaintext, PrefixedIo::new(buf, tcp)));
        }
        if buf.len() > MAX_DETECT_BYTES {
            return Err(DetectError::TooLarge);
        }
        // Feed everything buffered, asking for a verdict after each piece.
        while fed < buf.len() {
            let mut rd = &buf[fed..];
            match acceptor.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(k) => fed += k,
                Err(_) => return Ok((Protocol::Plaintext, PrefixedIo::new(buf, tcp))),
            }
            match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    let ours = hello.alpn().is_some_and(|mut p| p.any(hop::is_mesh_alpn));
                    let proto = if ours {
                        Protocol::Mesh
                    } else {
                        Protocol::OtherTls
                    };
                    return Ok((proto, PrefixedIo::new(buf, tcp)));
                }
                // Starts like TLS but isn't a valid ClientHello: opaque bytes.
                Err(_) => return Ok((Protocol::Plaintext, PrefixedIo::new(buf, tcp))),
            }
        }
    }
}
