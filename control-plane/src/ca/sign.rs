//! Where the CSR is signed.
//!
//! A workload's CSR contributes exactly one thing to its certificate: the **public key**
//! (after the CSR's self-signature proves the caller holds the private key). Its subject,
//! SANs, requested extensions and CA flag are ignored — the certificate is built from fresh
//! [`CertificateParams`] for the identity that *attestation* established. That is the fix
//! for the class of bug behind Consul's CVE-2022-40716, where a CSR carrying extra URI SANs
//! got them signed.
//!
//! Every leaf (an X.509-SVID) gets:
//! - exactly one URI SAN, the attested SPIFFE ID (plus DNS/IP SANs only for the control
//!   plane's own serving certificate); an empty subject, so the SAN extension is critical;
//! - basic constraints `cA = false`; key usage `digitalSignature` (critical); extended key
//!   usage `serverAuth` + `clientAuth`;
//! - a random 16-byte positive serial number;
//! - `notBefore = now − backdate` (clock skew between nodes), `notAfter = now + lifetime`,
//!   clamped so it never outlives the issuer chain;
//! - subject and authority key identifiers.
//!
//! Accepted public keys: ECDSA P-256 and P-384, Ed25519, and RSA of 2048–8192 bits.
//!
//! Note on rcgen: `CertificateSigningRequestParams::from_der` does verify the CSR's
//! self-signature (it calls x509-parser's `verify_signature`), but it also copies the
//! requested SANs/CA flag into its params and rejects any CSR carrying an extension it does
//! not model. We parse with x509-parser directly instead, so unknown requested extensions
//! are ignored like all the others, and nothing from the request can leak into the params.

use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use spiffe::SpiffeId;
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo as X509Spki;

use crate::store::StoreError;

#[cfg(test)]
mod tests;

/// Smallest RSA modulus accepted in a CSR, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted in a CSR, in bits (what the signature verifier supports).
pub const MAX_RSA_BITS: usize = 8192;
/// Length of generated serial numbers, in bytes.
const SERIAL_LEN: usize = 16;

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The CSR is not a well-formed DER PKCS#10 request. The message says what is wrong.
    #[error("malformed certificate signing request: {0}")]
    MalformedCsr(String),
    /// The CSR's self-signature does not verify with the public key it contains: the caller
    /// has not proven possession of the private key (or the CSR was altered).
    #[error("the CSR's signature does not verify with its public key")]
    BadCsrSignature,
    /// The CSR is signed with an algorithm we refuse (e.g. SHA-1) or cannot verify.
    #[error("the CSR is signed with an unsupported or weak algorithm ({oid})")]
    UnsupportedSignatureAlgorithm {
        /// Dotted OID of the signature algorithm.
        oid: String,
    },
    /// The public key is of a supported type but too weak (RSA under 2048 bits).
    #[error("the CSR's public key is too weak: {0}")]
    WeakKey(String),
    /// The public key type is not one we issue for (supported: ECDSA P-256/P-384, Ed25519,
    /// RSA 2048–8192).
    #[error(
        "the CSR's public key type is not supported ({0}); use ECDSA P-256 or P-384, Ed25519, \
         or RSA with 2048 to 8192 bits"
    )]
    UnsupportedKey(String),
    /// The CA has no active authority to sign with.
    #[error("the CA has no active authority")]
    NoActiveAuthority,
    /// The requested identity is not in the CA's trust domain.
    #[error("{id} is not in this CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The identity asked for.
        id: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// `issue_server_cert` was asked for an identity other than the control plane's own.
    #[error("server certificates are only issued to the control plane ({expected}), not {id}")]
    NotControlPlaneIdentity {
        /// The identity asked for.
        id: String,
        /// The control plane's identity.
        expected: String,
    },
    /// A DNS name for the server certificate is not a valid DNS name or IP address.
    #[error("invalid DNS name {0:?} for the server certificate")]
    InvalidDnsName(String),
    /// The requested lifetime is zero.
    #[error("a certificate lifetime must be greater than zero")]
    InvalidLifetime,
    /// The issuer chain expires before (or right at) the current time: nothing can be issued
    /// until the issuer is renewed or replaced.
    #[error("the issuing certificate chain expires at {not_after}; cannot issue")]
    IssuerExpired {
        /// When the issuer chain expires.
        not_after: OffsetDateTime,
    },
    /// rcgen failed to encode or sign the certificate.
    #[error("certificate encoding failed: {0}")]
    Encoding(#[from] rcgen::Error),
    /// Recording the issued certificate failed; it was not handed out.
    #[error("could not record the issued certificate: {0}")]
    Store(#[from] StoreError),
}

/// The public-key algorithm of an accepted CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus length.
        bits: usize,
    },
}

/// A CSR whose structure, key type and self-signature have been checked. Holds only the
/// public key: nothing else from the request is kept.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    public_key: SubjectPublicKeyInfo,
    kind: KeyKind,
}

impl CheckedCsr {
    /// The key type.
    pub fn key_kind(&self) -> KeyKind {
        self.kind
    }
}

/// Parses and checks a DER CSR: well-formed, an accepted key type and size, a valid
/// self-signature. Cheap enough to call before consuming a join token.
pub fn check_csr(csr_der: &[u8]) -> Result<CheckedCsr, SignError> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| SignError::MalformedCsr(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SignError::MalformedCsr(format!(
            "{} trailing bytes after the request",
            rest.len()
        )));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let kind = classify_key(spki)?;

    let sig_oid = &csr.signature_algorithm.algorithm;
    if *sig_oid == OID_PKCS1_SHA1WITHRSA || *sig_oid == OID_SHA1_WITH_RSA {
        return Err(SignError::UnsupportedSignatureAlgorithm {
            oid: sig_oid.to_id_string(),
        });
    }
    csr.verify_signature().map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => SignError::UnsupportedSignatureAlgorithm {
            oid: sig_oid.to_id_string(),
        },
        _ => SignError::BadCsrSignature,
    })?;

    let public_key = SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| SignError::UnsupportedKey(format!("unusable public key encoding: {e}")))?;
    Ok(CheckedCsr { public_key, kind })
}

fn classify_key(spki: &X509Spki<'_>) -> Result<KeyKind, SignError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| SignError::MalformedCsr("EC public key without a named curve".into()))?;
        if curve == OID_EC_P256 {
            Ok(KeyKind::EcdsaP256)
        } else if curve == OID_NIST_EC_P384 {
            Ok(KeyKind::EcdsaP384)
        } else {
            Err(SignError::UnsupportedKey(format!(
                "ECDSA on curve {}",
                curve.to_id_string()
            )))
        }
    } else if *alg == OID_SIG_ED25519 {
        Ok(KeyKind::Ed25519)
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(SignError::MalformedCsr("unparsable RSA public key".into()));
        };
        let bits = modulus_bits(rsa.modulus);
        if bits < MIN_RSA_BITS {
            Err(SignError::WeakKey(format!(
                "RSA-{bits}; at least {MIN_RSA_BITS} bits are required"
            )))
        } else if bits > MAX_RSA_BITS {
            Err(SignError::UnsupportedKey(format!(
                "RSA-{bits}; at most {MAX_RSA_BITS} bits"
            )))
        } else {
            Ok(KeyKind::Rsa { bits })
        }
    } else {
        Err(SignError::UnsupportedKey(format!(
            "public key algorithm {}",
            alg.to_id_string()
        )))
    }
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn modulus_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|&b| b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

/// The signing material of one issuer: its key, its certificate, and what to send after a
/// leaf. Built by the CA from the store (internal mode) or from files (external mode).
pub(crate) struct Signer {
    /// Id of the authority this issuer belongs to (recorded with every issued cert).
    pub authority_id: String,
    issuer: Issuer<'static, KeyPair>,
    /// Certificates to send after the leaf: the issuer first, then further intermediates.
    pub intermediates: Vec<CertificateDer<'static>>,
    /// No leaf may outlive this: the earliest `notAfter` along the issuer chain.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("authority_id", &self.authority_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why an issuer certificate and key could not be turned into a signer.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The issuer certificate does not parse.
    #[error("the issuer certificate does not parse: {0}")]
    BadCertificate(String),
    /// The private key does not belong to the issuer certificate.
    #[error("the private key does not match the issuer certificate's public key")]
    KeyMismatch,
    /// The certificate is not a CA (no basic constraints `cA = true`, or key usage without
    /// `keyCertSign`).
    #[error("the issuer certificate ({subject}) is not a CA certificate")]
    NotCa {
        /// Subject of the certificate.
        subject: String,
    },
    /// rcgen cannot reproduce the issuer's subject name byte for byte (e.g. repeated or
    /// multi-valued attributes), so leaves would not chain to it.
    #[error("the issuer's subject name ({subject}) cannot be reproduced exactly by the signer")]
    UnsupportedName {
        /// Subject of the certificate.
        subject: String,
    },
    /// rcgen rejected the key or certificate.
    #[error("rcgen: {0}")]
    Rcgen(#[from] rcgen::Error),
}

impl Signer {
    /// Builds a signer from an issuer certificate, its key and the rest of the chain
    /// (`further`: intermediates above the issuer, not including trust anchors).
    ///
    /// Checks that the certificate is a CA, then signs a probe certificate and verifies it
    /// against the issuer certificate: this proves the key matches and that leaf issuer
    /// names will be byte-identical to the issuer's subject (what chain building compares).
    pub(crate) fn new(
        authority_id: String,
        issuer_der: CertificateDer<'static>,
        key: KeyPair,
        further: Vec<CertificateDer<'static>>,
        chain_not_after: OffsetDateTime,
    ) -> Result<Self, SignerError> {
        let (_, cert) = X509Certificate::from_der(&issuer_der)
            .map_err(|e| SignerError::BadCertificate(e.to_string()))?;
        let subject = cert.subject().to_string();
        let key_cert_sign = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(e) => return Err(SignerError::BadCertificate(e.to_string())),
        };
        if !cert.is_ca() || !key_cert_sign {
            return Err(SignerError::NotCa { subject });
        }
        if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(SignerError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&issuer_der, key).map_err(|_| {
            SignerError::UnsupportedName {
                subject: subject.clone(),
            }
        })?;
        let not_after = chain_not_after.min(cert.validity().not_after.to_datetime());

        // Probe: sign a throwaway leaf and check it against the issuer certificate.
        let probe_key = KeyPair::generate()?;
        let probe = CertificateParams::default().signed_by(&probe_key, &issuer)?;
        let (_, probe) = X509Certificate::from_der(probe.der())
            .map_err(|e| SignerError::BadCertificate(e.to_string()))?;
        if probe.issuer().as_raw() != cert.subject().as_raw() {
            return Err(SignerError::UnsupportedName { subject });
        }
        if probe.verify_signature(Some(cert.public_key())).is_err() {
            return Err(SignerError::KeyMismatch);
        }

        let mut intermediates = Vec::with_capacity(1 + further.len());
        intermediates.push(issuer_der);
        intermediates.extend(further);
        Ok(Self {
            authority_id,
            issuer,
            intermediates,
            not_after,
        })
    }

    /// The issuer's own certificate.
    pub(crate) fn issuer_der(&self) -> &CertificateDer<'static> {
        &self.intermediates[0]
    }
}

/// A freshly signed leaf.
#[derive(Debug, Clone)]
pub(crate) struct SignedLeaf {
    pub der: CertificateDer<'static>,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What goes into a leaf besides the public key.
pub(crate) struct LeafRequest<'a> {
    pub id: &'a SpiffeId,
    /// Extra DNS names or IP addresses (control plane serving certificate only).
    pub dns_names: &'a [String],
    pub lifetime: Duration,
    pub backdate: Duration,
    pub now: OffsetDateTime,
}

/// Signs a leaf for `public_key` with `signer`. Nothing but the public key comes from the
/// requester.
pub(crate) fn sign_leaf(
    signer: &Signer,
    public_key: &impl PublicKeyData,
    req: &LeafRequest<'_>,
) -> Result<SignedLeaf, SignError> {
    if req.lifetime.is_zero() {
        return Err(SignError::InvalidLifetime);
    }
    // Certificates carry whole seconds; make the returned times match the encoded ones.
    let now = req.now.replace_nanosecond(0).unwrap_or(req.now);
    if signer.not_after <= now {
        return Err(SignError::IssuerExpired {
            not_after: signer.not_after,
        });
    }
    let wanted = now
        .checked_add(time::Duration::try_from(req.lifetime).unwrap_or(time::Duration::MAX))
        .unwrap_or(signer.not_after);
    let not_after = wanted.min(signer.not_after);
    let not_before = now - time::Duration::try_from(req.backdate).unwrap_or(time::Duration::ZERO);

    let mut serial = [0u8; SERIAL_LEN];
    aws_lc_rs::rand::fill(&mut serial).expect("system random number generator failed");
    // Positive, and exactly SERIAL_LEN bytes when DER-encoded (no leading zero byte).
    serial[0] = (serial[0] & 0x7f) | 0x40;

    let mut sans = vec![SanType::URI(req.id.to_string().try_into()?)];
    for name in req.dns_names {
        sans.push(dns_san(name)?);
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = not_before;
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;

    let cert = params.signed_by(public_key, &signer.issuer)?;
    Ok(SignedLeaf {
        der: cert.der().clone(),
        serial_hex: hex::encode(serial),
        not_before,
        not_after,
    })
}

/// Signs a leaf for a CSR that passed [`check_csr`].
pub(crate) fn sign_csr(
    signer: &Signer,
    csr: &CheckedCsr,
    req: &LeafRequest<'_>,
) -> Result<SignedLeaf, SignError> {
    sign_leaf(signer, &csr.public_key, req)
}

fn dns_san(name: &str) -> Result<SanType, SignError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    rustls_pki_types::DnsName::try_from(name)
        .map_err(|_| SignError::InvalidDnsName(name.to_string()))?;
    Ok(SanType::DnsName(name.to_string().try_into().map_err(
        |_| SignError::InvalidDnsName(name.to_string()),
    )?))
}
