//! The CSR → certificate path of the control plane's CA
//! (`CertificateAuthority::sign_svid`: `ca::sign::check_csr`, then `sign_csr` for the
//! *attested* identity), with the real store and CA.
//!
//! Input: byte 0 selects the mode. `0`: byte 1 picks the attested identity and the rest
//! is a raw DER CSR. Otherwise the rest drives a CSR *builder*: validly self-signed
//! requests with whatever key type, URI/DNS/IP SANs, subject, CA flag, extended key
//! usages and custom extensions (even ones carrying SAN or basicConstraints OIDs) the
//! fuzzer picks: the Consul CVE-2022-40716 family.
//!
//! Invariants: an issued certificate names the attested identity and nothing else (one
//! URI SAN, no other SAN, empty subject), is not a CA, certifies the CSR's own public
//! key, verifies for client and server use against the CA's bundle, and lives no longer
//! than the TTL plus the backdate. An identity outside the trust domain is never
//! issued. A well-formed CSR with a supported key is always accepted, whatever it asks
//! for: its requests are ignored, not judged.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ferrule_control_plane::ca::SignError;
use ferrule_fuzz::cp::control_plane;
use ferrule_tls::{Usage, verify_svid};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use rcgen::{
    CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use spiffe::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

const TTL: Duration = Duration::from_secs(3600);
const BACKDATE: Duration = Duration::from_secs(300);

/// Identities attestation might hand the CA (the last is outside the trust domain).
const ATTESTED: [&str; 4] = [
    "spiffe://fuzz.test/ns/default/sa/web",
    "spiffe://fuzz.test/a",
    "spiffe://fuzz.test/ns/prod/sa/api-with-a-much-longer-service-account-name",
    "spiffe://evil.test/ns/default/sa/web",
];

/// Keys for built CSRs: P-256, P-384, Ed25519 (made once).
fn keys() -> &'static [KeyPair] {
    static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ]
        .into_iter()
        .map(|alg| KeyPair::generate_for(alg).expect("key"))
        .collect()
    })
}

#[derive(Arbitrary, Debug)]
struct Request {
    key: u8,
    uris: Vec<String>,
    dns: Vec<String>,
    ips: Vec<[u8; 4]>,
    ca: bool,
    common_name: Option<String>,
    client_only_eku: bool,
    /// (OID choice, content): 0 = subjectAltName, 1 = basicConstraints, else a private OID.
    extensions: Vec<(u8, Vec<u8>)>,
}

/// Builds a self-signed CSR; `None` when rcgen refuses the contents.
fn build(r: &Request) -> Option<Vec<u8>> {
    let mut p = CertificateParams::default();
    for u in r.uris.iter().take(3) {
        p.subject_alt_names
            .push(SanType::URI(u.as_str().try_into().ok()?));
    }
    for d in r.dns.iter().take(2) {
        p.subject_alt_names
            .push(SanType::DnsName(d.as_str().try_into().ok()?));
    }
    for ip in r.ips.iter().take(2) {
        p.subject_alt_names.push(SanType::IpAddress((*ip).into()));
    }
    if let Some(cn) = &r.common_name {
        p.distinguished_name.push(DnType::CommonName, cn.as_str());
    }
    if r.ca {
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    if r.client_only_eku {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    for (oid, content) in r.extensions.iter().take(3) {
        let oid: &[u64] = match oid % 3 {
            0 => &[2, 5, 29, 17],
            1 => &[2, 5, 29, 19],
            _ => &[1, 3, 6, 1, 4, 1, 55555, u64::from(*oid)],
        };
        p.custom_extensions
            .push(CustomExtension::from_oid_content(oid, content.clone()));
    }
    let key = &keys()[usize::from(r.key) % keys().len()];
    Some(p.serialize_request(key).ok()?.der().to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (csr, attested, built_plain) = if mode == 0 {
        let Some((&pick, der)) = rest.split_first() else {
            return;
        };
        (
            der.to_vec(),
            ATTESTED[usize::from(pick) % ATTESTED.len()],
            false,
        )
    } else {
        let Ok(r) = Request::arbitrary(&mut Unstructured::new(rest)) else {
            return;
        };
        let Some(der) = build(&r) else {
            return;
        };
        (
            der,
            ATTESTED[usize::from(mode) % ATTESTED.len()],
            r.extensions.is_empty(),
        )
    };
    let attested_id = SpiffeId::new(attested).expect("fixture id");
    let cp = control_plane();
    let in_domain = attested_id.is_member_of(cp.ca.trust_domain());

    match cp.ca.sign_svid(&csr, &attested_id, TTL) {
        Ok(issued) => {
            assert!(in_domain, "issued {attested} outside the trust domain");
            assert_eq!(issued.spiffe_id, attested_id);
            let facts = ferrule_fuzz::cert_facts(&issued.leaf_der).expect("issued leaf parses");
            assert_eq!(
                facts.uris,
                vec![attested.to_string()],
                "SANs of the issued leaf"
            );
            assert_eq!(facts.other_sans, 0, "non-URI SANs in a workload leaf");
            assert!(!facts.is_ca, "issued a CA certificate");
            assert!(facts.empty_subject, "subject copied from the CSR");
            let (_, req) = X509CertificationRequest::from_der(&csr).expect("accepted CSR parses");
            assert_eq!(
                facts.spki, req.certification_request_info.subject_pki.raw,
                "public key"
            );
            let (nb, na) = facts.validity;
            assert!(
                na - nb <= (TTL + BACKDATE).as_secs() as i64,
                "lifetime {}",
                na - nb
            );
            let bundle = cp
                .ca
                .trust_bundle()
                .to_tls_bundle(cp.ca.trust_domain())
                .expect("bundle");
            let inters: Vec<CertificateDer<'_>> = issued.intermediates.clone();
            for usage in [Usage::Client, Usage::Server] {
                let id = verify_svid(&issued.leaf_der, &inters, &bundle, UnixTime::now(), usage)
                    .unwrap_or_else(|e| panic!("issued leaf does not verify for {usage:?}: {e}"));
                assert_eq!(id, attested_id);
            }
        }
        Err(SignError::ForeignTrustDomain { .. }) => assert!(!in_domain),
        Err(e) => {
            assert!(
                !(built_plain && in_domain),
                "refused a well-formed CSR: {e}"
            );
        }
    }
});
