//! Peer verification by SPIFFE ID: where a certificate chain becomes an identity.
//!
//! [`verify_svid`] is the single rule: webpki validates the chain against the current
//! trust bundle (signatures, validity, basicConstraints, pathLen, EKU), then the leaf
//! must carry exactly one URI SAN that is a valid SPIFFE ID in the bundle's trust
//! domain. DNS names and the TLS server name are never consulted.
//!
//! The rustls verifiers ([`SpiffeServerVerifier`] for clients, [`SpiffeClientVerifier`]
//! for servers) call it at every handshake with the bundle the [`IdentityHandle`]
//! holds *at that moment*, so a bundle rotation applies to the next handshake.
//!
//! [`IdentityHandle`]: crate::IdentityHandle

mod client_cert;
mod error;
mod peer;
mod server_cert;

use rustls::pki_types::{CertificateDer, UnixTime};
use spiffe::SpiffeId;
use webpki::{EndEntityCert, KeyUsage};

pub use client_cert::SpiffeClientVerifier;
pub use error::{Usage, VerifyError, classify, classify_io, verify_error_of};
pub use peer::VerifiedPeer;
pub use server_cert::SpiffeServerVerifier;

use crate::identity::TrustBundle;
use crate::{provider, svid};

/// Verifies a peer's X.509-SVID chain against `bundle` at time `now` and returns its
/// SPIFFE ID.
///
/// `intermediates` are the certificates the peer sent after its leaf, in any order;
/// `usage` selects the required extended key usage (a leaf without EKUs is accepted
/// for both). The caller decides whether the returned identity is *authorized*.
pub fn verify_svid(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: UnixTime,
    usage: Usage,
) -> Result<SpiffeId, VerifyError> {
    let ee = EndEntityCert::try_from(end_entity).map_err(|e| VerifyError::from_webpki(e, usage))?;
    let eku = match usage {
        Usage::Client => KeyUsage::client_auth(),
        Usage::Server => KeyUsage::server_auth(),
    };
    ee.verify_for_usage(
        provider().signature_verification_algorithms.all,
        bundle.anchors(),
        intermediates,
        now,
        eku,
        None,
        None,
    )
    .map_err(|e| VerifyError::from_webpki(e, usage))?;

    let leaf = svid::parse(end_entity)?;
    svid::check_leaf_key_usage(&leaf)?;
    let id = svid::spiffe_id(&leaf)?;
    if !id.is_member_of(bundle.trust_domain()) {
        return Err(VerifyError::ForeignTrustDomain {
            id,
            expected: bundle.trust_domain().clone(),
        });
    }
    Ok(id)
}

/// The SPIFFE ID of a connection's peer after a successful handshake, from
/// `conn.peer_certificates()`.
///
/// This only *reads* the ID; it relies on the handshake having run a Ferrule verifier.
/// `None` when the peer sent no certificate (an optional-client-auth server) or the
/// leaf carries no single valid SPIFFE ID.
pub fn peer_spiffe_id(peer_certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = peer_certs?.first()?;
    let cert = svid::parse(leaf).ok()?;
    svid::spiffe_id(&cert).ok()
}

/// Checks that `id` is one of `expected`, for verifiers that pin peer identities.
fn check_expected(id: SpiffeId, expected: &[SpiffeId]) -> Result<SpiffeId, VerifyError> {
    if expected.contains(&id) {
        Ok(id)
    } else {
        Err(VerifyError::IdentityMismatch {
            expected: expected.to_vec(),
            got: id,
        })
    }
}
