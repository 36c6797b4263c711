//! Transports the control plane serves on: the identity API over TLS on TCP
//! (`tls_listener`) and the admin API on a local Unix socket (`admin_socket`).

pub mod admin_socket;
pub mod metrics_http;
pub mod tls_listener;
