//! CA tests: shared helpers here, scenarios in `tests/`. Signing tests live in
//! `sign/tests.rs`.

mod external;
mod kek;
mod persistence;
mod rotation;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::{CertificateDer, UnixTime};
use spiffe::{SpiffeId, TrustDomain};
use webpki::{EndEntityCert, KeyUsage};

use super::*;

/// A temporary directory usable as a data directory (mode 0700 whatever the umask).
pub(crate) fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    t
}

pub(crate) fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub(crate) fn id(path: &str) -> SpiffeId {
    SpiffeId::new(format!("spiffe://example.org{path}")).unwrap()
}

pub(crate) fn open_store(data: &Path) -> Arc<Store> {
    Arc::new(Store::open(data).unwrap())
}

pub(crate) fn internal(data: &Path, kek: Option<Kek>) -> Result<CertificateAuthority, CaError> {
    internal_with(data, kek, CaParams::default())
}

pub(crate) fn internal_with(
    data: &Path,
    kek: Option<Kek>,
    params: CaParams,
) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::open(open_store(data), td(), CaMode::Internal { kek }, params)
}

/// A CSR for `key` built from `params` (whatever the requester asks for).
pub(crate) fn csr_with(key: &impl rcgen::SigningKey, params: CertificateParams) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

/// A fresh P-256 key and a plain CSR for it.
pub(crate) fn p256_csr() -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let csr = csr_with(&key, CertificateParams::default());
    (key, csr)
}

/// Verifies `leaf` + `intermediates` up to one of `roots` with rustls-webpki.
pub(crate) fn verify(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    usage: KeyUsage,
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).unwrap().to_owned())
        .collect();
    let ee = EndEntityCert::try_from(leaf)?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
}

/// Issues a one-hour SVID for `path` and checks it against the current bundle.
pub(crate) fn issue_and_verify(ca: &CertificateAuthority, path: &str) -> IssuedSvid {
    let (_, csr) = p256_csr();
    let svid = ca
        .sign_svid(&csr, &id(path), Duration::from_secs(3600))
        .unwrap();
    let bundle = ca.trust_bundle();
    for usage in [KeyUsage::client_auth(), KeyUsage::server_auth()] {
        verify(&svid.leaf_der, &svid.intermediates, &bundle.roots, usage).unwrap();
    }
    svid
}

/// All bytes SQLite has on disk for the store in `data` (database plus WAL).
pub(crate) fn db_bytes(data: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for name in ["ferrule.db", "ferrule.db-wal"] {
        if let Ok(b) = std::fs::read(data.join(name)) {
            out.extend(b);
        }
    }
    out
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
