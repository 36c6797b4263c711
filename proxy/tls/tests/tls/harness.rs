//! Real handshakes over 127.0.0.1: an echo server that reports each handshake's
//! outcome, a client that connects and does one round trip, and builders for
//! misbehaving peers that present certificates `Credentials::new` would refuse.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrule_tls::{
    ClientAuth, IdentityHandle, SpiffeClientVerifier, SpiffeId, SpiffeServerVerifier, provider,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    CipherSuite, ClientConfig, NamedGroup, ProtocolVersion, ServerConfig, SupportedProtocolVersion,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::pki::{Leaf, Pki};

/// Upper bound for any single step; only reached if a test is broken.
const STEP: Duration = Duration::from_secs(5);

/// What one side saw of a finished handshake.
#[derive(Debug)]
pub struct Outcome {
    pub peer: Option<SpiffeId>,
    pub peer_leaf: Option<CertificateDer<'static>>,
    pub version: Option<ProtocolVersion>,
    pub suite: Option<CipherSuite>,
    pub group: Option<NamedGroup>,
    pub alpn: Option<Vec<u8>>,
    pub kind: Option<rustls::HandshakeKind>,
}

fn outcome(conn: &rustls::CommonState) -> Outcome {
    Outcome {
        peer: ferrule_tls::peer_spiffe_id(conn.peer_certificates()),
        peer_leaf: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
        version: conn.protocol_version(),
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        kind: conn.handshake_kind(),
    }
}

/// Accepts connections, reports each handshake result, then echoes bytes back.
pub struct EchoServer {
    pub addr: SocketAddr,
    results: mpsc::UnboundedReceiver<io::Result<Outcome>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(config);
        let (tx, results) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let _ = tx.send(Ok(outcome(tls.get_ref().1)));
                            let _ = echo(&mut tls).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            }
        });
        Self {
            addr,
            results,
            task,
        }
    }

    /// The result of the next handshake the server finished (or failed).
    pub async fn next(&mut self) -> io::Result<Outcome> {
        tokio::time::timeout(STEP, self.results.recv())
            .await
            .expect("server handshake timed out")
            .expect("server stopped")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
        s.flush().await?;
    }
}

pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects, handshakes (server name deliberately meaningless) and does one echo round
/// trip, so a client certificate the server refuses surfaces here even in TLS 1.3.
pub async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> io::Result<(ClientStream, Outcome)> {
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("placeholder.invalid").expect("name");
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        round_trip(&mut tls, b"ping").await?;
        let out = outcome(tls.get_ref().1);
        Ok((tls, out))
    };
    tokio::time::timeout(STEP, work)
        .await
        .expect("client timed out")
}

/// Writes `msg` and reads it back from the echo server.
pub async fn round_trip(tls: &mut ClientStream, msg: &[u8]) -> io::Result<()> {
    tls.write_all(msg).await?;
    tls.flush().await?;
    let mut back = vec![0u8; msg.len()];
    tls.read_exact(&mut back).await?;
    assert_eq!(back, msg);
    Ok(())
}

/// A handle holding `pki`'s bundle and an SVID for `spiffe://<td>/<path>`.
pub fn workload(pki: &Pki, path: &str) -> IdentityHandle {
    let handle = IdentityHandle::new();
    handle.set_bundle(pki.bundle());
    handle.set_credentials(pki.svid(path).credentials());
    handle
}

/// A handle holding only `pki`'s bundle (no certificate yet).
pub fn bundle_only(pki: &Pki) -> IdentityHandle {
    let handle = IdentityHandle::new();
    handle.set_bundle(pki.bundle());
    handle
}

pub static TLS13_AND_12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
pub static TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// A client presenting `leaf` verbatim (bypassing `Credentials` checks), verifying the
/// server with Ferrule's verifier.
pub fn raw_client(
    trust: &IdentityHandle,
    expected: SpiffeId,
    leaf: Option<&Leaf>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            trust.clone(),
            vec![expected],
        )));
    let config = match leaf {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain.clone(), leaf.key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A server presenting `leaf` verbatim, verifying clients with Ferrule's verifier.
pub fn raw_server(trust: &IdentityHandle, leaf: &Leaf) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS13_AND_12)
        .expect("versions")
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            trust.clone(),
            ClientAuth::Required,
        )))
        .with_single_cert(leaf.chain.clone(), leaf.key())
        .expect("server cert");
    Arc::new(config)
}

/// The classification of a failed handshake as seen through tokio-rustls.
pub fn reason(result: &io::Result<impl std::fmt::Debug>) -> &'static str {
    match result {
        Ok(ok) => panic!("expected a failure, got {ok:?}"),
        Err(e) => ferrule_tls::classify_io(e),
    }
}
