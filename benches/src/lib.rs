//! Benchmarks for Ferrule: see `benches/README.md`.
//!
//! * `benches/run.sh`: the one-command comparison (direct vs Envoy vs Ferrule pairs,
//!   control-plane issuance rate and policy propagation, idle-connection memory,
//!   micro-benchmarks).
//! * `src/bin/certify.rs` (`ferrule-bench-certify`): certificates issued per second.
//! * `src/bin/propagate.rs` (`ferrule-bench-propagate`): policy propagation time from
//!   `ApplyPolicies` to 1 … 1,000 connected (simulated) proxies, and to enforcement
//!   through a real pair.
//! * `src/bin/hold.rs` (`ferrule-bench-hold`): memory per idle established connection.
//! * `src/bin/load.rs` (`ferrule-bench-load`): a fixed amount of HTTP/1.1 work, for the
//!   instruction counts of `benches/count.sh`.
//! * `src/bin/relay.rs` (`ferrule-bench-relay`): a plain-TCP relay on the proxy's copy
//!   loop; two chained are the `plain-relay` configuration (a pair's hops, no TLS).
//! * `benches/copy.rs`, `benches/verify.rs`, `benches/policy.rs`: criterion
//!   micro-benchmarks of the copy loop, SPIFFE verification and policy evaluation.
//! * [`control`], [`stats`], [`relay`]: what the load tools share (a proxy's first steps
//!   with the control plane; percentiles and `/proc` readings; the plain-TCP relay).

pub mod control;
pub mod relay;
pub mod stats;
pub mod tls_floor;
