//! Throwaway PKI for tests, generated per test with rcgen: a root CA, an intermediate
//! with `pathLenConstraint = 0`, and SVID leaves with knobs for every way a leaf can be
//! wrong.

use std::time::Duration;

use ferrule_tls::{Credentials, SpiffeId, TrustBundle, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// A CA: its parameters (needed to sign), key and certificate.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
    pem: String,
}

impl Ca {
    /// A self-signed root.
    pub fn root(name: &str) -> Self {
        let params = ca_params(name, BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("root");
        Self {
            params,
            key,
            cert: cert.der().clone(),
            pem: cert.pem(),
        }
    }

    /// An intermediate under `self`, allowed to issue leaves only (pathLen 0).
    pub fn intermediate(&self, name: &str) -> Self {
        let params = ca_params(name, BasicConstraints::Constrained(0));
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.issuer())
            .expect("intermediate");
        Self {
            params,
            key,
            cert: cert.der().clone(),
            pem: cert.pem(),
        }
    }

    /// The CA certificate.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// Issues a leaf per `spec`, directly under this CA.
    pub fn issue(&self, spec: &LeafSpec) -> (CertificateDer<'static>, KeyPair) {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "test workload");
        params.subject_alt_names = spec.sans.clone();
        params.extended_key_usages = spec.eku.clone();
        params.key_usages = spec.key_usages.clone();
        params.is_ca = if spec.ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.serial_number = Some(SerialNumber::from_slice(&spec.serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer()).expect("leaf");
        (cert.der().clone(), key)
    }
}

fn ca_params(name: &str, constraint: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(constraint);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(24 * 3600);
    params
}

/// What to put in a leaf. Defaults: one URI SAN, both EKUs, digitalSignature, valid
/// from an hour ago for an hour.
#[derive(Clone)]
pub struct LeafSpec {
    pub sans: Vec<SanType>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub ca: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial: Vec<u8>,
}

impl LeafSpec {
    /// A well-formed SVID for `uri`.
    pub fn svid(uri: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            sans: vec![uri_san(uri)],
            eku: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ca: false,
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(3600),
            serial: next_serial(),
        }
    }

    /// Only the given EKUs (e.g. server-only).
    pub fn eku(mut self, eku: &[ExtendedKeyUsagePurpose]) -> Self {
        self.eku = eku.to_vec();
        self
    }

    /// A CA:TRUE "leaf".
    pub fn ca(mut self) -> Self {
        self.ca = true;
        self.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        self
    }

    /// Exactly these SANs.
    pub fn sans(mut self, sans: Vec<SanType>) -> Self {
        self.sans = sans;
        self
    }

    /// Only these key usages.
    pub fn key_usages(mut self, ku: &[KeyUsagePurpose]) -> Self {
        self.key_usages = ku.to_vec();
        self
    }

    /// Valid from two hours ago until one hour ago.
    pub fn expired(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - Duration::from_secs(7200);
        self.not_after = now - Duration::from_secs(3600);
        self
    }

    /// Valid from in one hour for an hour.
    pub fn not_yet_valid(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + Duration::from_secs(3600);
        self.not_after = now + Duration::from_secs(7200);
        self
    }
}

/// Unique 8-byte serial numbers; the first byte alternates between having its high bit
/// set or not, to exercise DER's leading-zero padding.
fn next_serial() -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut serial = n.to_be_bytes();
    serial[0] = if n.is_multiple_of(2) { 0x91 } else { 0x12 };
    serial.to_vec()
}

pub fn uri_san(uri: &str) -> SanType {
    SanType::URI(uri.try_into().expect("IA5 URI"))
}

pub fn dns_san(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("IA5 DNS name"))
}

/// An issued leaf with its chain and key.
pub struct Leaf {
    /// Leaf first, then the intermediate.
    pub chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
}

impl Leaf {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.chain[1..]
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.chain.clone(), self.key()).expect("valid test credentials")
    }
}

/// A trust domain's PKI: root → intermediate (pathLen 0) → leaves.
pub struct Pki {
    pub td: TrustDomain,
    pub root: Ca,
    pub intermediate: Ca,
}

impl Pki {
    pub fn new(td: &str) -> Self {
        let root = Ca::root(&format!("{td} root"));
        let intermediate = root.intermediate(&format!("{td} intermediate"));
        Self {
            td: TrustDomain::new(td).expect("trust domain"),
            root,
            intermediate,
        }
    }

    /// `spiffe://<td>/<path>`.
    pub fn id(&self, path: &str) -> SpiffeId {
        SpiffeId::new(format!("spiffe://{}/{path}", self.td)).expect("SPIFFE ID")
    }

    /// A bundle holding this PKI's root.
    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::new(self.td.clone(), vec![self.root.der()], 1).expect("bundle")
    }

    /// A well-formed SVID for `spiffe://<td>/<path>`, issued by the intermediate.
    pub fn svid(&self, path: &str) -> Leaf {
        self.leaf(&LeafSpec::svid(&self.id(path).to_string()))
    }

    /// A leaf per `spec`, issued by the intermediate.
    pub fn leaf(&self, spec: &LeafSpec) -> Leaf {
        let (cert, key) = self.intermediate.issue(spec);
        Leaf {
            chain: vec![cert, self.intermediate.der()],
            key,
        }
    }
}
