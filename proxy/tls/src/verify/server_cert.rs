//! [`SpiffeServerVerifier`]: how a Ferrule client decides whether it reached the right
//! server.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use spiffe::SpiffeId;

use super::{Usage, VerifyError, check_expected, verify_svid};
use crate::identity::IdentityHandle;
use crate::provider;

/// Verifies a server's certificate by SPIFFE ID against the trust bundle the
/// [`IdentityHandle`] holds at handshake time, and requires the ID to be one of
/// `expected` (exact match).
///
/// The TLS server name passed to `connect` is ignored: callers may pass any
/// placeholder (e.g. `ServerName::try_from("ferrule.invalid")`). Fails closed with
/// [`VerifyError::NoBundle`] while no bundle is loaded.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    identity: IdentityHandle,
    expected: Vec<SpiffeId>,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier accepting a server that proves one of `expected`. An empty list
    /// accepts no server.
    pub fn new(identity: IdentityHandle, expected: Vec<SpiffeId>) -> Self {
        Self {
            identity,
            expected,
            provider: provider(),
        }
    }

    /// The identities this verifier accepts.
    pub fn expected(&self) -> &[SpiffeId] {
        &self.expected
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let bundle = self.identity.bundle().ok_or(VerifyError::NoBundle)?;
        let id = verify_svid(end_entity, intermediates, &bundle, now, Usage::Server)?;
        check_expected(id, &self.expected)
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verify(end_entity, intermediates, now) {
            Ok(id) => {
                tracing::trace!(peer = %id, "server certificate verified");
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => {
                tracing::debug!(reason = e.reason(), error = %e, "server certificate refused");
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
