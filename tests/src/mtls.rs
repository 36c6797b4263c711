//! A mesh client that is not a Ferrule proxy: rustls with a certificate of the test's
//! choosing, speaking the mesh hop (ALPN `ferrule/1`, hop header) straight to a proxy's
//! inbound listener. For tests of what the inbound side accepts: certificates with
//! skewed validity, cached TLS sessions across trust-bundle changes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrule_tls::{Credentials, IdentityHandle, SpiffeId, SpiffeServerVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, HandshakeKind, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client certificate a [`client_config`] presents, swappable between handshakes.
///
/// rustls only offers a cached session to a server from the same `ClientConfig`
/// (same verifier and certificate resolver objects), so a test that changes the
/// certificate but must still offer old sessions swaps it here instead of building a
/// new configuration.
#[derive(Debug)]
pub struct ClientCert(Mutex<Arc<CertifiedKey>>);

impl ClientCert {
    /// Presents `creds`.
    pub fn new(creds: &Credentials) -> Arc<Self> {
        Arc::new(Self(Mutex::new(creds.certified_key().clone())))
    }

    /// Presents `creds` from the next handshake on.
    pub fn set(&self, creds: &Credentials) {
        *self.0.lock().unwrap() = creds.certified_key().clone();
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.lock().unwrap().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client presenting `cert`, accepting a server that proves `server_id` under the
/// bundle `handle` holds at each handshake, offering only `version`, with the given
/// session `resumption` (e.g. `Resumption::disabled()` or `Resumption::store(..)`).
pub fn client_config(
    handle: &IdentityHandle,
    server_id: &str,
    cert: Arc<ClientCert>,
    version: &'static SupportedProtocolVersion,
    resumption: Resumption,
) -> Arc<ClientConfig> {
    let expected = vec![SpiffeId::new(server_id).expect("server SPIFFE ID")];
    let verifier = SpiffeServerVerifier::new(handle.clone(), expected);
    let mut c = ClientConfig::builder_with_provider(ferrule_tls::provider())
        .with_protocol_versions(&[version])
        .expect("protocol version")
        .dangerous() // a SPIFFE verifier, as the proxies use
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(cert);
    c.resumption = resumption;
    c.alpn_protocols = vec![b"ferrule/1".to_vec()];
    Arc::new(c)
}

/// What one mesh connection attempt got.
#[derive(Debug)]
pub struct Attempt {
    /// How the handshake went on the client side; `None` when it failed there.
    pub kind: Option<HandshakeKind>,
    /// Application bytes echoed back (the app behind port 8080 is an echo server).
    pub echoed: Vec<u8>,
}

/// Connects to `addr`, handshakes, sends the hop header for port 8080 and `payload`,
/// and reads the echo until all of it came back, the connection ends, or 10 s pass.
/// (Reading also collects the TLS 1.3 session tickets a server sends.)
pub async fn attempt(cfg: Arc<ClientConfig>, addr: SocketAddr, payload: &[u8]) -> Attempt {
    attempt_port(cfg, addr, 8080, payload).await
}

/// Like [`attempt`], with a hop header naming application port `port`.
pub async fn attempt_port(
    cfg: Arc<ClientConfig>,
    addr: SocketAddr,
    port: u16,
    payload: &[u8],
) -> Attempt {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("ferrule.invalid").expect("placeholder name");
    let connect = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp);
    let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(10), connect).await else {
        return Attempt {
            kind: None,
            echoed: vec![],
        };
    };
    let kind = tls.get_ref().1.handshake_kind();
    let mut echoed = Vec::new();
    let hop = ferrule_proxy::hop::encode(port);
    if tls.write_all(&[&hop[..], payload].concat()).await.is_ok() {
        let mut buf = [0u8; 1024];
        while echoed.len() < payload.len() {
            match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => echoed.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }
    let _ = tls.shutdown().await;
    Attempt { kind, echoed }
}

/// Value of the first sample line starting with `name` in a metrics scrape (0 when
/// absent).
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// How many inbound connections `proxy` refused for `reason` (a handshake failure
/// label such as `unknown_ca`, `not_yet_valid`, `expired`).
pub fn inbound_refusals(proxy: &crate::Proxy, reason: &str) -> f64 {
    let metrics = proxy.admin_get("/metrics").map(|r| r.1).unwrap_or_default();
    sample(
        &metrics,
        &format!(
            "ferrule_proxy_connection_failures_total{{direction=\"inbound\",reason=\"{reason}\"}}"
        ),
    )
}
