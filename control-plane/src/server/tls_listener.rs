//! TLS accept loop for the identity API.
//!
//! tonic's built-in TLS cannot take a custom client-certificate verifier, so we accept
//! TCP ourselves, run each handshake in its own task (a slow client cannot stall accept),
//! and hand finished TLS streams to tonic through `serve_with_incoming`.
//!
//! Client certificates are *optional* here (first contact has none) and their chain is
//! deliberately not judged during the handshake: the handshake only proves the peer holds
//! the leaf's private key (TLS CertificateVerify). Each RPC that relies on the caller's
//! identity validates the chain against the current trust bundle itself
//! ([`PeerInfo::verified_identity`]) so a bad certificate gets a precise gRPC status and
//! a log line, rather than an opaque handshake alert.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferrule_tls::{TrustBundle, Usage, VerifyError};
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; beyond this, new connections wait in the kernel backlog.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// What the identity API knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The TCP peer address.
    pub remote: SocketAddr,
    /// The client's certificate chain (leaf first), if it presented one. Not yet
    /// validated against the trust bundle: use [`PeerInfo::verified_identity`].
    pub client_chain: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl PeerInfo {
    /// Validates the client certificate against `bundle` (for client authentication)
    /// and returns its SPIFFE ID. `Ok(None)` when the client presented no certificate.
    pub fn verified_identity(&self, bundle: &TrustBundle) -> Result<Option<SpiffeId>, VerifyError> {
        let Some(chain) = &self.client_chain else {
            return Ok(None);
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Ok(None);
        };
        ferrule_tls::verify_svid(leaf, intermediates, bundle, UnixTime::now(), Usage::Client)
            .map(Some)
    }
}

impl PeerInfo {
    /// notAfter of the client's leaf certificate, if it sent one that parses.
    pub fn leaf_not_after(&self) -> Option<std::time::SystemTime> {
        let leaf = self.client_chain.as_ref()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let secs = cert.validity().not_after.timestamp();
        let secs = u64::try_from(secs).ok()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }
}

/// A finished server-side TLS connection, carrying [`PeerInfo`] into tonic requests.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP on `listener`, completes TLS handshakes concurrently, and yields finished
/// connections. Failed handshakes are logged with their reason and dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = match permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            };
            let (tcp, remote) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "identity API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(%remote, error = %e, "identity API TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "identity API TLS handshake timed out");
                        return;
                    }
                };
                let client_chain = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
                let conn = TlsConn {
                    inner: tls,
                    info: PeerInfo {
                        remote,
                        client_chain,
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Requests an optional client certificate and checks only that the client holds its
/// key; chain validation happens per RPC (see the module docs).
#[derive(Debug)]
pub struct DeferredClientVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl DeferredClientVerifier {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
