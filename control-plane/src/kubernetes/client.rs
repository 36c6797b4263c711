//! A minimal Kubernetes API client: JSON GET/POST and line-delimited watches over HTTPS.
//!
//! The control plane needs three kinds of call (TokenReview, list+watch of Pods and of
//! our CRD, the JWKS document), so this is a few hundred lines over hyper's HTTP/1.1
//! client connection and tokio-rustls rather than kube-rs/k8s-openapi, which would add
//! minutes of build time for those endpoints. Callers describe the few fields they read
//! with their own `serde` structs.
//!
//! Security properties:
//! * The API server is verified against the configured CA only (webpki roots from the
//!   PEM, no system roots) and its name is checked: a DNS name or an IP address SAN,
//!   whichever the base URL holds. Ferrule's own crypto provider (aws-lc-rs) is used.
//! * The bearer token is re-read from its file on every request: projected
//!   service-account tokens rotate underneath a running pod.
//! * Responses (and each watch line) are capped at [`MAX_BODY_BYTES`]; connecting and
//!   whole non-watch requests have timeouts. A watch has a timeout for its response
//!   headers only; pass `timeoutSeconds` in the query so the server ends it regularly.
//! * One connection per request: no pool to poison, and a watch owns its connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

/// Largest response body, and largest single watch line, accepted (16 MiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Time allowed for TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole non-watch request, and for a watch's response headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest bearer token file read (projected tokens are ~1-2 KiB).
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Where the in-cluster service-account credentials are mounted.
pub const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach one API server.
#[derive(Debug, Clone)]
pub struct KubeClientConfig {
    /// `https://host:port` of the API server (no path).
    pub base_url: Uri,
    /// PEM of the CA certificate(s) that sign the API server's certificate.
    pub ca_pem: Vec<u8>,
    /// File holding the bearer token, re-read on every request; `None` sends none.
    pub token_file: Option<PathBuf>,
}

/// Errors talking to the API server. Messages never contain the bearer token.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// Connecting, reading the token file, or the HTTP exchange failed (including timeouts,
    /// reported as [`std::io::ErrorKind::TimedOut`]).
    #[error("kubernetes API I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (e.g. the server's certificate is not signed by the
    /// configured CA, or does not name the host).
    #[error("kubernetes API TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The server answered with a non-success status. `reason` is taken from the
    /// Kubernetes `Status` object when the body holds one.
    #[error("kubernetes API returned {status}: {reason}")]
    Http {
        /// The HTTP status code.
        status: StatusCode,
        /// `<Status.reason>: <Status.message>`, or the canonical reason phrase.
        reason: String,
    },
    /// The body was not the expected JSON, or exceeded the size cap.
    #[error("kubernetes API response could not be decoded: {0}")]
    Decode(String),
    /// The client configuration is unusable.
    #[error("kubernetes API client configuration: {what}")]
    Config {
        /// What is wrong.
        what: String,
    },
}

fn config_err(what: impl Into<String>) -> KubeError {
    KubeError::Config { what: what.into() }
}

/// A Kubernetes API client. Cloning is cheap (shared TLS configuration).
#[derive(Clone)]
pub struct KubeClient {
    inner: Arc<Inner>,
}

struct Inner {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    /// `host[:port]` for the `Host` header.
    authority: String,
    token_file: Option<PathBuf>,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.inner.authority)
            .field("token_file", &self.inner.token_file)
            .finish()
    }
}

impl KubeClient {
    /// Builds a client for `cfg`. Fails on a non-`https` URL, a URL with a path, or a CA
    /// PEM without a usable certificate.
    pub fn new(cfg: KubeClientConfig) -> Result<Self, KubeError> {
        let uri = &cfg.base_url;
        if uri.scheme_str() != Some("https") {
            return Err(config_err(format!(
                "API URL {uri} must start with https://"
            )));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(config_err(format!(
                "API URL {uri} must be https://host[:port] without a path"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| config_err(format!("API URL {uri} has no host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| config_err(format!("API host {host:?} is not a DNS name or IP: {e}")))?;

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&cfg.ca_pem) {
            let cert = cert.map_err(|e| config_err(format!("API CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| config_err(format!("API CA certificate rejected: {e}")))?;
        }
        if roots.is_empty() {
            return Err(config_err("API CA PEM holds no certificate"));
        }
        let tls = rustls::ClientConfig::builder_with_provider(api_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(format!("TLS versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tls = tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            inner: Arc::new(Inner {
                tls: TlsConnector::from(Arc::new(tls)),
                server_name,
                host,
                port,
                authority: authority.as_str().to_string(),
                token_file: cfg.token_file,
            }),
        })
    }

    /// The client a pod uses for its own cluster: `KUBERNETES_SERVICE_HOST` /
    /// `KUBERNETES_SERVICE_PORT`, the CA and token mounted under [`IN_CLUSTER_DIR`].
    pub fn in_cluster() -> Result<Self, KubeError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| config_err("KUBERNETES_SERVICE_HOST is not set (not in a pod?)"))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let base_url: Uri = format!("https://{host}:{port}")
            .parse()
            .map_err(|e| config_err(format!("in-cluster API URL: {e}")))?;
        let dir = Path::new(IN_CLUSTER_DIR);
        let ca_path = dir.join("ca.crt");
        let ca_pem = std::fs::read(&ca_path)
            .map_err(|e| config_err(format!("reading {}: {e}", ca_path.display())))?;
        Self::new(KubeClientConfig {
            base_url,
            ca_pem,
            token_file: Some(dir.join("token")),
        })
    }

    /// POSTs `body` as JSON to `path` (e.g. `/apis/authentication.k8s.io/v1/tokenreviews`)
    /// and decodes the JSON answer.
    pub async fn post_json<T: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, KubeError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| config_err(format!("encoding the request body: {e}")))?;
        let bytes = timed(self.request_bytes(Method::POST, path, Some(body))).await?;
        decode(&bytes)
    }

    /// GETs `path` and decodes the JSON answer.
    pub async fn get_json<R: DeserializeOwned>(&self, path: &str) -> Result<R, KubeError> {
        let bytes = timed(self.request_bytes(Method::GET, path, None)).await?;
        decode(&bytes)
    }

    /// GETs a watch (`path` carries `?watch=1&resourceVersion=..&allowWatchBookmarks=true`)
    /// and returns its body as a stream of raw JSON lines (one watch event each).
    pub async fn watch_lines(&self, path: &str) -> Result<WatchLines, KubeError> {
        let (resp, conn) = timed(self.send(Method::GET, path, None)).await?;
        let body = check_status(resp).await?;
        Ok(WatchLines {
            body,
            buf: Vec::new(),
            done: false,
            _conn: conn,
        })
    }

    async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, KubeError> {
        let (resp, _conn) = self.send(method, path, body).await?;
        let body = check_status(resp).await?;
        read_capped(body).await
    }

    /// Opens a connection, sends one request and returns the response head plus the
    /// connection task (which ends when the response body has been read or dropped).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::Response<Incoming>, AbortOnDrop), KubeError> {
        if !path.starts_with('/') {
            return Err(config_err(format!(
                "request path {path:?} must start with /"
            )));
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.inner.authority)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "ferrule-control-plane");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(file) = &self.inner.token_file {
            let mut value = http::HeaderValue::try_from(format!("Bearer {}", read_token(file)?))
                .map_err(|_| {
                    config_err(format!(
                        "token file {} holds invalid characters",
                        file.display()
                    ))
                })?;
            value.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| config_err(format!("request for {path:?}: {e}")))?;

        let tls = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| timeout_err("connecting to the API server"))??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(hyper_err)?;
        let conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "kubernetes API connection ended with an error");
            }
        }));
        let resp = sender.send_request(req).await.map_err(hyper_err)?;
        Ok((resp, conn))
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, KubeError> {
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((self.inner.host.as_str(), self.inner.port))
                .await?
                .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    return self
                        .inner
                        .tls
                        .connect(self.inner.server_name.clone(), tcp)
                        .await
                        .map_err(KubeError::Tls);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(KubeError::Io(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} resolves to no address", self.inner.host),
            )
        })))
    }
}

/// The raw lines of a watch response. Dropping it closes the connection.
pub struct WatchLines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
    _conn: AbortOnDrop,
}

impl std::fmt::Debug for WatchLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchLines")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl WatchLines {
    /// The next non-empty line (without its `\n`); `None` when the server ended the watch.
    /// A line longer than [`MAX_BODY_BYTES`] is an error, after which the stream ends.
    pub async fn next(&mut self) -> Option<Result<Bytes, KubeError>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(pos + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(Ok(Bytes::from(line)));
            }
            if self.done {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                return Some(Ok(Bytes::from(std::mem::take(&mut self.buf))));
            }
            if self.buf.len() > MAX_BODY_BYTES {
                self.done = true;
                self.buf.clear();
                return Some(Err(KubeError::Decode(format!(
                    "watch line longer than {MAX_BODY_BYTES} bytes"
                ))));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    self.buf.clear();
                    return Some(Err(hyper_err(e)));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Aborts the connection task when the request (or watch) is finished with.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ferrule's provider plus the TLS 1.2 `ECDHE_RSA` suites: API servers commonly have RSA
/// certificates (kubeadm's are), and one limited to TLS 1.2 could not be reached with
/// Ferrule's ECDSA-only TLS 1.2 suites. Key exchange groups are Ferrule's.
fn api_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite;
    let base = ferrule_tls::provider();
    let mut suites = base.cipher_suites.clone();
    suites.extend([
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]);
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..(*base).clone()
    })
}

fn read_token(path: &Path) -> Result<String, KubeError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| {
        KubeError::Io(std::io::Error::new(
            e.kind(),
            format!("reading the API token file {}: {e}", path.display()),
        ))
    })?;
    let mut token = String::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut token)
        .map_err(|e| config_err(format!("token file {}: {e}", path.display())))?;
    if token.len() as u64 > MAX_TOKEN_BYTES {
        return Err(config_err(format!(
            "token file {} is too large",
            path.display()
        )));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(config_err(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, KubeError>>,
) -> Result<T, KubeError> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| timeout_err("waiting for the API server's response"))?
}

fn timeout_err(what: &str) -> KubeError {
    KubeError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("timed out {what}"),
    ))
}

fn hyper_err(e: hyper::Error) -> KubeError {
    KubeError::Io(std::io::Error::other(e))
}

async fn read_capped(body: Incoming) -> Result<Bytes, KubeError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(hyper_err(*e)),
            Err(_) => Err(KubeError::Decode(format!(
                "response body larger than {MAX_BODY_BYTES} bytes"
            ))),
        },
    }
}

fn decode<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, KubeError> {
    serde_json::from_slice(bytes).map_err(|e| KubeError::Decode(e.to_string()))
}

/// The fields of a Kubernetes `Status` object that explain a failure.
#[derive(serde::Deserialize)]
struct StatusObject {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Passes a 2xx response's body through; turns anything else into [`KubeError::Http`].
async fn check_status(resp: http::Response<Incoming>) -> Result<Incoming, KubeError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp.into_body());
    }
    // Error bodies are small Status objects; read at most 64 KiB of them.
    let body = Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let reason = match serde_json::from_slice::<StatusObject>(&body) {
        Ok(s) if !s.reason.is_empty() || !s.message.is_empty() => {
            match (s.reason.is_empty(), s.message.is_empty()) {
                (false, false) => format!("{}: {}", s.reason, s.message),
                (false, true) => s.reason,
                _ => s.message,
            }
        }
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    Err(KubeError::Http { status, reason })
}
