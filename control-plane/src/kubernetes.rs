//! Ferrule on Kubernetes: the API client, service-account attestation's API calls, the
//! Pod/CRD watches and the sidecar injection webhook.
//!
//! | where        | what                                                          |
//! |--------------|---------------------------------------------------------------|
//! | `client`     | minimal HTTPS client for the API server (JSON GET/POST, watch) |
//! | `inject`     | sidecar injection: AdmissionReview in, JSON Patch out (pure)   |
//! | `webhook`    | the injection webhook's HTTPS server (`--webhook-listen`)      |
//! | `watch`      | list+watch of Pods (discovery) and AuthorizationPolicy resources (policy) |

pub mod client;
pub mod inject;
pub mod watch;
pub mod webhook;
