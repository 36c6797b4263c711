//! Wire types for Ferrule's gRPC APIs, generated from `proto/*.proto`.
//!
//! This crate holds no logic: each consumer converts these messages into its own
//! validated domain types at its edge (`api.rs` modules), so a bare protobuf string
//! never travels further than the first function that receives it.

/// Identity API: certificate issuance (`Certify`) and trust-bundle streaming.
pub mod identity {
    /// Version 1 of the identity API.
    pub mod v1 {
        tonic::include_proto!("ferrule.identity.v1");
    }
}

/// Administrative API used by `ferrulectl`.
pub mod admin {
    /// Version 1 of the admin API.
    pub mod v1 {
        tonic::include_proto!("ferrule.admin.v1");
    }
}

/// Mesh API: registration, discovery and policy streaming between proxies and the
/// control plane.
pub mod mesh {
    /// Version 1 of the mesh API.
    pub mod v1 {
        tonic::include_proto!("ferrule.mesh.v1");
    }
}
