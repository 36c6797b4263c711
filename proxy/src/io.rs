//! Byte plumbing for the data path: the bidirectional copy loop (`io::copy`), a
//! stream that replays bytes already read during protocol detection (`io::prefixed`),
//! what relays which kind of stream to the application (`io::relay`),
//! and aborting a plain TCP side when the other side aborted (`io::reset`).

pub mod copy;
pub mod prefixed;
pub mod relay;
pub mod reset;

pub use copy::{CopyStats, copy_bidirectional};
pub use prefixed::PrefixedIo;
pub use relay::Relay;
pub use reset::ResetHandle;

/// `addr` with an IPv4-mapped IPv6 address (`[::ffff:a.b.c.d]`, as seen on dual-stack
/// sockets) turned into plain IPv4, so addresses compare and match CIDRs consistently.
pub fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
