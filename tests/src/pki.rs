//! Speaking to the control plane's identity API directly, as a (possibly misbehaving)
//! proxy would: custom CSRs, tokens, client certificates.

use ferrule_proto::identity::v1 as pb;
use ferrule_proto::identity::v1::identity_client::IdentityClient;
use ferrule_proxy::control::ControlClient;
use ferrule_tls::{Credentials, IdentityHandle, TrustBundle};
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{SpiffeId, TrustDomain};
use tonic::transport::Channel;

use crate::ControlPlane;

/// An identity handle holding the control plane's current bundle (and optionally our
/// own credentials, for renewal-style calls).
pub fn handle_for(cp: &ControlPlane, creds: Option<Credentials>) -> anyhow::Result<IdentityHandle> {
    let td = TrustDomain::new(&cp.opts.trust_domain)?;
    let pem = std::fs::read(cp.bundle_file())?;
    let h = IdentityHandle::new();
    h.set_bundle(TrustBundle::from_pem(td, &pem, 0)?);
    if let Some(c) = creds {
        h.set_credentials(c);
    }
    Ok(h)
}

/// A gRPC client of the identity API over TLS that verifies the control plane's ID.
pub async fn identity_client(
    cp: &ControlPlane,
    handle: &IdentityHandle,
) -> anyhow::Result<IdentityClient<Channel>> {
    let td = TrustDomain::new(&cp.opts.trust_domain)?;
    let cp_id = SpiffeId::from_segments(td, &["ferrule", "control-plane"])?;
    let client = ControlClient::new(cp.addr.to_string(), handle, cp_id)?;
    Ok(IdentityClient::new(client.connect().await?))
}

/// A P-256 key and a DER CSR for it asking for `uri_sans` (which the CA must ignore).
pub fn csr(uri_sans: &[&str], ca: bool) -> anyhow::Result<(KeyPair, Vec<u8>)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    for s in uri_sans {
        params
            .subject_alt_names
            .push(SanType::URI((*s).try_into()?));
    }
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let req = params.serialize_request(&key)?;
    Ok((key, req.der().to_vec()))
}

/// Calls `Certify` with a join token.
pub async fn certify_with_token(
    client: &mut IdentityClient<Channel>,
    csr_der: Vec<u8>,
    token: &str,
    expected: &str,
) -> Result<pb::CertifyResponse, tonic::Status> {
    client
        .certify(pb::CertifyRequest {
            csr_der,
            credential: Some(pb::certify_request::Credential::JoinToken(token.into())),
            expected_spiffe_id: expected.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Turns a `Certify` response and its key into credentials.
pub fn credentials(resp: &pb::CertifyResponse, key: &KeyPair) -> anyhow::Result<Credentials> {
    let mut chain = vec![CertificateDer::from(resp.leaf_der.clone())];
    chain.extend(
        resp.intermediates_der
            .iter()
            .cloned()
            .map(CertificateDer::from),
    );
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(Credentials::new(chain, key)?)
}

/// Obtains credentials for `spiffe_id` through a fresh join token.
pub async fn obtain(cp: &ControlPlane, spiffe_id: &str) -> anyhow::Result<Credentials> {
    let token = cp.create_token(spiffe_id, 1, "5m")?;
    let handle = handle_for(cp, None)?;
    let mut client = identity_client(cp, &handle).await?;
    let (key, der) = csr(&[], false)?;
    let resp = certify_with_token(&mut client, der, &token, "").await?;
    credentials(&resp, &key)
}
