use super::*;

#[test]
fn first_start_creates_a_ca_that_survives_restarts() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let ca = internal(&data, None).unwrap();
    assert_eq!(ca.mode_name(), "internal");
    let status = ca.status().unwrap();
    assert_eq!(status.len(), 1);
    let a = &status[0];
    assert_eq!(a.state, AuthorityState::Active);
    assert_eq!(a.id.len(), 8);
    assert_eq!(
        a.root_subject,
        format!("CN=Ferrule Root CA {}, O=example.org", a.id)
    );
    assert_eq!(
        a.issuer_subject,
        format!("CN=Ferrule Intermediate CA {}, O=example.org", a.id)
    );
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.roots.len(), 1);
    assert_eq!(bundle.version, 1);
    assert_eq!(fingerprint(&bundle.roots[0]), a.root_fingerprint);

    // Default lifetimes: root ~10 years, intermediate ~1 year.
    let days = |t: SystemTime| t.duration_since(SystemTime::now()).unwrap().as_secs() / 86_400;
    assert!(
        (3649..=3650).contains(&days(a.root_not_after)),
        "{}",
        days(a.root_not_after)
    );
    assert!((364..=365).contains(&days(a.issuer_not_after)));

    let svid = issue_and_verify(&ca, "/web");
    drop(ca);

    let ca = internal(&data, None).unwrap();
    let again = ca.status().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, a.id);
    assert_eq!(again[0].root_fingerprint, a.root_fingerprint);
    assert_eq!(again[0].live_certificates, 1);
    assert_eq!(
        ca.trust_bundle(),
        bundle,
        "same roots, same version after restart"
    );
    // The old leaf still verifies against the reloaded bundle; new ones too.
    verify(
        &svid.leaf_der,
        &svid.intermediates,
        &ca.trust_bundle().roots,
        webpki::KeyUsage::client_auth(),
    )
    .unwrap();
    issue_and_verify(&ca, "/web");
}

#[test]
fn intermediate_constraints() {
    let tmp = tempdir();
    let ca = internal(tmp.path(), None).unwrap();
    let svid = issue_and_verify(&ca, "/x");
    let (_, issuer) = X509Certificate::from_der(&svid.intermediates[0]).unwrap();
    let bc = issuer.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    assert!(issuer.name_constraints().unwrap().is_none());
    let ku = issuer.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign());
}

#[test]
fn trust_domain_cannot_change() {
    let tmp = tempdir();
    drop(internal(tmp.path(), None).unwrap());
    let err = CertificateAuthority::open(
        open_store(tmp.path()),
        TrustDomain::new("other.org").unwrap(),
        CaMode::Internal { kek: None },
        CaParams::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CaError::Store(StoreError::TrustDomainMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn intermediate_is_renewed_under_the_same_root() {
    let tmp = tempdir();
    let params = CaParams {
        intermediate_lifetime: Duration::from_secs(3600),
        ..CaParams::default()
    };
    let ca = internal_with(tmp.path(), None, params).unwrap();
    let before = ca.status().unwrap().remove(0);
    let version = ca.trust_bundle().version;
    let now = SystemTime::now();
    assert!(
        !ca.renew_issuer_if_due(now).unwrap(),
        "fresh issuer is not due"
    );
    assert!(
        ca.renew_issuer_if_due(now + Duration::from_secs(45 * 60))
            .unwrap()
    );
    let after = ca.status().unwrap().remove(0);
    assert_eq!(after.root_fingerprint, before.root_fingerprint);
    assert!(after.issuer_not_after > before.issuer_not_after);
    assert_eq!(ca.trust_bundle().version, version, "bundle unchanged");
    let svid = issue_and_verify(&ca, "/after-renewal");
    let (_, leaf) = X509Certificate::from_der(&svid.leaf_der).unwrap();
    assert_eq!(
        SystemTime::from(leaf.validity().not_after.to_datetime()),
        svid.not_after
    );
}

#[test]
fn bundle_exports_and_sharing() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<CertificateAuthority>();
    assert_send_sync::<Store>();
    assert_send_sync::<BundleSnapshot>();

    let tmp = tempdir();
    let ca = internal(tmp.path(), None).unwrap();
    ca.prepare().unwrap();
    let bundle = ca.trust_bundle();
    let pem = bundle.to_pem();
    use rustls_pki_types::pem::PemObject;
    let parsed: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(parsed, bundle.roots);
    bundle.to_tls_bundle(ca.trust_domain()).unwrap();
}
