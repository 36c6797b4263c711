//! The Ferrule sidecar proxy.
//!
//! | where                | what                                                      |
//! |----------------------|-----------------------------------------------------------|
//! | `config`             | flags / `FERRULE_*` environment, validated at start        |
//! | `app`                | wiring                                                     |
//! | `identity`           | in-memory key, certificate issuance and renewal            |
//! | `control`            | authenticated channel to the control plane, bundle stream  |
//! | `intercept`          | `ferrule-proxy init` (netfilter redirect rules), SO_ORIGINAL_DST |
//! | `inbound`            | accept, detect, mTLS-terminate, authorize, forward          |
//! | `outbound`           | capture, resolve the expected peer identity, mTLS-dial      |
//! | `hop`                | the proxy-to-proxy protocol (ALPN + hop header)             |
//! | `discovery`          | which workloads are meshed and what identity they present   |
//! | `policy`             | authorization decisions                                     |
//! | `io`                 | the copy loop                                               |
//! | `memory`             | heap tuning for bulk relaying (glibc trim threshold)        |
//! | `drain`              | connection cap and graceful shutdown                        |
//! | `runtime`            | tokio runtime: current-thread for one worker, else multi-thread |
//! | `admin`              | `/live`, `/ready`, `/identity`                              |
//! | `ferrule_tls` (crate `proxy/tls`) | TLS settings and SPIFFE verification          |

pub mod admin;
pub mod app;
pub mod config;
pub mod control;
pub mod descriptors;
pub mod discovery;
pub mod drain;
pub mod hop;
pub mod identity;
pub mod inbound;
pub mod intercept;
pub mod io;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod runtime;
pub mod telemetry;
