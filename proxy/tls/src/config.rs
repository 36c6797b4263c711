//! Building rustls server and client configurations that follow Ferrule's TLS policy.
//!
//! Every configuration in the workspace comes from here: [`crate::provider`]'s suites
//! and groups, TLS 1.2 as the floor (or TLS 1.3 only), session resumption and 0-RTT
//! off, extended master secret required on TLS 1.2, certificates read from an
//! [`IdentityHandle`] at each handshake, and peers verified by SPIFFE ID.

use std::sync::Arc;

use rustls::client::{ResolvesClientCert, Resumption};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme, SupportedProtocolVersion};
use spiffe::SpiffeId;

use crate::identity::IdentityHandle;
use crate::provider;
use crate::verify::{SpiffeClientVerifier, SpiffeServerVerifier};

/// Per-listener / per-dialer choices within the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Refuse TLS 1.2. Default `false`: TLS 1.3 is preferred and TLS 1.2 is the floor.
    pub tls13_only: bool,
    /// ALPN protocols to offer (client) or accept (server), in preference order, e.g.
    /// `b"h2".to_vec()`. Default: none.
    pub alpn: Vec<Vec<u8>>,
}

/// Whether a server requires clients to present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a valid certificate is refused (proxy inbound).
    Required,
    /// A client may present no certificate; one it presents must still verify (e.g. a
    /// server whose first-contact clients have no certificate yet).
    Optional,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// rustls refused the combination of versions and suites (a bug in the policy).
    #[error("rustls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A client configuration was asked to accept no server identity at all.
    #[error("no expected server identity given")]
    NoExpectedIdentity,
}

/// A server configuration presenting the handle's current certificate and verifying
/// clients with [`SpiffeClientVerifier`].
///
/// While the handle holds no credentials, handshakes fail (the client sees an
/// `access_denied` alert). Read the client's identity afterwards with
/// [`crate::peer_spiffe_id`]`(conn.peer_certificates())`.
pub fn server_config(
    identity: &IdentityHandle,
    client_auth: ClientAuth,
    opts: &TlsOptions,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let verifier = Arc::new(SpiffeClientVerifier::new(identity.clone(), client_auth));
    server_config_with_verifier(identity, verifier, opts)
}

/// Like [`server_config`] but with a caller-supplied client-certificate verifier, for a
/// server that judges client certificates itself after the handshake (the control
/// plane's identity API). Everything else follows the policy.
pub fn server_config_with_verifier(
    identity: &IdentityHandle,
    verifier: Arc<dyn ClientCertVerifier>,
    opts: &TlsOptions,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(opts))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentServerCert(identity.clone())));
    // No resumption: a resumed session skips certificate verification, so after a
    // trust-bundle change it could admit a peer the new bundle rejects
    // (cf. Envoy CVE-2022-21654). Neither session IDs nor tickets are issued.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    config.require_ems = true;
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

/// A client configuration accepting only a server that proves one of `expected`
/// (exact SPIFFE ID match), and presenting the handle's current certificate when the
/// server asks for one (none while the handle holds no credentials).
///
/// The server name given to `connect` is not used for verification; pass any
/// placeholder, e.g. `ServerName::try_from("ferrule.invalid")`.
pub fn client_config(
    identity: &IdentityHandle,
    expected: Vec<SpiffeId>,
    opts: &TlsOptions,
) -> Result<Arc<ClientConfig>, ConfigError> {
    if expected.is_empty() {
        return Err(ConfigError::NoExpectedIdentity);
    }
    let verifier = Arc::new(SpiffeServerVerifier::new(identity.clone(), expected));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(opts))?
        .dangerous() // the "danger" is a custom verifier: ours checks SPIFFE IDs
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentClientCert(identity.clone())));
    // See server_config: resumption would bypass verification against a new bundle.
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    config.require_ems = true;
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

/// TLS 1.3 preferred, TLS 1.2 allowed.
static TLS13_AND_12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
/// TLS 1.3 only.
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(opts: &TlsOptions) -> &'static [&'static SupportedProtocolVersion] {
    if opts.tls13_only {
        TLS13_ONLY
    } else {
        TLS13_AND_12
    }
}

/// Presents whatever certificate the handle holds when the handshake starts.
#[derive(Debug)]
struct CurrentServerCert(IdentityHandle);

impl ResolvesServerCert for CurrentServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let creds = self.0.credentials();
        if creds.is_none() {
            tracing::debug!("no certificate yet; refusing TLS handshake");
        }
        creds.map(|c| c.certified_key().clone())
    }
}

/// Presents whatever certificate the handle holds when the server asks for one.
#[derive(Debug)]
struct CurrentClientCert(IdentityHandle);

impl ResolvesClientCert for CurrentClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.credentials().map(|c| c.certified_key().clone())
    }

    fn has_certs(&self) -> bool {
        self.0.credentials().is_some()
    }
}
