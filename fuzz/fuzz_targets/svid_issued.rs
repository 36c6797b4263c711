//! Peer certificate verification on *validly signed* certificates with arbitrary
//! contents: the fixture CA signs whatever SANs, CA flag, key usages, extended key
//! usages and validity the fuzzer picks, and `ferrule_tls::verify_svid` must judge
//! them exactly as the X.509-SVID rules say. (Raw bytes rarely get past the signature
//! check; this target explores what a trusted-but-careless or compromised issuer could
//! put in a leaf: the certificate zoo of Envoy CVE-2022-21656/21657, CVE-2025-66220.)
//!
//! Soundness: an accepted leaf has exactly one URI SAN, it is the returned ID written
//! canonically, in the trust domain; the leaf is not a CA, its EKU (if any) allows the
//! use, its key usage (if any) has digitalSignature and no certificate or CRL signing,
//! and it is within its validity period.
//! Completeness: a leaf that satisfies all of that, with nothing unusual besides, is
//! accepted.
#![no_main]

use ferrule_fuzz::pki::{NOW_UNIX, now, pki};
use ferrule_tls::{SpiffeId, Usage, verify_svid};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};
use time::OffsetDateTime;

#[derive(Arbitrary, Debug)]
enum Uri {
    /// `spiffe://fuzz.test/<path>`
    Ours(String),
    /// `spiffe://<td>/<path>`
    Spiffe(String, String),
    /// Anything.
    Raw(String),
}

impl Uri {
    fn text(&self) -> String {
        match self {
            Uri::Ours(p) => format!("spiffe://{}/{p}", ferrule_fuzz::TRUST_DOMAIN),
            Uri::Spiffe(td, p) => format!("spiffe://{td}/{p}"),
            Uri::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Leaf {
    uris: Vec<Uri>,
    dns: Vec<String>,
    emails: Vec<String>,
    ca: bool,
    /// Indexes into [`EKUS`]; `None`: no EKU extension.
    eku: Option<Vec<u8>>,
    /// Indexes into [`KUS`]; empty: no keyUsage extension.
    ku: Vec<u8>,
    /// Validity relative to the verification time, in seconds.
    not_before: i32,
    not_after: i32,
    server: bool,
    common_name: Option<String>,
}

const EKUS: [ExtendedKeyUsagePurpose; 5] = [
    ExtendedKeyUsagePurpose::ServerAuth,
    ExtendedKeyUsagePurpose::ClientAuth,
    ExtendedKeyUsagePurpose::CodeSigning,
    ExtendedKeyUsagePurpose::Any,
    ExtendedKeyUsagePurpose::EmailProtection,
];

const KUS: [KeyUsagePurpose; 5] = [
    KeyUsagePurpose::DigitalSignature,
    KeyUsagePurpose::KeyEncipherment,
    KeyUsagePurpose::KeyCertSign,
    KeyUsagePurpose::CrlSign,
    KeyUsagePurpose::KeyAgreement,
];

const TEN_YEARS: i32 = 10 * 365 * 86_400;

fn at(offset: i32) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW_UNIX + i64::from(offset)).expect("in range")
}

fuzz_target!(|leaf: Leaf| {
    let mut params = CertificateParams::default();
    let mut uris = Vec::new();
    for u in leaf.uris.iter().take(4) {
        let text = u.text();
        let Ok(ia5) = text.as_str().try_into() else {
            return; // rcgen cannot encode it (non-ASCII): nothing to verify
        };
        params.subject_alt_names.push(SanType::URI(ia5));
        uris.push(text);
    }
    for d in leaf.dns.iter().take(2) {
        let Ok(ia5) = d.as_str().try_into() else {
            return;
        };
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    for e in leaf.emails.iter().take(2) {
        let Ok(ia5) = e.as_str().try_into() else {
            return;
        };
        params.subject_alt_names.push(SanType::Rfc822Name(ia5));
    }
    if let Some(cn) = &leaf.common_name {
        params
            .distinguished_name
            .push(DnType::CommonName, cn.as_str());
    }
    params.is_ca = if leaf.ca {
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    let ekus: Vec<_> = leaf
        .eku
        .iter()
        .flatten()
        .take(4)
        .map(|i| EKUS[usize::from(*i) % EKUS.len()].clone())
        .collect();
    let has_eku_ext = leaf.eku.is_some() && !ekus.is_empty();
    params.extended_key_usages = if has_eku_ext { ekus.clone() } else { vec![] };
    let kus: Vec<_> = leaf
        .ku
        .iter()
        .take(4)
        .map(|i| KUS[usize::from(*i) % KUS.len()])
        .collect();
    params.key_usages = kus.clone();
    params.not_before = at(leaf.not_before);
    params.not_after = at(leaf.not_after);
    let pki = pki();
    let Ok(der) = pki.issue(&params) else {
        return;
    };
    let usage = if leaf.server {
        Usage::Server
    } else {
        Usage::Client
    };
    let wanted = if leaf.server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    };
    let result = verify_svid(
        &der,
        std::slice::from_ref(&pki.issuer),
        &pki.bundle,
        now(),
        usage,
    );

    let one_canonical_id = match uris.as_slice() {
        [one] => SpiffeId::new(one)
            .ok()
            .filter(|id| id.to_string() == *one && id.is_member_of(pki.bundle.trust_domain())),
        _ => None,
    };
    let eku_ok = !has_eku_ext || ekus.contains(&wanted);
    let ku_ok = kus.is_empty()
        || (kus.contains(&KeyUsagePurpose::DigitalSignature)
            && !kus.contains(&KeyUsagePurpose::KeyCertSign)
            && !kus.contains(&KeyUsagePurpose::CrlSign));
    // webpki: valid from notBefore through notAfter inclusive.
    let in_time = leaf.not_before <= 0 && leaf.not_after >= 0;

    match &result {
        Ok(id) => {
            assert_eq!(Some(id), one_canonical_id.as_ref(), "accepted {uris:?}");
            assert!(!leaf.ca, "accepted a CA:TRUE leaf");
            assert!(eku_ok, "accepted EKU {ekus:?} for {usage:?}");
            assert!(ku_ok, "accepted key usage {kus:?}");
            assert!(
                in_time,
                "accepted outside validity {}..{}",
                leaf.not_before, leaf.not_after
            );
        }
        Err(e) => {
            let plain_eku = !has_eku_ext
                || ekus.iter().all(|p| {
                    *p == ExtendedKeyUsagePurpose::ServerAuth
                        || *p == ExtendedKeyUsagePurpose::ClientAuth
                });
            let plain_ku = kus.iter().all(|k| *k == KeyUsagePurpose::DigitalSignature);
            let should_pass = one_canonical_id.is_some()
                && !leaf.ca
                && eku_ok
                && plain_eku
                && plain_ku
                && in_time
                && leaf.not_before < leaf.not_after
                // Dates decades away (before 1950 or after 2049 here) take encodings
                // webpki refuses (BadDerTime): out of scope for completeness.
                && leaf.not_before > -TEN_YEARS
                && leaf.not_after < TEN_YEARS;
            assert!(!should_pass, "refused a valid SVID ({e}): {leaf:?}");
        }
    }
});
