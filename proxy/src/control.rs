//! The proxy's side of the control plane: an authenticated gRPC channel
//! (`control::client`) and the trust-bundle watch (`control::bundle`).
//!
//! The control plane is authenticated by its SPIFFE ID against the proxy's current
//! trust bundle (bootstrapped from a file, then kept up to date by the stream itself).

pub mod bundle;
pub mod client;
pub mod sync;

pub use client::ControlClient;
