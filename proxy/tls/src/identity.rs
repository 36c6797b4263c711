//! The TLS material a Ferrule endpoint holds: its own certificate ([`Credentials`]),
//! the roots it trusts ([`TrustBundle`]), and the swappable slot holding both
//! ([`IdentityHandle`]).
//!
//! The identity manager (proxy) or the CA (control plane) publishes new material into
//! the handle; every TLS configuration built by [`crate::server_config`] and
//! [`crate::client_config`] reads the handle at each handshake. Publishing is an atomic
//! pointer swap: new handshakes see the new material, established connections keep
//! what they negotiated, and nothing is presented or trusted until material arrives
//! (fail closed).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, pem::PemObject};
use rustls::sign::CertifiedKey;
use spiffe::{SpiffeId, TrustDomain};

use crate::verify::VerifyError;
use crate::{provider, svid};

/// Why a trust bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle has no roots; trusting nothing is never what the caller meant.
    #[error("trust bundle is empty")]
    Empty,
    /// A root certificate cannot be used as a trust anchor.
    #[error("trust bundle root #{index}: {reason}")]
    BadRoot {
        /// Position of the root in the bundle (0-based).
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The PEM text could not be parsed.
    #[error("trust bundle PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
}

/// The root CAs of one trust domain, with a version for ordering updates.
///
/// Roots are parsed into webpki trust anchors once, at construction, so verification
/// does no parsing of the bundle.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    version: u64,
}

impl TrustBundle {
    /// Builds a bundle from DER roots. Each root must parse as a trust anchor and be a
    /// CA certificate (basicConstraints CA:TRUE); an empty list is refused.
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
        version: u64,
    ) -> Result<Self, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        let mut anchors = Vec::with_capacity(roots.len());
        for (index, root) in roots.iter().enumerate() {
            let bad = |reason: String| BundleError::BadRoot { index, reason };
            let cert = svid::parse(root).map_err(|e| bad(e.to_string()))?;
            if !cert.is_ca() {
                return Err(bad("not a CA certificate".into()));
            }
            let anchor = webpki::anchor_from_trusted_cert(root).map_err(|e| bad(e.to_string()))?;
            anchors.push(anchor.to_owned());
        }
        Ok(Self {
            trust_domain,
            roots,
            anchors,
            version,
        })
    }

    /// Builds a bundle from PEM text holding one or more `CERTIFICATE` blocks (other
    /// block types are skipped).
    pub fn from_pem(
        trust_domain: TrustDomain,
        pem: &[u8],
        version: u64,
    ) -> Result<Self, BundleError> {
        let roots = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
        Self::new(trust_domain, roots, version)
    }

    /// The trust domain whose SPIFFE IDs this bundle vouches for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificates (DER), in the order given.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as webpki trust anchors, same order as [`TrustBundle::roots`].
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The bundle version assigned by the control plane (higher is newer).
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("roots", &self.roots.len())
            .field("version", &self.version)
            .finish()
    }
}

/// Why a certificate and key were refused as our own credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The certificate chain is empty.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// The leaf is not a usable X.509-SVID (unparseable, not exactly one valid URI SAN,
    /// a CA certificate, or a bad key usage).
    #[error("leaf certificate: {0}")]
    Leaf(#[source] VerifyError),
    /// The private key cannot be loaded by the crypto provider.
    #[error("private key: {0}")]
    Key(#[source] rustls::Error),
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
}

/// Our own X.509-SVID: certificate chain (leaf first), private key, and the fields
/// read from the leaf.
///
/// `Debug` never prints the key.
pub struct Credentials {
    spiffe_id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    serial_hex: String,
    certified_key: Arc<CertifiedKey>,
}

impl Credentials {
    /// Builds credentials from a chain (leaf first, then intermediates; the root is
    /// optional and usually left out) and the leaf's private key.
    ///
    /// The leaf must hold exactly one URI SAN with a valid SPIFFE ID, must not be a CA,
    /// and must match the key. The chain is *not* validated against a bundle here: use
    /// [`crate::verify_svid`] on freshly issued certificates.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CredentialsError> {
        let leaf_der = chain.first().ok_or(CredentialsError::EmptyChain)?;
        let leaf = svid::parse(leaf_der).map_err(CredentialsError::Leaf)?;
        if leaf.is_ca() {
            return Err(CredentialsError::Leaf(VerifyError::CaUsedAsEndEntity));
        }
        svid::check_leaf_key_usage(&leaf).map_err(CredentialsError::Leaf)?;
        let spiffe_id = svid::spiffe_id(&leaf).map_err(CredentialsError::Leaf)?;
        let not_before = svid::system_time(leaf.validity().not_before);
        let not_after = svid::system_time(leaf.validity().not_after);
        let serial_hex = svid::serial_hex(&leaf);
        drop(leaf);

        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(CredentialsError::Key)?;
        let certified_key = CertifiedKey::new(chain, signing_key);
        match certified_key.keys_match() {
            // aws-lc-rs keys always expose their public key; `Unknown` cannot happen
            // for them and is treated like rustls does (not an error).
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(CredentialsError::KeyMismatch),
            Err(e) => return Err(CredentialsError::Key(e)),
        }
        Ok(Self {
            spiffe_id,
            not_before,
            not_after,
            serial_hex,
            certified_key: Arc::new(certified_key),
        })
    }

    /// The SPIFFE ID in the leaf's URI SAN.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified_key.cert
    }

    /// The leaf's notBefore.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's notAfter.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf's serial number: lowercase hex, no separators, no leading zero bytes.
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }

    /// The chain and signing key in the form rustls presents in a handshake.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("serial_hex", &self.serial_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.certified_key.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The shared, swappable slot for our credentials and trust bundle.
///
/// Cheap to clone (one `Arc`); all clones see the same material. Reads are lock-free
/// (`ArcSwap`), so TLS configurations consult it at every handshake. Either part may be
/// absent: a proxy starts with a bootstrap bundle and no certificate, and can still
/// dial the control plane (sending no client certificate).
#[derive(Clone, Default)]
pub struct IdentityHandle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    credentials: ArcSwapOption<Credentials>,
    bundle: ArcSwapOption<TrustBundle>,
}

impl IdentityHandle {
    /// An empty handle: no credentials, no bundle (every handshake fails closed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes new credentials for subsequent handshakes.
    pub fn set_credentials(&self, credentials: Credentials) {
        self.inner.credentials.store(Some(Arc::new(credentials)));
    }

    /// Withdraws our credentials (e.g. expired and not renewed): servers stop
    /// accepting handshakes and clients stop presenting a certificate.
    pub fn clear_credentials(&self) {
        self.inner.credentials.store(None);
    }

    /// The current credentials, if any.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.inner.credentials.load_full()
    }

    /// Publishes a new trust bundle for subsequent handshakes. The caller decides
    /// whether a bundle is newer (see [`TrustBundle::version`]); the last one set wins.
    pub fn set_bundle(&self, bundle: TrustBundle) {
        self.inner.bundle.store(Some(Arc::new(bundle)));
    }

    /// The current trust bundle, if any.
    pub fn bundle(&self) -> Option<Arc<TrustBundle>> {
        self.inner.bundle.load_full()
    }
}

impl fmt::Debug for IdentityHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let creds = self.credentials();
        let bundle = self.bundle();
        f.debug_struct("IdentityHandle")
            .field(
                "spiffe_id",
                &creds.as_ref().map(|c| c.spiffe_id().to_string()),
            )
            .field(
                "serial_hex",
                &creds.as_ref().map(|c| c.serial_hex().to_owned()),
            )
            .field("bundle_version", &bundle.as_ref().map(|b| b.version()))
            .finish()
    }
}
