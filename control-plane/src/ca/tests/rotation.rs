use webpki::KeyUsage;

use super::*;

#[test]
fn prepare_activate_retire() {
    let tmp = tempdir();
    let ca = internal(tmp.path(), None).unwrap();
    let mut bundle_rx = ca.subscribe_bundle();
    let a = ca.status().unwrap().remove(0);
    let v0 = ca.trust_bundle().version;
    let old_leaf = issue_and_verify(&ca, "/web");
    assert_eq!(old_leaf.authority_id, a.id);

    // prepare: second root in the bundle, version bumped, still signing with A.
    let b = ca.prepare().unwrap();
    assert_eq!(b.state, AuthorityState::Prepared);
    assert_ne!(b.id, a.id);
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.roots.len(), 2);
    assert_eq!(bundle.version, v0 + 1);
    assert!(bundle_rx.has_changed().unwrap());
    assert_eq!(bundle_rx.borrow_and_update().version, v0 + 1);
    assert_eq!(issue_and_verify(&ca, "/web").authority_id, a.id);

    // activate B: same bundle, new leaves chain to B's root only.
    let activated = ca.activate(&b.id).unwrap();
    assert_eq!(activated.state, AuthorityState::Active);
    assert_eq!(ca.trust_bundle().version, v0 + 1);
    assert!(!bundle_rx.has_changed().unwrap());
    let new_leaf = issue_and_verify(&ca, "/web");
    assert_eq!(new_leaf.authority_id, b.id);
    let root_of = |id: &str| {
        let fp = ca
            .status()
            .unwrap()
            .into_iter()
            .find(|s| s.id == id)
            .unwrap()
            .root_fingerprint;
        bundle
            .roots
            .iter()
            .find(|r| fingerprint(r) == fp)
            .unwrap()
            .clone()
    };
    let (root_a, root_b) = (root_of(&a.id), root_of(&b.id));
    verify(
        &new_leaf.leaf_der,
        &new_leaf.intermediates,
        std::slice::from_ref(&root_b),
        KeyUsage::client_auth(),
    )
    .unwrap();
    assert!(
        verify(
            &new_leaf.leaf_der,
            &new_leaf.intermediates,
            std::slice::from_ref(&root_a),
            KeyUsage::client_auth()
        )
        .is_err()
    );
    let states: Vec<_> = ca
        .status()
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.state))
        .collect();
    assert_eq!(
        states,
        [
            (a.id.clone(), AuthorityState::Standby),
            (b.id.clone(), AuthorityState::Active)
        ]
    );

    // retire: refused for the active one, and for A while its leaves are live.
    assert!(matches!(
        ca.retire(&b.id, false, SystemTime::now()),
        Err(CaError::InvalidState(_))
    ));
    assert!(matches!(
        ca.retire(&b.id, true, SystemTime::now()),
        Err(CaError::InvalidState(_))
    ));
    let err = ca.retire(&a.id, false, SystemTime::now()).unwrap_err();
    assert!(
        matches!(&err, CaError::StillInUse { live: 2, .. }),
        "{err:?}"
    );
    assert!(matches!(
        ca.retire("nope", false, SystemTime::now()),
        Err(CaError::NotFound(_))
    ));
    assert_eq!(ca.trust_bundle().roots.len(), 2);

    // Once A's leaves have expired, retiring works: back to one root, version bumped.
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let retired = ca.retire(&a.id, false, later).unwrap();
    assert_eq!(retired.state, AuthorityState::Retired);
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.roots, vec![root_b]);
    assert_eq!(bundle.version, v0 + 2);
    assert_eq!(bundle_rx.borrow_and_update().version, v0 + 2);
    assert!(matches!(ca.activate(&a.id), Err(CaError::InvalidState(_))));
    assert!(matches!(
        ca.retire(&a.id, true, later),
        Err(CaError::InvalidState(_))
    ));
    assert!(matches!(ca.activate("nope"), Err(CaError::NotFound(_))));

    // The retired keys are gone; the state survives a restart.
    let rows = ca.store.with_conn(rows::list).unwrap();
    let ra = rows.iter().find(|r| r.id == a.id).unwrap();
    assert!(ra.root_key.is_empty() && ra.issuer_key.is_empty());
    drop(ca);
    let ca = internal(tmp.path(), None).unwrap();
    assert_eq!(ca.trust_bundle(), bundle);
    assert_eq!(issue_and_verify(&ca, "/web").authority_id, b.id);
}

#[test]
fn force_retire_and_rollback() {
    let tmp = tempdir();
    let ca = internal(tmp.path(), None).unwrap();
    let a = ca.status().unwrap().remove(0);
    let b = ca.prepare().unwrap();
    ca.activate(&b.id).unwrap();
    issue_and_verify(&ca, "/b");
    // Roll back to A (standby → active), then force-retire B despite its live leaf.
    ca.activate(&a.id).unwrap();
    assert_eq!(issue_and_verify(&ca, "/a").authority_id, a.id);
    let version = ca.trust_bundle().version;
    let retired = ca.retire(&b.id, true, SystemTime::now()).unwrap();
    assert_eq!(retired.live_certificates, 1);
    assert_eq!(ca.trust_bundle().roots.len(), 1);
    assert_eq!(ca.trust_bundle().version, version + 1);
    // Activating the active authority is a no-op.
    assert_eq!(ca.activate(&a.id).unwrap().state, AuthorityState::Active);
    // A prepared authority can be retired right away.
    let c = ca.prepare().unwrap();
    ca.retire(&c.id, false, SystemTime::now()).unwrap();
    assert_eq!(ca.trust_bundle().roots.len(), 1);
    assert_eq!(ca.trust_bundle().version, version + 3);
}

#[test]
fn rotation_with_a_kek_keeps_new_keys_sealed() {
    let tmp = tempdir();
    let ca = internal(tmp.path(), Some(Kek::from_bytes([5; 32]))).unwrap();
    let b = ca.prepare().unwrap();
    ca.activate(&b.id).unwrap();
    issue_and_verify(&ca, "/web");
    let rows = ca.store.with_conn(rows::list).unwrap();
    assert!(rows.iter().all(|r| r.key_encryption == "aes-256-gcm"));
    drop(ca);
    assert!(matches!(
        internal(tmp.path(), Some(Kek::from_bytes([6; 32]))),
        Err(CaError::WrongKek { .. })
    ));
    let ca = internal(tmp.path(), Some(Kek::from_bytes([5; 32]))).unwrap();
    assert_eq!(issue_and_verify(&ca, "/web").authority_id, b.id);
}
