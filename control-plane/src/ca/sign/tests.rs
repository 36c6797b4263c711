use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512, PKCS_ED25519,
    PKCS_RSA_SHA256, PublicKeyData, RsaKeySize, SanType, SigningKey,
};
use rustls_pki_types::{ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::ca::tests::{
    csr_with, id, internal, internal_with, issue_and_verify, p256_csr, tempdir, verify,
};
use crate::ca::{CaParams, CertificateAuthority};

fn ca() -> (tempfile::TempDir, CertificateAuthority) {
    let tmp = tempdir();
    let ca = internal(tmp.path(), None).unwrap();
    (tmp, ca)
}

/// A CSR that asks for everything it should not get.
fn greedy_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "admin");
    p.distinguished_name.push(DnType::OrganizationName, "Evil");
    p.subject_alt_names = vec![
        SanType::URI("spiffe://example.org/admin".try_into().unwrap()),
        SanType::URI("spiffe://other.org/ns/x".try_into().unwrap()),
        SanType::DnsName("evil.example".try_into().unwrap()),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
    ];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    // An extension rcgen's own CSR parser would refuse; we ignore it like the rest.
    p.custom_extensions = vec![CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 99999, 1],
        vec![0x05, 0x00],
    )];
    p
}

#[test]
fn svid_carries_only_the_attested_identity() {
    let (_tmp, ca) = ca();
    let key = KeyPair::generate().unwrap();
    let csr = csr_with(&key, greedy_params());
    let web = id("/ns/default/sa/web");
    let before = SystemTime::now();
    let svid = ca.sign_svid(&csr, &web, Duration::from_secs(3600)).unwrap();
    let (rest, leaf) = X509Certificate::from_der(&svid.leaf_der).unwrap();
    assert!(rest.is_empty());

    // Subject: empty. SAN: exactly one URI, the attested ID; critical (empty subject).
    assert_eq!(leaf.subject().iter().count(), 0);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical);
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://example.org/ns/default/sa/web")]
    );
    assert_eq!(
        spiffe::cert::spiffe_id_from_der(&svid.leaf_der).unwrap(),
        web
    );
    assert_eq!(svid.spiffe_id, web);

    // cA = false (present, critical).
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    assert!(bc.critical);
    assert!(!leaf.is_ca());

    // Key usage: digitalSignature only, critical.
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert_eq!(ku.value.flags, 1, "digitalSignature is the only bit");

    // Extended key usage: serverAuth + clientAuth, nothing else.
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.code_signing && !eku.any && eku.other.is_empty());

    // No other extensions (the custom one requested by the CSR is not copied).
    let allowed = [
        OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_EXTENDED_KEY_USAGE,
        OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
    ];
    for ext in leaf.extensions() {
        assert!(
            allowed.contains(&ext.oid),
            "unexpected extension {}",
            ext.oid
        );
    }

    // Authority key id = issuer's subject key id.
    let (_, issuer) = X509Certificate::from_der(&svid.intermediates[0]).unwrap();
    let ski = issuer
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap();
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(aki, ski);

    // Serial: 16 bytes, positive, reported as hex.
    assert_eq!(leaf.raw_serial().len(), 16);
    assert_eq!(leaf.raw_serial()[0] & 0x80, 0);
    assert_eq!(hex::encode(leaf.raw_serial()), svid.serial_hex);

    // Validity: backdated 5 minutes, lasts the requested hour.
    let nb = SystemTime::from(leaf.validity().not_before.to_datetime());
    let na = SystemTime::from(leaf.validity().not_after.to_datetime());
    assert_eq!(
        na.duration_since(nb).unwrap(),
        Duration::from_secs(3600 + 300)
    );
    let skew = before.duration_since(nb).unwrap();
    assert!(
        skew > Duration::from_secs(295) && skew <= Duration::from_secs(301),
        "{skew:?}"
    );
    assert_eq!((svid.not_before, svid.not_after), (nb, na));
    assert_eq!(svid.not_after_unix, crate::store::to_unix(na));

    // The certified key is the CSR's key.
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );

    // Chains to the root for both TLS roles.
    let roots = ca.trust_bundle().roots;
    for usage in [KeyUsage::client_auth(), KeyUsage::server_auth()] {
        verify(&svid.leaf_der, &svid.intermediates, &roots, usage).unwrap();
    }

    // Recorded.
    let records = ca.store.list_latest_per_identity().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].serial_hex, svid.serial_hex);
    assert_eq!(records[0].authority_id, svid.authority_id);
    assert_eq!(records[0].not_after, na);
}

#[test]
fn lifetime_is_clamped_to_the_issuer() {
    let tmp = tempdir();
    let params = CaParams {
        intermediate_lifetime: Duration::from_secs(3600),
        ..CaParams::default()
    };
    let ca = internal_with(tmp.path(), None, params).unwrap();
    let issuer_not_after = ca.status().unwrap()[0].issuer_not_after;
    let (_, csr) = p256_csr();
    let svid = ca
        .sign_svid(&csr, &id("/web"), Duration::from_secs(5 * 3600))
        .unwrap();
    assert_eq!(svid.not_after, issuer_not_after);
    verify(
        &svid.leaf_der,
        &svid.intermediates,
        &ca.trust_bundle().roots,
        KeyUsage::client_auth(),
    )
    .unwrap();
    assert!(matches!(
        ca.sign_svid(&csr, &id("/web"), Duration::ZERO),
        Err(SignError::InvalidLifetime)
    ));
}

#[test]
fn tampered_csr_signature_is_rejected() {
    let (_tmp, ca) = ca();
    let (_, csr) = p256_csr();
    check_csr(&csr).unwrap();
    let mut bad = csr.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    assert!(matches!(check_csr(&bad), Err(SignError::BadCsrSignature)));
    assert!(matches!(
        ca.sign_svid(&bad, &id("/web"), Duration::from_secs(60)),
        Err(SignError::BadCsrSignature)
    ));
    // Altering the signed content (a byte of the subject) breaks it too.
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "xxxxxxxx");
    let mut csr = csr_with(&key, p);
    let pos = csr.windows(8).position(|w| w == b"xxxxxxxx").unwrap();
    csr[pos] = b'y';
    assert!(matches!(check_csr(&csr), Err(SignError::BadCsrSignature)));
    assert!(ca.store.list_latest_per_identity().unwrap().is_empty());
}

#[test]
fn malformed_csrs_are_rejected() {
    let (_, csr) = p256_csr();
    let mut trailing = csr.clone();
    trailing.push(0);
    for bad in [
        &b""[..],
        b"hello",
        &csr[..csr.len() / 2],
        &trailing,
        &[0x30, 0x00],
    ] {
        assert!(
            matches!(check_csr(bad), Err(SignError::MalformedCsr(_))),
            "{bad:?}: {:?}",
            check_csr(bad)
        );
    }
}

#[test]
fn accepted_key_types_chain_correctly() {
    let (_tmp, ca) = ca();
    let rsa = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    for (key, kind) in [
        (KeyPair::generate().unwrap(), KeyKind::EcdsaP256),
        (
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap(),
            KeyKind::EcdsaP384,
        ),
        (
            KeyPair::generate_for(&PKCS_ED25519).unwrap(),
            KeyKind::Ed25519,
        ),
        (rsa, KeyKind::Rsa { bits: 2048 }),
    ] {
        let csr = csr_with(&key, CertificateParams::default());
        assert_eq!(check_csr(&csr).unwrap().key_kind(), kind);
        let svid = ca
            .sign_svid(&csr, &id("/web"), Duration::from_secs(600))
            .unwrap();
        let (_, leaf) = X509Certificate::from_der(&svid.leaf_der).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            key.subject_public_key_info().as_slice(),
            "{kind:?}"
        );
        verify(
            &svid.leaf_der,
            &svid.intermediates,
            &ca.trust_bundle().roots,
            KeyUsage::server_auth(),
        )
        .unwrap();
    }
}

/// An RSA-1024 public key with a signer that produces garbage: enough to build a CSR.
struct Rsa1024;

impl PublicKeyData for Rsa1024 {
    fn der_bytes(&self) -> &[u8] {
        static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        KEY.get_or_init(|| {
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER (1024 bits), publicExponent 65537 }
            let mut modulus = vec![0x00, 0xc3];
            modulus.extend([0x5a; 127]);
            let mut der = vec![0x30, 0x81, 0x89, 0x02, 0x81, 0x81];
            der.extend(modulus);
            der.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
            der
        })
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_RSA_SHA256
    }
}

impl SigningKey for Rsa1024 {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(vec![0x42; 128])
    }
}

#[test]
fn weak_and_unsupported_keys_are_rejected() {
    let (_tmp, ca) = ca();
    let rsa1024 = csr_with(&Rsa1024, CertificateParams::default());
    let err = check_csr(&rsa1024).unwrap_err();
    assert!(
        matches!(&err, SignError::WeakKey(m) if m.contains("RSA-1024")),
        "{err:?}"
    );

    let p521 = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).unwrap();
    let csr = csr_with(&p521, CertificateParams::default());
    let err = ca
        .sign_svid(&csr, &id("/web"), Duration::from_secs(60))
        .unwrap_err();
    assert!(
        matches!(&err, SignError::UnsupportedKey(m) if m.contains("1.3.132.0.35")),
        "{err:?}"
    );
    assert!(ca.store.list_latest_per_identity().unwrap().is_empty());
}

#[test]
fn foreign_trust_domain_is_refused() {
    let (_tmp, ca) = ca();
    let (_, csr) = p256_csr();
    let other = spiffe::SpiffeId::new("spiffe://other.org/web").unwrap();
    assert!(matches!(
        ca.sign_svid(&csr, &other, Duration::from_secs(60)),
        Err(SignError::ForeignTrustDomain { .. })
    ));
}

#[test]
fn control_plane_server_certificate() {
    let (_tmp, ca) = ca();
    let cp = id("/ferrule/control-plane");
    let names = vec![
        "localhost".to_string(),
        "cp.example.org".to_string(),
        "127.0.0.1".to_string(),
    ];
    let cert = ca
        .issue_server_cert(&cp, &names, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(cert.chain.len(), 2);
    assert!(!format!("{cert:?}").contains("BEGIN"));
    let roots = ca.trust_bundle().roots;
    verify(
        &cert.chain[0],
        &cert.chain[1..],
        &roots,
        KeyUsage::server_auth(),
    )
    .unwrap();
    let ee = EndEntityCert::try_from(&cert.chain[0]).unwrap();
    for name in ["localhost", "cp.example.org", "127.0.0.1"] {
        ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
            .unwrap();
    }
    assert!(
        ee.verify_is_valid_for_subject_name(&ServerName::try_from("other.example").unwrap())
            .is_err()
    );
    assert_eq!(
        spiffe::cert::spiffe_id_from_der(&cert.chain[0]).unwrap(),
        cp
    );
    // The returned key belongs to the certificate.
    let key = KeyPair::try_from(&cert.key).unwrap();
    let (_, leaf) = X509Certificate::from_der(&cert.chain[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    let _ = UnixTime::now();

    assert!(matches!(
        ca.issue_server_cert(&id("/web"), &[], Duration::from_secs(60)),
        Err(SignError::NotControlPlaneIdentity { .. })
    ));
    assert!(matches!(
        ca.issue_server_cert(&cp, &["bad name!".to_string()], Duration::from_secs(60)),
        Err(SignError::InvalidDnsName(_))
    ));
    issue_and_verify(&ca, "/web");
}
