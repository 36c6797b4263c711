//! Byte plumbing for the data path: the bidirectional copy loop (`io::copy`) and a
//! stream that replays bytes already read during protocol detection (`io::prefixed`).

pub mod copy;
pub mod prefixed;

pub use copy::{CopyStats, copy_bidirectional};
pub use prefixed::PrefixedIo;

/// `addr` with an IPv4-mapped IPv6 address (`[::ffff:a.b.c.d]`, as seen on dual-stack
/// sockets) turned into plain IPv4, so addresses compare and match CIDRs consistently.
pub fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
