//! Byte plumbing for the data path: the bidirectional copy loop (`io::copy`) and a
//! stream that replays bytes already read during protocol detection (`io::prefixed`).

pub mod copy;
pub mod prefixed;

pub use copy::{CopyStats, copy_bidirectional};
pub use prefixed::PrefixedIo;
