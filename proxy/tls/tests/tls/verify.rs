//! `verify_svid`, `TrustBundle` and `Credentials` without sockets.

use ferrule_tls::{
    BundleError, Credentials, CredentialsError, TrustBundle, TrustDomain, Usage, VerifyError,
    peer_spiffe_id, verify_svid,
};
use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose};
use rustls::pki_types::UnixTime;

use crate::pki::{Ca, LeafSpec, Pki, dns_san, uri_san};

const TD: &str = "example.org";

fn verify(pki: &Pki, leaf: &crate::pki::Leaf, usage: Usage) -> Result<String, VerifyError> {
    verify_svid(
        leaf.leaf(),
        leaf.intermediates(),
        &pki.bundle(),
        UnixTime::now(),
        usage,
    )
    .map(|id| id.to_string())
}

fn verify_spec(spec: LeafSpec, usage: Usage) -> Result<String, VerifyError> {
    let pki = Pki::new(TD);
    let leaf = pki.leaf(&spec);
    verify(&pki, &leaf, usage)
}

#[test]
fn good_svid_verifies_for_both_usages() {
    let pki = Pki::new(TD);
    let leaf = pki.svid("ns/default/sa/web");
    for usage in [Usage::Client, Usage::Server] {
        assert_eq!(
            verify(&pki, &leaf, usage).unwrap(),
            "spiffe://example.org/ns/default/sa/web"
        );
    }
}

#[test]
fn leaf_without_eku_is_accepted() {
    let spec = LeafSpec::svid("spiffe://example.org/a").eku(&[]);
    assert!(verify_spec(spec, Usage::Client).is_ok());
}

#[test]
fn wrong_eku_is_refused() {
    let spec = LeafSpec::svid("spiffe://example.org/a").eku(&[Eku::ServerAuth]);
    let err = verify_spec(spec.clone(), Usage::Client).unwrap_err();
    assert_eq!(err.reason(), "bad_eku", "{err}");
    assert!(verify_spec(spec, Usage::Server).is_ok());
}

#[test]
fn ca_leaf_is_refused() {
    let spec = LeafSpec::svid("spiffe://example.org/a").ca();
    let err = verify_spec(spec, Usage::Server).unwrap_err();
    assert_eq!(err, VerifyError::CaUsedAsEndEntity);
}

#[test]
fn leaf_that_may_sign_certificates_is_refused() {
    let spec = LeafSpec::svid("spiffe://example.org/a").key_usages(&[
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ]);
    assert_eq!(
        verify_spec(spec, Usage::Server).unwrap_err().reason(),
        "bad_key_usage"
    );
    let spec =
        LeafSpec::svid("spiffe://example.org/a").key_usages(&[KeyUsagePurpose::KeyEncipherment]);
    assert_eq!(
        verify_spec(spec, Usage::Server).unwrap_err().reason(),
        "bad_key_usage"
    );
}

#[test]
fn san_rules() {
    let two = LeafSpec::svid("spiffe://example.org/a").sans(vec![
        uri_san("spiffe://example.org/a"),
        uri_san("spiffe://example.org/b"),
    ]);
    assert_eq!(
        verify_spec(two, Usage::Client).unwrap_err(),
        VerifyError::MultipleUriSans { count: 2 }
    );

    let dns = LeafSpec::svid("spiffe://example.org/a").sans(vec![dns_san("web.example.org")]);
    assert_eq!(
        verify_spec(dns, Usage::Client).unwrap_err(),
        VerifyError::NoUriSan
    );

    // A DNS SAN next to the URI SAN is tolerated; the DNS name is simply ignored.
    let both = LeafSpec::svid("spiffe://example.org/a").sans(vec![
        dns_san("web.example.org"),
        uri_san("spiffe://example.org/a"),
    ]);
    assert_eq!(
        verify_spec(both, Usage::Client).unwrap(),
        "spiffe://example.org/a"
    );

    for bad in [
        "https://example.org/a",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/a%20b",
        "spiffe://example.org/a?x=1",
        "spiffe://example.org/a\u{0}b",
        "spiffe://user@example.org/a",
        "spiffe://example.org/",
        "SPIFFE://example.org/a",
        "spiffe://Example.org/a",
    ] {
        let spec = LeafSpec::svid("spiffe://example.org/a").sans(vec![uri_san(bad)]);
        let err = verify_spec(spec, Usage::Client).unwrap_err();
        assert_eq!(err.reason(), "invalid_spiffe_id", "{bad:?}: {err}");
    }
}

#[test]
fn foreign_trust_domain_is_refused() {
    let pki = Pki::new(TD);
    let leaf = pki.leaf(&LeafSpec::svid("spiffe://other.org/a"));
    let err = verify(&pki, &leaf, Usage::Client).unwrap_err();
    assert_eq!(err.reason(), "foreign_trust_domain", "{err}");
}

#[test]
fn foreign_ca_with_identical_id_is_unknown() {
    let ours = Pki::new(TD);
    let theirs = Pki::new(TD);
    let leaf = theirs.svid("a");
    let err = verify(&ours, &leaf, Usage::Client).unwrap_err();
    assert_eq!(err, VerifyError::UnknownCa);
}

#[test]
fn missing_intermediate_is_unknown_ca() {
    let pki = Pki::new(TD);
    let leaf = pki.svid("a");
    let err = verify_svid(
        leaf.leaf(),
        &[],
        &pki.bundle(),
        UnixTime::now(),
        Usage::Client,
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::UnknownCa);
}

#[test]
fn validity_window() {
    let expired = LeafSpec::svid("spiffe://example.org/a").expired();
    assert_eq!(
        verify_spec(expired, Usage::Client).unwrap_err().reason(),
        "expired"
    );
    let early = LeafSpec::svid("spiffe://example.org/a").not_yet_valid();
    assert_eq!(
        verify_spec(early, Usage::Client).unwrap_err().reason(),
        "not_yet_valid"
    );
}

#[test]
fn intermediate_path_length_is_enforced() {
    let pki = Pki::new(TD);
    // The intermediate has pathLen 0, so a CA below it must not be trusted.
    let sub = pki.intermediate.intermediate("rogue sub-CA");
    let (cert, _key) = sub.issue(&LeafSpec::svid("spiffe://example.org/a"));
    let err = verify_svid(
        &cert,
        &[sub.der(), pki.intermediate.der()],
        &pki.bundle(),
        UnixTime::now(),
        Usage::Client,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "bad_chain", "{err}");
}

#[test]
fn leaf_directly_under_root_verifies() {
    let pki = Pki::new(TD);
    let (cert, _key) = pki.root.issue(&LeafSpec::svid("spiffe://example.org/a"));
    let id = verify_svid(&cert, &[], &pki.bundle(), UnixTime::now(), Usage::Server);
    assert_eq!(id.unwrap().to_string(), "spiffe://example.org/a");
}

#[test]
fn garbage_is_malformed() {
    let pki = Pki::new(TD);
    let junk = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
    let err = verify_svid(&junk, &[], &pki.bundle(), UnixTime::now(), Usage::Client).unwrap_err();
    assert_eq!(err.reason(), "malformed", "{err}");
}

#[test]
fn bundle_construction() {
    let td = TrustDomain::new(TD).unwrap();
    assert!(matches!(
        TrustBundle::new(td.clone(), vec![], 1),
        Err(BundleError::Empty)
    ));

    let pki = Pki::new(TD);
    let leaf = pki.svid("a");
    assert!(matches!(
        TrustBundle::new(td.clone(), vec![pki.root.der(), leaf.leaf().clone()], 1),
        Err(BundleError::BadRoot { index: 1, .. })
    ));

    let other = Ca::root("second root");
    let pem = format!("{}\n{}", pki.root.pem(), other.pem());
    let bundle = TrustBundle::from_pem(td.clone(), pem.as_bytes(), 7).unwrap();
    assert_eq!(bundle.roots().len(), 2);
    assert_eq!(bundle.anchors().len(), 2);
    assert_eq!(bundle.version(), 7);
    assert_eq!(bundle.trust_domain(), &td);
    assert!(matches!(
        TrustBundle::from_pem(td, b"not pem", 1),
        Err(BundleError::Empty)
    ));
}

#[test]
fn credentials_read_the_leaf() {
    let pki = Pki::new(TD);
    let leaf = pki.svid("ns/a");
    let creds = leaf.credentials();
    assert_eq!(creds.spiffe_id(), &pki.id("ns/a"));
    assert_eq!(creds.chain().len(), 2);
    assert!(creds.not_before() < creds.not_after());
    assert_eq!(creds.serial_hex().len(), 16, "{}", creds.serial_hex());
    assert!(!creds.serial_hex().starts_with("00"));
    let debug = format!("{creds:?}");
    assert!(debug.contains("<redacted>") && debug.contains("spiffe://example.org/ns/a"));
    assert_eq!(peer_spiffe_id(Some(&leaf.chain)), Some(pki.id("ns/a")));
    assert_eq!(peer_spiffe_id(None), None);
}

#[test]
fn credentials_refuse_bad_material() {
    let pki = Pki::new(TD);
    let a = pki.svid("a");
    let b = pki.svid("b");
    assert!(matches!(
        Credentials::new(a.chain.clone(), b.key()),
        Err(CredentialsError::KeyMismatch)
    ));
    assert!(matches!(
        Credentials::new(vec![], a.key()),
        Err(CredentialsError::EmptyChain)
    ));
    for spec in [
        LeafSpec::svid("spiffe://example.org/a").ca(),
        LeafSpec::svid("spiffe://example.org/a").sans(vec![dns_san("a.example.org")]),
        LeafSpec::svid("spiffe://example.org/a").sans(vec![
            uri_san("spiffe://example.org/a"),
            uri_san("spiffe://example.org/b"),
        ]),
    ] {
        let leaf = pki.leaf(&spec);
        let err = Credentials::new(leaf.chain.clone(), leaf.key()).unwrap_err();
        assert!(matches!(err, CredentialsError::Leaf(_)), "{err}");
    }
    let garbage = rustls::pki_types::PrivateKeyDer::Pkcs8(vec![1, 2, 3].into());
    assert!(matches!(
        Credentials::new(a.chain.clone(), garbage),
        Err(CredentialsError::Key(_))
    ));
}
