//! The Ferrule control plane.
//!
//! It attests workloads (`attest`), signs their CSRs into short-lived X.509-SVIDs
//! (`ca::sign`), streams the trust bundle to proxies (`identity_api`), and is
//! administered through a local admin API (`admin_api`) driven by `ferrulectl` (`ctl`).
//!
//! | where                | what                                                   |
//! |----------------------|--------------------------------------------------------|
//! | `config`             | flags / `FERRULE_*` environment, validated at start     |
//! | `app`                | wiring and background tasks                             |
//! | `ca`, `ca::sign`     | authorities, rotation, the CSR signer                   |
//! | `attest`             | who is the caller? (join tokens, k8s SA tokens)         |
//! | `store`              | SQLite persistence                                      |
//! | `identity_api`       | gRPC `Certify` and `WatchBundle`                        |
//! | `admin_api`          | gRPC admin API behind the local socket                  |
//! | `server`             | TLS listener for the identity API, admin socket         |
//! | `ctl`                | the `ferrulectl` CLI                                    |

pub mod admin_api;
pub mod app;
pub mod config;
pub mod ctl;
pub mod discovery;
pub mod health;
pub mod identity_api;
pub mod kubernetes;
pub mod mesh_api;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod telemetry;

pub mod attest;
pub mod ca;
pub mod store;
