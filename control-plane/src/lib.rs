//! The Ferrule control plane.
