//! End-to-end test harness: starts the real Ferrule binaries (built by
//! `cargo build --bins`, which `tests/run.sh` does first) on loopback with per-test
//! temporary directories, and talks to them the way an operator would.

pub mod apps;
pub mod explicit;
pub mod http;
pub mod kube_api;
pub mod mtls;
pub mod netns;
pub mod pcap;
pub mod pem;
pub mod pki;
pub mod process;
pub mod tools;

pub use process::{ControlPlane, CpOptions, Proxy, ProxyOptions, bin_path, ctl_output};
