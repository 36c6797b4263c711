use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use spiffe::SpiffeId;

use super::join_token::{self, JoinTokenError};
use super::*;

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&tmp.path().join("data")).unwrap());
    (tmp, store)
}

fn web() -> SpiffeId {
    SpiffeId::new("spiffe://example.org/ns/default/sa/web").unwrap()
}

fn cred(t: &str) -> Credential {
    Credential::JoinToken(t.to_string())
}

/// [`super::attest`] for join tokens, which never wait on anything.
fn attest(
    store: &Store,
    credential: &Credential,
    now: SystemTime,
    expected: Option<&SpiffeId>,
) -> Result<SpiffeId, AttestError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(super::attest(store, None, credential, now, expected))
}

#[test]
fn create_and_redeem() {
    let (_tmp, store) = store();
    let now = SystemTime::now();
    let (token, info) =
        join_token::create(&store, &web(), Duration::from_secs(600), 1, now).unwrap();
    let text = token.expose();
    assert!(text.starts_with(&format!("fjt_{}_", info.id)), "{text}");
    assert_eq!(text.len(), 4 + 16 + 1 + 43);
    assert_eq!(info.spiffe_id, web());
    assert_eq!(info.uses_left, 1);
    assert!(!info.revoked);

    assert_eq!(attest(&store, &cred(text), now, None).unwrap(), web());
    let listed = join_token::list(&store).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uses_left, 0);
    assert_eq!(listed[0].id, info.id);
    assert!(matches!(
        attest(&store, &cred(text), now, None),
        Err(AttestError::UsedUp { id }) if id == info.id
    ));
}

#[test]
fn multi_use_tokens_count_down() {
    let (_tmp, store) = store();
    let now = SystemTime::now();
    let (token, _) = join_token::create(&store, &web(), Duration::from_secs(600), 3, now).unwrap();
    for _ in 0..3 {
        join_token::redeem(&store, token.expose(), now).unwrap();
    }
    assert!(matches!(
        join_token::redeem(&store, token.expose(), now),
        Err(AttestError::UsedUp { .. })
    ));
}

#[test]
fn expiry_and_revocation() {
    let (_tmp, store) = store();
    let now = SystemTime::now();
    let (token, info) =
        join_token::create(&store, &web(), Duration::from_secs(60), 5, now).unwrap();
    assert!(matches!(
        join_token::redeem(&store, token.expose(), info.expires_at),
        Err(AttestError::Expired { .. })
    ));
    // A refused redemption consumes nothing.
    assert_eq!(join_token::list(&store).unwrap()[0].uses_left, 5);
    join_token::redeem(&store, token.expose(), now).unwrap();

    assert!(join_token::revoke(&store, &info.id).unwrap());
    assert!(!join_token::revoke(&store, "0000000000000000").unwrap());
    assert!(matches!(
        join_token::redeem(&store, token.expose(), now),
        Err(AttestError::Revoked { .. })
    ));
    assert!(join_token::list(&store).unwrap()[0].revoked);

    assert_eq!(
        join_token::purge_expired(&store, now + Duration::from_secs(120)).unwrap(),
        1
    );
    assert!(join_token::list(&store).unwrap().is_empty());
}

#[test]
fn malformed_and_unknown_tokens() {
    let (_tmp, store) = store();
    let now = SystemTime::now();
    let (token, info) =
        join_token::create(&store, &web(), Duration::from_secs(60), 1, now).unwrap();
    let good = token.expose();
    let secret_part = &good[4 + 16 + 1..];
    for bad in [
        "",
        "fjt_",
        "hello",
        &good[..good.len() - 1],
        &format!("{good}A"),
        &good.replace("fjt_", "xyz_"),
        &good.to_uppercase(),
        &format!("fjt_{}_{}", &info.id[..15], secret_part),
        &format!("fjt_{}_{}", info.id, "!".repeat(43)),
    ] {
        assert!(
            matches!(
                join_token::redeem(&store, bad, now),
                Err(AttestError::Malformed)
            ),
            "{bad:?}"
        );
    }
    // Well-formed but unknown id; known id with the wrong secret: indistinguishable.
    let other_secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    for unknown in [
        format!("fjt_0123456789abcdef_{secret_part}"),
        format!("fjt_{}_{other_secret}", info.id),
    ] {
        assert!(matches!(
            join_token::redeem(&store, &unknown, now),
            Err(AttestError::UnknownToken)
        ));
    }
    // The real token is still intact.
    join_token::redeem(&store, good, now).unwrap();
}

#[test]
fn invalid_creation_parameters() {
    let (_tmp, store) = store();
    let now = SystemTime::now();
    assert!(matches!(
        join_token::create(&store, &web(), Duration::from_secs(60), 0, now),
        Err(JoinTokenError::ZeroUses)
    ));
    assert!(matches!(
        join_token::create(&store, &web(), Duration::ZERO, 1, now),
        Err(JoinTokenError::ZeroTtl)
    ));
}

#[test]
fn concurrent_redemptions_of_a_single_use_token_have_one_winner() {
    let (tmp, store_a) = store();
    // A second connection to the same file: the race is decided by SQLite, not only by the
    // in-process mutex.
    let store_b = Arc::new(Store::open(&tmp.path().join("data")).unwrap());
    let now = SystemTime::now();
    for round in 0..5 {
        let (token, _) =
            join_token::create(&store_a, &web(), Duration::from_secs(60), 1, now).unwrap();
        let token = Arc::new(token.expose().to_string());
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let store = if i % 2 == 0 {
                    store_a.clone()
                } else {
                    store_b.clone()
                };
                let token = token.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    join_token::redeem(&store, &token, now)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || matches!(r, Err(AttestError::UsedUp { .. }))),
            "round {round}: {results:?}"
        );
    }
}

#[test]
fn secrets_never_stored_or_printed() {
    let (tmp, store) = store();
    let now = SystemTime::now();
    let (token, info) =
        join_token::create(&store, &web(), Duration::from_secs(60), 1, now).unwrap();
    let text = token.expose().to_string();
    // Base64url may itself contain '_': the secret is everything after `fjt_<id>_`.
    let secret = text[4 + 16 + 1..].to_string();
    let secret_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&secret)
        .unwrap();

    let mut on_disk = Vec::new();
    for name in ["ferrule.db", "ferrule.db-wal"] {
        if let Ok(bytes) = std::fs::read(tmp.path().join("data").join(name)) {
            on_disk.extend(bytes);
        }
    }
    let contains = |needle: &[u8]| on_disk.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(info.id.as_bytes()),
        "sanity: the public id is stored"
    );
    assert!(!contains(text.as_bytes()));
    assert!(!contains(secret.as_bytes()));
    assert!(!contains(&secret_bytes));

    assert!(!format!("{token:?}").contains(&secret));
    assert!(!format!("{:?}", cred(&text)).contains(&secret));
    join_token::redeem(&store, &text, now).unwrap();
    for err in [
        join_token::redeem(&store, &text, now).unwrap_err(),
        join_token::redeem(&store, &format!("{text}x"), now).unwrap_err(),
    ] {
        assert!(!err.to_string().contains(&secret));
        assert!(!format!("{err:?}").contains(&secret));
    }
    assert!(!format!("{:?}", join_token::list(&store).unwrap()).contains(&secret));
}

#[test]
fn a_token_for_another_identity_is_refused_without_spending_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    let now = SystemTime::now();
    let (token, _) = join_token::create(&store, &web(), Duration::from_secs(60), 1, now).unwrap();
    let other = SpiffeId::new("spiffe://example.org/ns/default/sa/other").unwrap();
    let err = attest(&store, &cred(token.expose()), now, Some(&other)).unwrap_err();
    assert!(
        matches!(err, AttestError::IdentityMismatch { .. }),
        "{err:?}"
    );
    // The single use is still there.
    assert_eq!(
        attest(&store, &cred(token.expose()), now, Some(&web())).unwrap(),
        web()
    );
}
