use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rcgen::{BasicConstraints, CertifiedIssuer, DnType, IsCa, KeyUsagePurpose};
use webpki::KeyUsage;

use crate::store::PermissionError;

use super::*;

fn ca_params(cn: &str, path_len: u8) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Corp PKI");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(30);
    p
}

fn root(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::self_signed(ca_params(cn, 1), KeyPair::generate().unwrap()).unwrap()
}

/// An intermediate (issuer) under `root`, with its key.
fn intermediate(
    root: &CertifiedIssuer<'_, KeyPair>,
    cn: &str,
) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(cn, 0).signed_by(&key, root).unwrap();
    (cert.der().clone(), key)
}

fn pem(certs: &[&CertificateDer<'_>]) -> String {
    BundleSnapshot {
        roots: certs.iter().map(|c| (*c).clone().into_owned()).collect(),
        version: 0,
    }
    .to_pem()
}

/// Atomically replaces `path` (new inode, like Kubernetes and cert-manager do).
fn write(path: &Path, content: &str, mode: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    paths: ExternalIssuerPaths,
}

fn files(bundle: bool) -> Files {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let pki = tmp.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let paths = ExternalIssuerPaths {
        cert_chain: pki.join("chain.pem"),
        key: pki.join("key.pem"),
        bundle: bundle.then(|| pki.join("bundle.pem")),
    };
    Files {
        _tmp: tmp,
        data,
        paths,
    }
}

fn install(
    f: &Files,
    issuer: &CertificateDer<'_>,
    key: &KeyPair,
    chain_rest: &[&CertificateDer<'_>],
) {
    let mut chain = vec![issuer];
    chain.extend_from_slice(chain_rest);
    write(&f.paths.cert_chain, &pem(&chain), 0o644);
    write(&f.paths.key, &key.serialize_pem(), 0o600);
}

fn open(f: &Files) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::open(
        open_store(&f.data),
        td(),
        CaMode::External {
            cert_chain: f.paths.cert_chain.clone(),
            key: f.paths.key.clone(),
            bundle: f.paths.bundle.clone(),
        },
        CaParams::default(),
    )
}

#[test]
fn external_issuer_signs_and_reloads() {
    let f = files(false);
    let root1 = root("Corp Root 1");
    let (inter1, key1) = intermediate(&root1, "Corp Issuing 1");
    install(&f, &inter1, &key1, &[root1.der()]);

    let ca = open(&f).unwrap();
    assert_eq!(ca.mode_name(), "external");
    let bundle = ca.trust_bundle();
    assert_eq!(
        bundle.roots,
        vec![root1.der().clone()],
        "default bundle: last chain cert"
    );
    let status = ca.status().unwrap();
    assert_eq!(status.len(), 1);
    assert!(status[0].id.starts_with("ext-"));
    assert_eq!(status[0].state, AuthorityState::Active);
    assert_eq!(status[0].root_subject, "CN=Corp Root 1, O=Corp PKI");
    assert_eq!(status[0].issuer_subject, "CN=Corp Issuing 1, O=Corp PKI");

    let svid1 = issue_and_verify(&ca, "/web");
    assert_eq!(
        svid1.intermediates,
        vec![inter1.clone()],
        "root is not sent"
    );
    assert_eq!(svid1.authority_id, status[0].id);
    assert_eq!(ca.status().unwrap()[0].live_certificates, 1);
    assert!(!ca.reload_if_changed().unwrap(), "nothing changed");

    assert!(matches!(ca.prepare(), Err(CaError::ExternalMode)));
    assert!(matches!(ca.activate("x"), Err(CaError::ExternalMode)));
    assert!(matches!(
        ca.retire("x", true, SystemTime::now()),
        Err(CaError::ExternalMode)
    ));

    // A renewed intermediate under the same root: picked up, bundle unchanged.
    let (inter2, key2) = intermediate(&root1, "Corp Issuing 2");
    install(&f, &inter2, &key2, &[root1.der()]);
    assert!(ca.reload_if_changed().unwrap());
    assert!(!ca.reload_if_changed().unwrap());
    let svid2 = issue_and_verify(&ca, "/web");
    assert_eq!(svid2.intermediates, vec![inter2.clone()]);
    assert_ne!(svid2.authority_id, svid1.authority_id);
    assert_eq!(ca.trust_bundle(), bundle);

    // Broken updates are refused and the previous issuer stays.
    let (_, other_key) = intermediate(&root1, "unrelated");
    write(&f.paths.key, &other_key.serialize_pem(), 0o600);
    let err = ca.reload_if_changed().unwrap_err();
    assert!(
        matches!(
            err,
            CaError::External(ExternalIssuerError::Issuer(SignerError::KeyMismatch))
        ),
        "{err:?}"
    );
    assert!(
        ca.reload_if_changed().is_err(),
        "keeps reporting until fixed"
    );
    assert_eq!(
        issue_and_verify(&ca, "/web").authority_id,
        svid2.authority_id
    );
    write(&f.paths.cert_chain, "garbage", 0o644);
    assert!(matches!(
        ca.reload_if_changed(),
        Err(CaError::External(ExternalIssuerError::Pem { .. }))
    ));
    assert_eq!(
        issue_and_verify(&ca, "/web").authority_id,
        svid2.authority_id
    );

    // A whole new PKI: new root in the bundle, version bumped, subscribers told.
    let rx = ca.subscribe_bundle();
    let root2 = root("Corp Root 2");
    let (inter3, key3) = intermediate(&root2, "Corp Issuing 3");
    install(&f, &inter3, &key3, &[root2.der()]);
    assert!(ca.reload_if_changed().unwrap());
    let new_bundle = ca.trust_bundle();
    assert_eq!(new_bundle.roots, vec![root2.der().clone()]);
    assert_eq!(new_bundle.version, bundle.version + 1);
    assert!(rx.has_changed().unwrap());
    let svid3 = issue_and_verify(&ca, "/web");
    assert!(
        verify(
            &svid3.leaf_der,
            &svid3.intermediates,
            &[root1.der().clone()],
            KeyUsage::client_auth()
        )
        .is_err()
    );

    // The bundle version survives a restart and only moves on change.
    drop(ca);
    assert_eq!(open(&f).unwrap().trust_bundle(), new_bundle);
}

#[test]
fn external_bundle_file_and_validation() {
    let f = files(true);
    let root1 = root("Corp Root 1");
    let extra = root("Corp Root Old");
    let (inter, key) = intermediate(&root1, "Corp Issuing");
    // Chain without the root; the bundle names two roots.
    install(&f, &inter, &key, &[]);
    let bundle_path = f.paths.bundle.clone().unwrap();
    write(&bundle_path, &pem(&[root1.der(), extra.der()]), 0o644);
    let ca = open(&f).unwrap();
    assert_eq!(
        ca.trust_bundle().roots,
        vec![root1.der().clone(), extra.der().clone()]
    );
    assert_eq!(
        ca.status().unwrap()[0].root_subject,
        "CN=Corp Root 1, O=Corp PKI"
    );
    issue_and_verify(&ca, "/web");
    drop(ca);

    // Not anchored in the bundle.
    write(&bundle_path, &pem(&[extra.der()]), 0o644);
    let err = open(&f).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::External(ExternalIssuerError::NotAnchored { .. })
        ),
        "{err:?}"
    );
    write(&bundle_path, &pem(&[root1.der()]), 0o644);

    // Issuer that is not a CA.
    let leaf_key = KeyPair::generate().unwrap();
    let mut lp = CertificateParams::new(vec!["leaf.example".to_string()]).unwrap();
    lp.is_ca = IsCa::ExplicitNoCa;
    let leaf = lp.signed_by(&leaf_key, &root1).unwrap();
    install(&f, leaf.der(), &leaf_key, &[]);
    let err = open(&f).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::External(ExternalIssuerError::Issuer(SignerError::NotCa { .. }))
        ),
        "{err:?}"
    );

    // Expired issuer.
    let mut p = ca_params("Corp Expired", 0);
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired_key = KeyPair::generate().unwrap();
    let expired = p.signed_by(&expired_key, &root1).unwrap();
    install(&f, expired.der(), &expired_key, &[]);
    let err = open(&f).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::External(ExternalIssuerError::NotValidNow { .. })
        ),
        "{err:?}"
    );

    // Chain in the wrong order.
    let root2 = root("Corp Root 2");
    install(&f, &inter, &key, &[root2.der()]);
    let err = open(&f).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::External(ExternalIssuerError::BrokenChain { index: 0, .. })
        ),
        "{err:?}"
    );
}

#[test]
fn external_key_file_must_be_private() {
    let f = files(false);
    let root1 = root("Corp Root 1");
    let (inter, key) = intermediate(&root1, "Corp Issuing");
    install(&f, &inter, &key, &[root1.der()]);
    std::fs::set_permissions(&f.paths.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = open(&f).unwrap_err();
    assert!(
        matches!(
            &err,
            CaError::External(ExternalIssuerError::KeyPermission(
                PermissionError::TooOpen { mode: 0o640, .. }
            ))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("key.pem"), "{err}");
}
