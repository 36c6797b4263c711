//! The sidecar injection webhook's HTTPS server (`--webhook-listen`).
//!
//! | path           | answer                                                          |
//! |----------------|-----------------------------------------------------------------|
//! | `POST /inject` | AdmissionReview v1 in, AdmissionReview out (`inject::review`)   |
//! | `GET /healthz` | `200 ok` (for a readiness probe on the control plane's pod)     |
//!
//! **TLS.** Server authentication only: the API server presents no client certificate
//! by default, and the webhook changes nothing by itself (it answers with a patch the
//! API server applies), so there is no client to authenticate. The configuration is
//! Ferrule's TLS policy (`ferrule_tls`: aws-lc-rs, TLS 1.3 preferred, 1.2 minimum, AEAD
//! suites, no resumption) without client authentication, ALPN `h2` and `http/1.1`. The
//! certificate is the control plane's own, issued by its CA with the webhook's DNS
//! names added (`--webhook-dns-names`) and renewed with it (half its 24 h lifetime, and
//! at every CA change). The API server verifies it against the `caBundle` of the
//! MutatingWebhookConfiguration: the mesh's trust bundle (roots), which the control
//! plane writes to `<data-dir>/bundle.pem` and `ferrulectl webhook ca-bundle` prints in
//! the base64 form `caBundle` takes. After `ferrulectl ca prepare`, update `caBundle`
//! before `ca activate`: from then on the certificate chains to the new root.
//!
//! **Limits.** A body over [`MAX_BODY`] is refused with 413 (an AdmissionReview carries
//! one pod; the API server's own request limit is 3 MiB), a body slower than
//! [`BODY_TIMEOUT`] with 408, a TLS handshake slower than [`HANDSHAKE_TIMEOUT`] is
//! dropped, and at most [`MAX_CONNECTIONS`] connections are served at once (more wait in
//! the kernel's backlog). The API server's own timeout for the call is the webhook
//! configuration's `timeoutSeconds` (10 s recommended).
//!
//! **failurePolicy.** Use `Fail`: when the webhook cannot be reached, pods in labelled
//! namespaces are not created rather than created without the mesh (fail closed).
//! Exclude `ferrule-system` (and `kube-system`) with the namespaceSelector so the
//! control plane itself can always start.

pub mod args;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use ferrule_tls::{IdentityHandle, TlsOptions};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::ca::BundleSnapshot;
use crate::kubernetes::inject::{self, InjectConfig, Outcome};

pub use args::{WebhookArgs, WebhookConfig};

/// Largest request body accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Time allowed to receive a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the request headers (HTTP/1.1).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// What the request handler needs.
#[derive(Debug)]
pub struct Webhook {
    inject: InjectConfig,
    bundle: watch::Receiver<BundleSnapshot>,
}

impl Webhook {
    /// A webhook injecting per `inject`, stamping pods with the current bundle of
    /// `bundle` (`CertificateAuthority::subscribe_bundle`).
    pub fn new(inject: InjectConfig, bundle: watch::Receiver<BundleSnapshot>) -> Self {
        Self { inject, bundle }
    }
}

/// The webhook's TLS configuration: Ferrule's policy, the certificate `identity` holds
/// at each handshake, no client authentication.
pub fn tls_config(
    identity: &IdentityHandle,
) -> Result<Arc<ServerConfig>, ferrule_tls::ConfigError> {
    ferrule_tls::server_config_with_verifier(
        identity,
        rustls::server::WebPkiClientVerifier::no_client_auth(),
        &TlsOptions {
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ..Default::default()
        },
    )
}

/// Serves the webhook on `listener` forever.
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, webhook: Arc<Webhook>) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let webhook = webhook.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "webhook TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let webhook = webhook.clone();
                async move { Ok::<_, Infallible>(handle(&webhook, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(32)
                .keep_alive_interval(Duration::from_secs(30));
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%remote, error = %e, "webhook connection error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut body = body.into();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

async fn handle(webhook: &Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::POST, "/inject") => inject_request(webhook, req).await,
        (_, "/healthz" | "/inject") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn inject_request(webhook: &Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the AdmissionReview is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    // The body is read (within the limits) before anything else is judged, so that an
    // answer never leaves an unread request body behind (HTTP/2 would reset the stream).
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let body = Limited::new(body, MAX_BODY).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json (an AdmissionReview)",
        );
    }
    let bundle_pem = webhook.bundle.borrow().to_pem();
    match inject::review(&body, &webhook.inject, &bundle_pem) {
        Outcome::Review { body, summary } => {
            if summary.decision == "refused" {
                tracing::warn!(
                    uid = %summary.uid, namespace = %summary.namespace, pod = %summary.pod,
                    reason = %summary.detail, "sidecar injection refused"
                );
            } else {
                tracing::info!(
                    uid = %summary.uid, namespace = %summary.namespace, pod = %summary.pod,
                    decision = summary.decision, detail = %summary.detail,
                    "sidecar injection"
                );
                for warning in &summary.warnings {
                    tracing::warn!(
                        namespace = %summary.namespace, pod = %summary.pod, %warning,
                        "sidecar injection warning"
                    );
                }
            }
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(bytes)))
                .unwrap_or_default()
        }
        Outcome::BadRequest(why) => {
            tracing::warn!(reason = %why, "malformed AdmissionReview refused");
            text(StatusCode::BAD_REQUEST, why)
        }
    }
}
