//! Test support: a real HTTPS server on `127.0.0.1:0` standing in for the Kubernetes API
//! server (which cannot run here). It serves a certificate from a CA generated per test,
//! records every request, and answers with whatever the test's handler returns, so tests
//! can speak the documented wire format (TokenReview, JWKS, watch streams, `Status`
//! errors) over real TLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{KubeClient, KubeClientConfig};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// What the server answers: a status and a body sent as these separate chunks.
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Body chunks (each its own HTTP/1.1 chunk).
    pub chunks: Vec<Vec<u8>>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::raw(status, serde_json::to_vec(&body).unwrap())
    }

    /// Arbitrary bytes.
    pub fn raw(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            chunks: vec![body.into()],
        }
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A CA and the server certificate it signs.
pub struct TestPki {
    /// The CA certificate, PEM (what a client trusts).
    pub ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TestPki {
    /// A fresh CA and a server certificate for `localhost` and `127.0.0.1`, or for the
    /// given names only.
    pub fn new(dns_names: &[&str], ip: bool) -> Self {
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf =
            CertificateParams::new(dns_names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        if ip {
            leaf.subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// The fake API server.
pub struct FakeApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The PKI it serves with.
    pub pki: TestPki,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server (certificate for `localhost` + `127.0.0.1`) answering with `handler`.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(TestPki::new(&["localhost"], true), handler).await
    }

    /// Starts a server with the given PKI.
    pub async fn start_with(
        pki: TestPki,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let tls = rustls::ServerConfig::builder_with_provider(ferrule_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    // Handshake failures are what some tests expect; ignore them.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        serve(req, handler.clone(), recorded.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            pki,
            requests,
            task,
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// A client trusting this server's CA, with an optional bearer token file.
    pub fn client(&self, token_file: Option<std::path::PathBuf>) -> KubeClient {
        KubeClient::new(KubeClientConfig {
            base_url: self.url().parse().unwrap(),
            ca_pem: self.pki.ca_pem.clone().into_bytes(),
            token_file,
        })
        .unwrap()
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    req: Request<Incoming>,
    handler: Handler,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let rec = Recorded {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authorization: parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    };
    let reply = handler(&rec);
    recorded.lock().unwrap().push(rec);
    let frames = reply
        .chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
    let body = StreamBody::new(tokio_stream::iter(frames));
    Ok(Response::builder()
        .status(reply.status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(body))
        .unwrap())
}
