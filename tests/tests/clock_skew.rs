//! Clock skew between the control plane and the proxies (a few minutes, as NTP-less or
//! drifting nodes have): what is tolerated, and that nothing more is.
//!
//! * The CA backdates every certificate's notBefore by 5 minutes, so a verifier whose
//!   clock runs up to 5 minutes *behind* the issuer's accepts a certificate at once.
//! * Verifiers (the proxies) add no leeway of their own: a certificate is valid from
//!   notBefore through notAfter by the verifier's clock, exactly. A verifier running
//!   ahead sees certificates expire early, which renewal at half-life absorbs.
//!
//! No fake clock is needed: the control plane runs with an external issuer whose key
//! the test holds, so the test can sign certificates whose validity says what a skewed
//! issuer would have written, and present them to the real proxy.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ferrule_tests::CpOptions;
use ferrule_tests::apps::Behaviour;
use ferrule_tests::explicit::{API, MeshOptions, WEB, mesh_with};
use ferrule_tests::mtls::{ClientCert, attempt, client_config, inbound_refusals};
use ferrule_tests::pki::{handle_for, obtain};
use ferrule_tls::Credentials;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::Resumption;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// A root and an intermediate the test can sign with; the control plane issues from the
/// intermediate (external-issuer mode).
struct ExternalCa {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
}

fn ca_params(cn: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(constraints);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// Writes `chain.pem` (intermediate, root) and `issuer.key` (0600) into `dir`.
fn external_ca(dir: &Path) -> ExternalCa {
    use std::os::unix::fs::PermissionsExt;
    let root_params = ca_params("Skew Test Root", BasicConstraints::Unconstrained);
    let root_key = KeyPair::generate().unwrap();
    let root = root_params.self_signed(&root_key).unwrap();
    let params = ca_params("Skew Test Issuer", BasicConstraints::Constrained(0));
    let key = KeyPair::generate().unwrap();
    let int = params
        .signed_by(&key, &Issuer::from_params(&root_params, &root_key))
        .unwrap();
    std::fs::write(
        dir.join("chain.pem"),
        format!("{}{}", int.pem(), root.pem()),
    )
    .unwrap();
    let key_path = dir.join("issuer.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    ExternalCa {
        params,
        key,
        der: int.der().clone(),
    }
}

impl ExternalCa {
    /// An SVID for `id` valid from `now + not_before` to `now + not_after` (seconds).
    fn svid(&self, id: &str, not_before: i64, not_after: i64) -> Credentials {
        let now = OffsetDateTime::now_utc();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now + time::Duration::seconds(not_before);
        p.not_after = now + time::Duration::seconds(not_after);
        let key = KeyPair::generate().unwrap();
        let leaf = p
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Credentials::new(vec![leaf.der().clone(), self.der.clone()], key).unwrap()
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn issued_certificates_are_backdated_and_proxies_apply_validity_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = external_ca(dir.path());
    let m = mesh_with(MeshOptions {
        cp: CpOptions {
            extra_args: vec![
                "--issuer-cert".into(),
                dir.path().join("chain.pem").display().to_string(),
                "--issuer-key".into(),
                dir.path().join("issuer.key").display().to_string(),
            ],
            ..Default::default()
        },
        behaviour: Behaviour::Echo,
        ..Default::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // 1. The control plane backdates: a fresh certificate is already 5 minutes old.
    let t0 = secs(SystemTime::now());
    let issued = rt.block_on(obtain(&m.cp, WEB)).unwrap();
    let t1 = secs(SystemTime::now());
    let nb = secs(issued.not_before());
    assert!(
        (t0 - 300 - 1..=t1 - 300).contains(&nb),
        "notBefore {nb} is not 5 minutes before issuance ({t0}..{t1})"
    );

    // 2. The proxy judges validity by its own clock, with no leeway. Each case is a
    //    certificate as an issuer with a skewed clock would have written it.
    let handle = handle_for(&m.cp, None).unwrap();
    let cases: [(&str, i64, i64, Option<&str>); 5] = [
        ("the CA's own backdated certificate", 0, 0, None),
        ("issuer 4 min ahead (notBefore 1 min ago)", -60, 3600, None),
        (
            "issuer 6 min ahead (notBefore in 1 min)",
            60,
            3600,
            Some("not_yet_valid"),
        ),
        ("expires in 1 min", -600, 60, None),
        (
            "expired 1 min ago (verifier ahead)",
            -3600,
            -60,
            Some("expired"),
        ),
    ];
    for (i, (case, not_before, not_after, refusal)) in cases.into_iter().enumerate() {
        let made;
        let creds = if i == 0 {
            &issued
        } else {
            made = ca.svid(WEB, not_before, not_after);
            &made
        };
        let before = (
            m.app.accepted(),
            refusal.map(|r| inbound_refusals(&m.api, r)),
        );
        let cfg = client_config(
            &handle,
            API,
            ClientCert::new(creds),
            &rustls::version::TLS13,
            Resumption::disabled(),
        );
        let payload = format!("case {i}");
        let got = rt.block_on(attempt(cfg, m.api_inbound, payload.as_bytes()));
        match refusal {
            None => assert_eq!(
                got.echoed,
                payload.as_bytes(),
                "{case}: {got:?}\n{}",
                m.api.log()
            ),
            Some(reason) => {
                assert!(got.echoed.is_empty(), "{case}: accepted: {got:?}");
                assert_eq!(m.app.accepted(), before.0, "{case}: the app was reached");
                let counted = ferrule_tests::process::wait_for(Duration::from_secs(5), || {
                    (inbound_refusals(&m.api, reason) > before.1.unwrap_or(0.0)).then_some(())
                });
                assert!(
                    counted.is_some(),
                    "{case}: not refused as {reason}\n{}",
                    m.api.log()
                );
            }
        }
    }
}
