//! What the control-plane benchmarks share: a channel factory pinned to the control
//! plane's SPIFFE ID (trust from its `bundle.pem`), P-256 CSRs, `Certify` with a join
//! token, and turning its answer into the credentials a proxy presents.

use std::path::Path;

use anyhow::{Context, bail};
use ferrule_proto::identity::v1 as pb;
use ferrule_proto::identity::v1::identity_client::IdentityClient;
use ferrule_proxy::control::ControlClient;
use ferrule_tls::{Credentials, IdentityHandle, SpiffeId, TrustBundle, TrustDomain};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The flags every control-plane load tool takes: where the control plane is and how to
/// trust it.
#[derive(Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// Control plane identity and mesh API, host:port.
    #[arg(long)]
    pub control_plane: String,
    /// Trust domain.
    #[arg(long, default_value = "demo.local")]
    pub trust_domain: String,
    /// The control plane's bundle file (`<data-dir>/bundle.pem`).
    #[arg(long)]
    pub bundle_file: std::path::PathBuf,
}

impl ControlPlaneArgs {
    /// The control plane these flags name ([`ControlPlane::new`]).
    pub fn control_plane(&self) -> anyhow::Result<ControlPlane> {
        ControlPlane::new(&self.control_plane, &self.trust_domain, &self.bundle_file)
    }
}

/// The control plane as a proxy first sees it: its address, trust bundle and SPIFFE ID.
#[derive(Clone)]
pub struct ControlPlane {
    /// `host:port` of the identity and mesh APIs.
    pub addr: String,
    /// The control plane's bundle (`<data-dir>/bundle.pem`).
    pub bundle: TrustBundle,
    /// The identity the control plane must present (`<td>/ferrule/control-plane`).
    pub id: SpiffeId,
}

impl ControlPlane {
    /// Reads the bundle file; the control plane is pinned to `spiffe://<td>/ferrule/control-plane`.
    pub fn new(addr: &str, trust_domain: &str, bundle_file: &Path) -> anyhow::Result<Self> {
        let td = TrustDomain::new(trust_domain)?;
        let pem = std::fs::read(bundle_file)
            .with_context(|| format!("reading {}", bundle_file.display()))?;
        let bundle = TrustBundle::from_pem(td.clone(), &pem, 0)
            .with_context(|| format!("parsing {}", bundle_file.display()))?;
        let id = SpiffeId::from_segments(td, &["ferrule", "control-plane"])?;
        Ok(Self {
            addr: addr.to_string(),
            bundle,
            id,
        })
    }

    /// A channel factory presenting `credentials` (mTLS, as a proxy's mesh session), or
    /// no client certificate (as a proxy's first `Certify`).
    pub fn client(&self, credentials: Option<Credentials>) -> anyhow::Result<ControlClient> {
        let handle = IdentityHandle::new();
        handle.set_bundle(self.bundle.clone());
        if let Some(c) = credentials {
            handle.set_credentials(c);
        }
        Ok(ControlClient::new(
            self.addr.clone(),
            &handle,
            self.id.clone(),
        )?)
    }
}

/// A fresh P-256 key and a CSR for it (DER). The CSR carries no name: the control
/// plane certifies the identity the join token is bound to.
pub fn key_and_csr() -> anyhow::Result<(rcgen::KeyPair, Vec<u8>)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let req = rcgen::CertificateParams::default().serialize_request(&key)?;
    let der = req.der().to_vec();
    Ok((key, der))
}

/// Calls `Certify` with a join token and checks the answer: a leaf for `expected`.
pub async fn certify(
    client: &mut IdentityClient<tonic::transport::Channel>,
    csr: &[u8],
    token: &str,
    expected: &str,
) -> anyhow::Result<pb::CertifyResponse> {
    let resp = client
        .certify(pb::CertifyRequest {
            csr_der: csr.to_vec(),
            credential: Some(pb::certify_request::Credential::JoinToken(
                token.to_string(),
            )),
            expected_spiffe_id: expected.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("Certify: {:?} {}", s.code(), s.message()))?
        .into_inner();
    if resp.leaf_der.is_empty() || resp.spiffe_id != expected {
        bail!(
            "unexpected Certify response: spiffe_id {:?}, {} leaf bytes",
            resp.spiffe_id,
            resp.leaf_der.len()
        );
    }
    Ok(resp)
}

/// The credentials a proxy presents after `Certify`: the issued chain and its key
/// (refused if the leaf is not an SVID for that key).
pub fn credentials(resp: pb::CertifyResponse, key: &rcgen::KeyPair) -> anyhow::Result<Credentials> {
    let mut chain = vec![CertificateDer::from(resp.leaf_der)];
    chain.extend(resp.intermediates_der.into_iter().map(CertificateDer::from));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Credentials::new(chain, key).context("the issued certificate is not usable")
}

/// Join tokens from a file, one per line (blank lines ignored); at least one.
pub fn read_tokens(path: &Path) -> anyhow::Result<Vec<String>> {
    let tokens: Vec<String> = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if tokens.is_empty() {
        bail!("no token in {}", path.display());
    }
    Ok(tokens)
}
