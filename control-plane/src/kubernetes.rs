//! Ferrule on Kubernetes: the API client, service-account attestation's API calls, the
//! Pod/CRD watches and the sidecar injection webhook.
//!
//! | where        | what                                                          |
//! |--------------|---------------------------------------------------------------|
//! | `client`     | minimal HTTPS client for the API server (JSON GET/POST, watch) |

pub mod client;
