//! The Ferrule sidecar proxy.
