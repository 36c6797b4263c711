//! L7 handling of inbound `http` ports: one authorization decision per request.
//!
//! The decrypted mesh stream is served as HTTP/1.1 or HTTP/2 (detected by hyper). Per
//! request:
//! 1. Identity headers a client could forge (`x-ferrule-peer-identity`,
//!    `x-forwarded-client-cert`) are removed before policy and before the application.
//! 2. The policy decides on (peer, port, method, raw path); the path is normalised or
//!    refused inside the policy engine, never matched naively.
//! 3. Denied: `403` with `x-ferrule-deny-reason: <stable code>`. Allowed: forwarded to
//!    the application (HTTP/1.1 upstream for HTTP/1 clients, HTTP/2 prior knowledge for
//!    HTTP/2 clients, e.g. gRPC), with `x-ferrule-peer-identity` set to the verified
//!    SPIFFE ID.
//!
//! Limits against abuse: header read timeout (slowloris), bounded header sizes, HTTP/2
//! concurrent-stream and pending-reset caps (rapid reset, CVE-2023-44487). Upgrades
//! (WebSocket) are not proxied on `http` ports; declare such ports `opaque`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::metrics::{HttpLabels, Metrics};
use crate::policy::Decision;

/// Header carrying the verified peer identity to the application.
pub const PEER_IDENTITY_HEADER: &str = "x-ferrule-peer-identity";
/// Header naming why a request was denied.
pub const DENY_REASON_HEADER: &str = "x-ferrule-deny-reason";
/// Headers a client may not set: they would claim an identity.
const IDENTITY_HEADERS: [&str; 2] = [PEER_IDENTITY_HEADER, "x-forwarded-client-cert"];
/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Response body type.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Decides one request: (method, raw path-and-query) → decision.
pub type Authorize = Arc<dyn Fn(&str, &str) -> Decision + Send + Sync>;

/// What one inbound HTTP connection needs.
#[derive(Clone)]
pub struct HttpContext {
    /// The verified peer, as a header value (`unauthenticated` for plaintext peers).
    pub peer: String,
    /// Application port (for metrics).
    pub port: u16,
    /// Where the application listens.
    pub app: SocketAddr,
    /// The per-request policy decision.
    pub authorize: Authorize,
    /// HTTP/1.1 client to the application.
    pub h1: Client<HttpConnector, Incoming>,
    /// HTTP/2 (prior knowledge) client to the application.
    pub h2: Client<HttpConnector, Incoming>,
    /// Metrics.
    pub metrics: Metrics,
}

/// Builds the two upstream clients (connection pools to the local application).
pub fn clients(
    connect_timeout: Duration,
) -> (
    Client<HttpConnector, Incoming>,
    Client<HttpConnector, Incoming>,
) {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(connect_timeout));
    conn.set_nodelay(true);
    let h1 = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(conn.clone());
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(conn);
    (h1, h2)
}

/// Serves HTTP on `io` until the client closes it.
pub async fn serve<S>(
    io: S,
    ctx: HttpContext,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&ctx, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder.serve_connection(TokioIo::new(io), svc).await
}

/// Why [`serve`] ended with an error, as a stable label for logs, and whether the
/// client misbehaved (an oversized or malformed head, a header read that timed out, an
/// HTTP/2 protocol or flow-control violation such as rapid reset or a CONTINUATION
/// flood) rather than simply going away mid-request.
pub fn error_reason(e: &(dyn std::error::Error + 'static)) -> (&'static str, bool) {
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        return ("io", false);
    };
    if h.is_parse_too_large() {
        ("header_too_large", true)
    } else if h.is_timeout() {
        ("header_timeout", true)
    } else if h.is_parse() {
        ("malformed_request", true)
    } else if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
        ("client_closed", false)
    } else {
        // HTTP/2: hyper wraps the h2 error (GOAWAY ENHANCE_YOUR_CALM, PROTOCOL_ERROR...).
        ("protocol_error", true)
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(ctx: &HttpContext, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let resp = route(ctx, req).await;
    let labels = HttpLabels {
        port: ctx.port,
        status: status_class(resp.status()),
    };
    ctx.metrics.http_requests.get_or_create(&labels).inc();
    ctx.metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn route(ctx: &HttpContext, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    for h in IDENTITY_HEADERS {
        parts.headers.remove(h);
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let decision = (ctx.authorize)(parts.method.as_str(), &target);
    ctx.metrics.decision(&decision);
    // The application must see exactly the path that was authorized: forward the
    // normalised path (plus the original query), never the raw one, or a parser that
    // resolves dot segments differently could reach a path the policy never saw.
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_str(), None),
    };
    let normalised = ferrule_policy::normalize_path(raw_path);
    if !decision.allow {
        tracing::info!(
            peer = %ctx.peer,
            method = %parts.method,
            // Never the query: it may carry secrets.
            path = %normalised.as_deref().unwrap_or("<invalid>"),
            policy = %decision.policy,
            rule = ?decision.rule,
            reason = decision.reason,
            "request denied"
        );
        let mut r = text(
            StatusCode::FORBIDDEN,
            format!("denied by ferrule: {}\n", decision.reason),
        );
        r.headers_mut().insert(
            HeaderName::from_static(DENY_REASON_HEADER),
            HeaderValue::from_static(decision.reason),
        );
        return r;
    }
    // An allowed request always has a valid path (invalid ones are denied), but never
    // forward anything else.
    let Ok(path) = normalised else {
        return text(StatusCode::BAD_REQUEST, "invalid request path\n".into());
    };
    let forward_target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    // Rebuild the request for the application.
    let version = parts.version;
    let mut up = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{}{}", ctx.app, forward_target));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            up = up.header(name, value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.peer) {
        up = up.header(PEER_IDENTITY_HEADER, v);
    }
    let up = match up.body(body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad request: {e}\n")),
    };
    let result = if version == Version::HTTP_2 {
        ctx.h2.request(up).await
    } else {
        ctx.h1.request(up).await
    };
    match result {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => {
            tracing::warn!(app = %ctx.app, error = %e, "application request failed");
            text(StatusCode::BAD_GATEWAY, "application unavailable\n".into())
        }
    }
}
