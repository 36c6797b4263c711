//! The mesh-hop protocol: what two Ferrule proxies say to each other.
//!
//! ```text
//! outbound proxy                                   inbound proxy
//!   TCP connect ─────────────────────────────────►  (transparent: redirected to :15006;
//!                                                     explicit: dialled at :15006)
//!   TLS 1.3 ClientHello, ALPN "ferrule/1",
//!   client certificate (X.509-SVID)  ◄──────────►  server certificate (X.509-SVID)
//!   hop header: "FRL1" | target port (u16 BE) | 0x0000
//!   application bytes ◄──────────────────────────► application bytes
//! ```
//!
//! * ALPN `ferrule/1` marks a mesh connection, so the inbound side can tell it from an
//!   application's own TLS by peeking at the ClientHello, before any handshake.
//! * The 8-byte hop header names the application port the client meant. It is needed in
//!   explicit mode, where every mesh connection arrives on the one inbound port; in
//!   transparent mode it must equal the original destination port (checked). It is sent
//!   by the client proxy right after the handshake (no extra round trip), so
//!   server-speaks-first protocols still work.
//! * The inbound side only forwards to ports the workload declares; anything else is
//!   refused, so the hop header cannot reach the proxy's own ports or undeclared
//!   loopback-only services.
//!
//! ## Version 2: the pooled hop, ALPN `ferrule/2` ([`mux`])
//!
//! Version 1 costs one mTLS handshake per application connection. Version 2 carries many
//! application connections over one mTLS connection per (client proxy identity, server
//! proxy address, expected server identity), each as an HTTP/2 `CONNECT` stream whose
//! `:authority` port plays the hop header's part (as Istio's HBONE does). Everything else
//! is unchanged: the same TLS policy and certificates, the same port rules, and the same
//! authorization, now per stream. A client offers both ALPN ids (`ferrule/2` first) and a
//! server picks `ferrule/2` when it speaks it, so either side can be upgraded first; a
//! `ferrule/1` answer is used as a version-1 connection. See [`mux`] for the stream rules
//! and for how a long-lived connection stays within its peer's verification.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub mod mux;

/// ALPN protocol id of a Ferrule mesh hop (version 1: one mTLS connection per
/// application connection, hop header).
pub const ALPN: &[u8] = b"ferrule/1";
/// ALPN protocol id of the pooled Ferrule mesh hop (version 2: HTTP/2 `CONNECT` streams
/// over a shared mTLS connection, see [`mux`]).
pub const ALPN_MUX: &[u8] = b"ferrule/2";

/// Whether `alpn` names a Ferrule mesh hop (either version).
pub fn is_mesh_alpn(alpn: &[u8]) -> bool {
    alpn == ALPN || alpn == ALPN_MUX
}
/// Magic that starts the hop header.
pub const MAGIC: &[u8; 4] = b"FRL1";
/// Length of the hop header.
pub const HEADER_LEN: usize = 8;

/// A malformed or missing hop header.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    /// The peer did not send the header in time.
    #[error("no hop header within {0:?}")]
    Timeout(Duration),
    /// Connection ended or failed before the header was complete.
    #[error("reading the hop header: {0}")]
    Io(#[from] std::io::Error),
    /// Wrong magic or reserved bits set.
    #[error("malformed hop header")]
    Malformed,
    /// Port 0.
    #[error("hop header names port 0")]
    ZeroPort,
    /// A `ferrule/2` stream that is not a `CONNECT` to `<host>:<port>`.
    #[error("malformed CONNECT request: {0}")]
    BadConnect(&'static str),
}

/// Encodes the header for `port`.
pub fn encode(port: u16) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4..6].copy_from_slice(&port.to_be_bytes());
    h
}

/// Decodes a header, returning the target port.
pub fn decode(h: &[u8; HEADER_LEN]) -> Result<u16, HopError> {
    if &h[..4] != MAGIC || h[6] != 0 || h[7] != 0 {
        return Err(HopError::Malformed);
    }
    match u16::from_be_bytes([h[4], h[5]]) {
        0 => Err(HopError::ZeroPort),
        p => Ok(p),
    }
}

/// Writes the header (client side).
pub async fn write_header<W: AsyncWrite + Unpin>(w: &mut W, port: u16) -> std::io::Result<()> {
    w.write_all(&encode(port)).await
}

/// Reads the header within `timeout` (server side).
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<u16, HopError> {
    let mut h = [0u8; HEADER_LEN];
    match tokio::time::timeout(timeout, r.read_exact(&mut h)).await {
        Ok(Ok(_)) => decode(&h),
        Ok(Err(e)) => Err(HopError::Io(e)),
        Err(_) => Err(HopError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        assert_eq!(decode(&encode(8080)).unwrap(), 8080);
        assert!(matches!(decode(&encode(0)), Err(HopError::ZeroPort)));
        let mut bad = encode(80);
        bad[0] = b'X';
        assert!(matches!(decode(&bad), Err(HopError::Malformed)));
        let mut reserved = encode(80);
        reserved[7] = 1;
        assert!(matches!(decode(&reserved), Err(HopError::Malformed)));
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_on_a_silent_peer() {
        let (_a, mut b) = tokio::io::duplex(16);
        let r = read_header(&mut b, Duration::from_secs(3)).await;
        assert!(matches!(r, Err(HopError::Timeout(_))));
    }
}
