//! A fixed test PKI for the certificate targets: root → issuer (pathLen 0) → leaves, in
//! trust domain [`crate::TRUST_DOMAIN`], verified at a fixed time ([`now`]).
//!
//! The two CA keys are constants so that leaves in the checked-in seed corpus (made by
//! `examples/make_seeds.rs`) chain to the CA every run rebuilds from them: ECDSA
//! signatures differ per run, but webpki only needs the issuer's name and key. These
//! keys are test fixtures, trusted nowhere but in these targets.

use std::sync::OnceLock;
use std::time::Duration;

use ferrule_tls::{TrustBundle, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use rustls_pki_types::{CertificateDer, UnixTime};

const ROOT_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg49CnLZDEZfBYJikn
GxmfIAc/C7qDpAiXeS6DFDOzreqhRANCAATX8PFul4ShnUAFf65+VxXvNtTGuRJA
Km+MHqWAlgw0Ey45V0abEssGOXF7s80dBb7qKp4XzLG3EKV61b2KHukw
-----END PRIVATE KEY-----
";

const ISSUER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSf7hk0yPByqKt4J8
E02TaKD+oeX05R993m0D1DtyJpWhRANCAAQLCp3Dmh+yujxiyG7s6DPg0bk/Y0Yi
4EpUoVaQNgF762q0a+EEsPqofM1DCznAall9gr9oDQpyBBRV8YoMl+0d
-----END PRIVATE KEY-----
";

/// The verification time of the certificate targets: 2030-01-01T00:00:00Z.
pub const NOW_UNIX: i64 = 1_893_456_000;

/// [`NOW_UNIX`] as webpki's time type.
pub fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(NOW_UNIX as u64))
}

/// The fixed CA and a leaf key.
pub struct Pki {
    /// The root certificate (the trust anchor).
    pub root: CertificateDer<'static>,
    /// The issuer certificate, sent after a leaf.
    pub issuer: CertificateDer<'static>,
    issuer_params: CertificateParams,
    issuer_key: KeyPair,
    /// The key every leaf certifies.
    pub leaf_key: KeyPair,
    /// A bundle holding the root.
    pub bundle: TrustBundle,
}

fn ca_params(cn: &str, constraint: BasicConstraints) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(constraint);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2099, 12, 31);
    p
}

/// The PKI, built on first use.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root_key = KeyPair::from_pem(ROOT_KEY).expect("root key");
        let root_params = ca_params("Ferrule fuzz root", BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).expect("root");
        let issuer_key = KeyPair::from_pem(ISSUER_KEY).expect("issuer key");
        let issuer_params = ca_params("Ferrule fuzz issuer", BasicConstraints::Constrained(0));
        let issuer = issuer_params
            .signed_by(&issuer_key, &Issuer::from_params(&root_params, &root_key))
            .expect("issuer");
        let td = TrustDomain::new(crate::TRUST_DOMAIN).expect("trust domain");
        let bundle = TrustBundle::new(td, vec![root.der().clone()], 1).expect("bundle");
        Pki {
            root: root.der().clone(),
            issuer: issuer.der().clone(),
            issuer_params,
            issuer_key,
            leaf_key: KeyPair::generate().expect("leaf key"),
            bundle,
        }
    })
}

impl Pki {
    /// Signs `params` for [`Pki::leaf_key`] with the issuer.
    pub fn issue(
        &self,
        params: &CertificateParams,
    ) -> Result<CertificateDer<'static>, rcgen::Error> {
        let issuer = Issuer::from_params(&self.issuer_params, &self.issuer_key);
        Ok(params.signed_by(&self.leaf_key, &issuer)?.der().clone())
    }
}
