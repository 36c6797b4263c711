//! Peer certificate verification on raw bytes (`ferrule_tls::verify_svid`, which every
//! mTLS handshake runs on what the peer sent), plus the bundle parsers
//! (`TrustBundle::new` / `from_pem`) and `peer_spiffe_id`.
//!
//! Input: a flags byte (bit 0: verify for server use instead of client use; bit 1:
//! append the fixture's issuer after the peer's certificates), then the peer's chain as
//! records of a 2-byte big-endian length and that many bytes (leaf first). Input that
//! is not in that framing is taken whole as the leaf.
//!
//! Invariants, for any accepted chain: the ID returned is in the bundle's trust domain
//! and is the leaf's one and only URI SAN as x509-parser reads it independently; the
//! leaf is not a CA; `peer_spiffe_id` reads the same ID. A bundle that parses has one
//! anchor per root.
#![no_main]

use ferrule_fuzz::pki::{now, pki};
use ferrule_tls::{TrustBundle, TrustDomain, Usage, peer_spiffe_id, verify_svid};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;

/// Splits length-prefixed records; `None` if the framing does not cover the input.
fn records(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (len, rest) = data.split_at_checked(2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (rec, rest) = rest.split_at_checked(len)?;
        out.push(rec);
        data = rest;
    }
    Some(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, body)) = input.split_first() else {
        return;
    };
    let usage = if flags & 1 == 0 {
        Usage::Client
    } else {
        Usage::Server
    };
    let mut chain: Vec<CertificateDer<'_>> = match records(body) {
        Some(recs) if !recs.is_empty() => recs.into_iter().map(CertificateDer::from).collect(),
        _ => vec![CertificateDer::from(body)],
    };
    let pki = pki();
    if flags & 2 != 0 {
        chain.push(pki.issuer.clone());
    }
    let (leaf, intermediates) = chain.split_first().expect("non-empty chain");
    if let Ok(id) = verify_svid(leaf, intermediates, &pki.bundle, now(), usage) {
        assert!(
            id.is_member_of(pki.bundle.trust_domain()),
            "foreign ID {id}"
        );
        let facts = ferrule_fuzz::cert_facts(leaf).expect("an accepted leaf parses");
        assert_eq!(
            facts.uris,
            vec![id.to_string()],
            "accepted ID is not the one URI SAN"
        );
        assert!(!facts.is_ca, "accepted a CA certificate as a leaf");
        assert_eq!(peer_spiffe_id(Some(&chain)), Some(id));
    }

    // The same bytes as trust-bundle material (bundle files, control-plane messages).
    let td = TrustDomain::new(ferrule_fuzz::TRUST_DOMAIN).expect("trust domain");
    let roots: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.to_vec()))
        .collect();
    if let Ok(b) = TrustBundle::new(td.clone(), roots, 7) {
        assert_eq!(b.anchors().len(), b.roots().len());
        assert_eq!(b.version(), 7);
    }
    if let Ok(b) = TrustBundle::from_pem(td, body, 0) {
        assert!(!b.roots().is_empty());
        assert_eq!(b.anchors().len(), b.roots().len());
    }
});
