//! [`SpiffeClientVerifier`]: how a Ferrule server authenticates the clients that
//! present a certificate.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{Usage, VerifyError, verify_svid};
use crate::config::ClientAuth;
use crate::identity::IdentityHandle;
use crate::provider;

/// Verifies a client's certificate by SPIFFE ID against the trust bundle the
/// [`IdentityHandle`] holds at handshake time.
///
/// Any SPIFFE ID of the trust domain is accepted here: *authorization* is the caller's
/// job, using [`crate::peer_spiffe_id`] on the finished connection. With
/// [`ClientAuth::Optional`] a client may present no certificate, but a certificate it
/// does present must verify. No CA names are hinted to clients.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    identity: IdentityHandle,
    client_auth: ClientAuth,
    provider: Arc<CryptoProvider>,
}

impl SpiffeClientVerifier {
    /// A verifier reading the bundle from `identity`; `client_auth` decides whether a
    /// certificate is mandatory.
    pub fn new(identity: IdentityHandle, client_auth: ClientAuth) -> Self {
        Self {
            identity,
            client_auth,
            provider: provider(),
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.client_auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self
            .identity
            .bundle()
            .ok_or(VerifyError::NoBundle)
            .and_then(|bundle| verify_svid(end_entity, intermediates, &bundle, now, Usage::Client));
        match result {
            Ok(id) => {
                tracing::trace!(peer = %id, "client certificate verified");
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => {
                tracing::debug!(reason = e.reason(), error = %e, "client certificate refused");
                Err(e.into())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
