//! `VerifiedPeer`: a long-lived connection's peer is re-checked before each reuse. It
//! fails closed on expiry and on any trust-bundle change that no longer vouches for it
//! (the Envoy CVE-2022-21654 class: reuse must never skip re-validation after trust
//! changed), and costs nothing while nothing changed.

use std::time::{Duration, SystemTime};

use ferrule_tls::{IdentityHandle, TrustBundle, Usage, VerifiedPeer, VerifyError};

use crate::pki::{LeafSpec, Pki};

const TD: &str = "example.org";
const PEER: &str = "ns/default/sa/web";

fn handle_with(bundle: TrustBundle) -> IdentityHandle {
    let h = IdentityHandle::new();
    h.set_bundle(bundle);
    h
}

/// A bundle holding the roots of all `pkis` (a CA rotation's overlap).
fn bundle_of(pkis: &[&Pki], version: u64) -> TrustBundle {
    let roots = pkis.iter().map(|p| p.root.der()).collect();
    TrustBundle::new(pkis[0].td.clone(), roots, version).unwrap()
}

#[test]
fn unchanged_bundle_keeps_the_peer_and_reports_its_identity() {
    let pki = Pki::new(TD);
    let h = handle_with(pki.bundle());
    let leaf = pki.svid(PEER);
    let before = h.bundle();
    let peer = VerifiedPeer::after_handshake(&h, before, Some(&leaf.chain), Usage::Client).unwrap();
    assert_eq!(peer.id(), &pki.id(PEER));
    peer.check(&h, SystemTime::now()).unwrap();
    // Same content, but a newly published bundle: re-verified (and still fine).
    h.set_bundle(pki.bundle());
    peer.check(&h, SystemTime::now()).unwrap();
}

#[test]
fn a_bundle_that_drops_the_peers_ca_refuses_every_later_use() {
    let old = Pki::new(TD);
    let new = Pki::new(TD);
    let h = handle_with(bundle_of(&[&old, &new], 1));
    let leaf = old.svid(PEER);
    let peer =
        VerifiedPeer::after_handshake(&h, h.bundle(), Some(&leaf.chain), Usage::Server).unwrap();
    // The rotation finishes: only the new root is trusted.
    h.set_bundle(bundle_of(&[&new], 2));
    assert_eq!(
        peer.check(&h, SystemTime::now()),
        Err(VerifyError::UnknownCa)
    );
    // Not remembered as good by the failed attempt.
    assert_eq!(
        peer.check(&h, SystemTime::now()),
        Err(VerifyError::UnknownCa)
    );
    // A bundle that trusts the old root again vouches for it again.
    h.set_bundle(bundle_of(&[&old], 3));
    peer.check(&h, SystemTime::now()).unwrap();
}

#[test]
fn a_rotation_that_keeps_the_peers_ca_keeps_the_peer() {
    let old = Pki::new(TD);
    let new = Pki::new(TD);
    let h = handle_with(bundle_of(&[&old], 1));
    let leaf = old.svid(PEER);
    let peer =
        VerifiedPeer::after_handshake(&h, h.bundle(), Some(&leaf.chain), Usage::Client).unwrap();
    h.set_bundle(bundle_of(&[&old, &new], 2));
    peer.check(&h, SystemTime::now()).unwrap();
}

#[test]
fn expiry_is_checked_against_the_time_of_each_use() {
    let pki = Pki::new(TD);
    let h = handle_with(pki.bundle());
    let leaf = pki.svid(PEER); // valid for one more hour
    let peer =
        VerifiedPeer::after_handshake(&h, h.bundle(), Some(&leaf.chain), Usage::Client).unwrap();
    let now = SystemTime::now();
    peer.check(&h, now).unwrap();
    assert!(peer.not_after() > now && peer.not_after() < now + Duration::from_secs(3700));
    let later = now + Duration::from_secs(2 * 3600);
    assert!(matches!(
        peer.check(&h, later),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn a_bundle_changed_during_the_handshake_is_verified_against_at_once() {
    // The verifier may have run against the bundle read before the handshake; if the
    // handle holds another one afterwards, the chain is checked against that one.
    let old = Pki::new(TD);
    let new = Pki::new(TD);
    let h = handle_with(old.bundle());
    let before = h.bundle();
    h.set_bundle(new.bundle());
    let leaf = old.svid(PEER);
    let r = VerifiedPeer::after_handshake(&h, before, Some(&leaf.chain), Usage::Client);
    assert_eq!(r.map(|_| ()), Err(VerifyError::UnknownCa));
    // Nothing read before the handshake: verified against the current bundle too.
    let r = VerifiedPeer::after_handshake(&h, None, Some(&leaf.chain), Usage::Client);
    assert_eq!(r.map(|_| ()), Err(VerifyError::UnknownCa));
}

#[test]
fn no_certificate_or_no_bundle_fails_closed() {
    let pki = Pki::new(TD);
    let h = handle_with(pki.bundle());
    assert_eq!(
        VerifiedPeer::after_handshake(&h, h.bundle(), None, Usage::Client).map(|_| ()),
        Err(VerifyError::NoCertificate)
    );
    assert_eq!(
        VerifiedPeer::after_handshake(&h, h.bundle(), Some(&[]), Usage::Client).map(|_| ()),
        Err(VerifyError::NoCertificate)
    );
    let empty = IdentityHandle::new();
    let leaf = pki.svid(PEER);
    assert_eq!(
        VerifiedPeer::after_handshake(&empty, None, Some(&leaf.chain), Usage::Client).map(|_| ()),
        Err(VerifyError::NoBundle)
    );
}

#[test]
fn a_short_lived_certificate_bounds_reuse() {
    let pki = Pki::new(TD);
    let h = handle_with(pki.bundle());
    let mut spec = LeafSpec::svid(&pki.id(PEER).to_string());
    spec.not_after = time::OffsetDateTime::now_utc() + Duration::from_secs(600);
    let short = pki.leaf(&spec);
    let peer =
        VerifiedPeer::after_handshake(&h, h.bundle(), Some(&short.chain), Usage::Client).unwrap();
    let now = SystemTime::now();
    assert!(peer.not_after() <= now + Duration::from_secs(601));
    assert!(matches!(
        peer.check(&h, now + Duration::from_secs(700)),
        Err(VerifyError::Expired { .. })
    ));
}
