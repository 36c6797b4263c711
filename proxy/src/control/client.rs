//! Dials the control plane over TLS, verifying its SPIFFE ID, and presenting the
//! proxy's current certificate (if any) for mTLS.

use std::sync::Arc;
use std::time::Duration;

use ferrule_tls::{IdentityHandle, TlsOptions};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use spiffe::SpiffeId;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::telemetry::error_chain;

/// Time allowed to connect (TCP + TLS) to the control plane.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Error dialing the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] ferrule_tls::ConfigError),
    /// The gRPC channel could not be established (network, TLS, or identity failure).
    /// The message carries the whole cause chain (e.g. the TLS verification reason).
    #[error("cannot connect to the control plane at {addr}: {}", error_chain(.source))]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Creates channels to the control plane.
#[derive(Clone)]
pub struct ControlClient {
    addr: String,
    tls: Arc<rustls::ClientConfig>,
}

impl ControlClient {
    /// A client for the control plane at `addr` (`host:port`) that must present `expected`.
    pub fn new(
        addr: String,
        identity: &IdentityHandle,
        expected: SpiffeId,
    ) -> Result<Self, ControlError> {
        let tls = ferrule_tls::client_config(
            identity,
            vec![expected],
            &TlsOptions {
                alpn: vec![b"h2".to_vec()],
                ..Default::default()
            },
        )?;
        Ok(Self { addr, tls })
    }

    /// Opens a fresh connection. The handshake presents the certificate the proxy holds
    /// *now*, so renewals use a fresh channel each time.
    pub async fn connect(&self) -> Result<Channel, ControlError> {
        let addr = self.addr.clone();
        let connector = TlsConnector::from(self.tls.clone());
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|source| ControlError::Connect {
                addr: addr.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let dial_addr = addr.clone();
        endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                let addr = dial_addr.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(&addr).await?;
                    tcp.set_nodelay(true)?;
                    // Verification is by SPIFFE ID, so the server name is a placeholder.
                    let name = ServerName::try_from("control-plane.ferrule.invalid")
                        .map_err(std::io::Error::other)?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|source| ControlError::Connect { addr, source })
    }
}
