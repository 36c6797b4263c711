//! The proxy's admin endpoint (its own port, never intercepted).
//!
//! | path                 | answer                                                      |
//! |----------------------|-------------------------------------------------------------|
//! | `GET /live`          | 200 while the process runs                                  |
//! | `GET /ready`         | 200 with a certificate, trust bundle and discovery data; else 503 + what is missing |
//! | `GET /identity`      | JSON: SPIFFE ID, serial, expiry, bundle version, renewals   |
//! | `GET /identity/cert.pem` | the current certificate chain (public data, no key)     |
//! | `GET /metrics`       | Prometheus metrics (see `metrics`)                          |
//! | `PUT /log-level`     | body `debug`, `info,ferrule_proxy=trace`, ... (loopback only) |
//!
//! Nothing here can stop the proxy or change what it enforces; the one mutation (log
//! level) is accepted from loopback peers only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ferrule_tls::IdentityHandle;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::sync::SyncStatus;
use crate::discovery::Discovery;
use crate::drain::Drain;
use crate::identity::IdentityStatus;
use crate::metrics::Metrics;
use crate::policy::Authorizer;

/// State the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    /// The proxy's credentials and bundle.
    pub identity: IdentityHandle,
    /// The identity manager's status.
    pub status: watch::Receiver<IdentityStatus>,
    /// The control-plane session's status.
    pub sync: watch::Receiver<SyncStatus>,
    /// Discovery data.
    pub discovery: Discovery,
    /// Inbound connection tracking (draining makes the proxy unready).
    pub drain: Drain,
    /// Outbound connection tracking.
    pub outbound_drain: Drain,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The policy in force.
    pub authz: Authorizer,
    /// Run-time log filter.
    pub log_level: crate::telemetry::LogLevel,
}

/// Serves the admin endpoint on `listener` forever.
pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    if req.method() == Method::PUT && req.uri().path() == "/log-level" {
                        return Ok::<_, Infallible>(set_log_level(&state, req, remote).await);
                    }
                    Ok::<_, Infallible>(handle(&state, req, remote))
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(%remote, error = %e, "admin connection error");
            }
        });
    }
}

/// `PUT /log-level` with a filter directive as the body. Only from loopback: a remote
/// scraper may read metrics but never change the proxy.
async fn set_log_level(
    state: &AdminState,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    // Canonical first: on a dual-stack listener IPv4 loopback arrives as ::ffff:127.0.0.1.
    if !remote.ip().to_canonical().is_loopback() {
        return text(
            StatusCode::FORBIDDEN,
            "log level changes are accepted from loopback only\n",
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
    };
    let directive = String::from_utf8_lossy(&body).trim().to_string();
    match state.log_level.set(&directive) {
        Ok(()) => {
            tracing::info!(filter = %directive, "log level changed");
            text(StatusCode::OK, format!("log level set to {directive}\n"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.into())))
        .unwrap_or_default()
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What keeps the proxy from being ready, empty when ready.
pub fn missing(state: &AdminState) -> Vec<&'static str> {
    let mut missing = Vec::new();
    match state.identity.credentials() {
        None => missing.push("no certificate yet"),
        Some(c) if c.not_after() <= SystemTime::now() => missing.push("certificate expired"),
        Some(_) => {}
    }
    if state.identity.bundle().is_none() {
        missing.push("no trust bundle");
    }
    if !state.discovery.is_synced() {
        missing.push("no discovery data from the control plane yet");
    }
    if state.authz.version().is_none() {
        missing.push("no policy from the control plane yet");
    }
    if state.drain.is_draining() {
        missing.push("shutting down");
    }
    missing
}

fn handle(
    state: &AdminState,
    req: Request<Incoming>,
    _remote: SocketAddr,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/metrics" => Response::builder()
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(state.metrics.encode())))
            .unwrap_or_default(),
        "/ready" => {
            let missing = missing(state);
            if missing.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", missing.join(", ")),
                )
            }
        }
        "/identity" => {
            let st = state.status.borrow().clone();
            let creds = state.identity.credentials();
            let bundle = state.identity.bundle();
            json(serde_json::json!({
                "spiffe_id": creds.as_ref().map(|c| c.spiffe_id().to_string()),
                "serial": creds.as_ref().map(|c| c.serial_hex().to_string()),
                "not_after": creds.as_ref().map(|c| unix(c.not_after())),
                "bundle_version": bundle.as_ref().map(|b| b.version()),
                "bundle_roots": bundle.as_ref().map(|b| b.roots().len()),
                "renewals_ok": st.renewals_ok,
                "renewals_failed": st.renewals_failed,
                "last_error": st.last_error,
                "control_plane_connected": state.sync.borrow().connected,
                "discovery_version": state.sync.borrow().discovery_version,
                "workloads_known": state.discovery.snapshot().len(),
                "active_connections": state.drain.active() + state.outbound_drain.active(),
                "active_inbound": state.drain.active(),
                "active_outbound": state.outbound_drain.active(),
                "policy_version": state.authz.version(),
            }))
        }
        "/identity/cert.pem" => match state.identity.credentials() {
            Some(c) => {
                let mut pem = String::new();
                for cert in c.chain() {
                    pem.push_str(&pem_encode("CERTIFICATE", cert));
                }
                text(StatusCode::OK, pem)
            }
            None => text(StatusCode::NOT_FOUND, "no certificate yet\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// PEM-encodes DER bytes.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
