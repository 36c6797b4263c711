//! Join tokens: operator-issued secrets that let a new proxy obtain its first certificate.
//!
//! A token is bound to exactly one SPIFFE ID, expires, and carries a number of uses (≥ 1).
//!
//! ```text
//! fjt_<id>_<secret>
//!     id:     8 random bytes, 16 lowercase hex chars — the public handle (list, revoke, logs)
//!     secret: 32 random bytes, unpadded base64url (43 chars)
//! ```
//!
//! Only the SHA-256 of the whole token string is stored. Redemption looks the row up by its
//! public id, compares the hash in constant time, checks revocation, expiry and remaining
//! uses, and decrements the use count — all in one `BEGIN IMMEDIATE` transaction, so two
//! concurrent redemptions of a token's last use cannot both succeed. The token text never
//! appears in errors, logs or `Debug` output.

use std::time::{Duration, SystemTime};

use aws_lc_rs::{constant_time, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use spiffe::SpiffeId;

use super::AttestError;
use crate::store::join_tokens::{self as rows, JoinTokenRow};
use crate::store::{Store, StoreError};

/// Prefix of every join token (lets secret scanners recognise leaked ones).
pub const TOKEN_PREFIX: &str = "fjt_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// Length of the base64url (unpadded) encoding of the secret.
const SECRET_B64_LEN: usize = 43;

/// A freshly created join token. Shown to the operator once; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokenSecret(String);

impl JoinTokenSecret {
    /// The token text, to hand to the operator. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JoinTokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinTokenSecret([redacted])")
    }
}

/// What may be shown about a join token: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenInfo {
    /// Public handle (16 hex chars), also embedded in the token text.
    pub id: String,
    /// The identity a redeemer receives.
    pub spiffe_id: SpiffeId,
    /// After this instant the token is refused.
    pub expires_at: SystemTime,
    /// Remaining redemptions.
    pub uses_left: u32,
    /// When it was created.
    pub created_at: SystemTime,
    /// Whether an operator revoked it.
    pub revoked: bool,
}

/// Errors creating a join token.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenError {
    /// A token must allow at least one use.
    #[error("a join token needs at least one use")]
    ZeroUses,
    /// A token must have a non-zero lifetime.
    #[error("a join token needs a non-zero lifetime")]
    ZeroTtl,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a join token for `spiffe_id`, valid for `ttl` from `now`, redeemable `uses`
/// times. Returns the token text (only chance to see it) and its public description.
pub fn create(
    store: &Store,
    spiffe_id: &SpiffeId,
    ttl: Duration,
    uses: u32,
    now: SystemTime,
) -> Result<(JoinTokenSecret, JoinTokenInfo), JoinTokenError> {
    if uses == 0 {
        return Err(JoinTokenError::ZeroUses);
    }
    if ttl.is_zero() {
        return Err(JoinTokenError::ZeroTtl);
    }
    let mut id_bytes = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    random(&mut id_bytes);
    random(&mut secret);
    let id = hex::encode(id_bytes);
    let token = format!("{TOKEN_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    secret.fill(0);

    // Whole seconds, as stored, so `info` matches what `list` will report.
    let created_at = crate::store::from_unix(crate::store::to_unix(now));
    let expires_at = created_at.checked_add(ttl).ok_or(JoinTokenError::ZeroTtl)?;
    let row = JoinTokenRow {
        id: id.clone(),
        token_hash: hash(&token),
        spiffe_id: spiffe_id.to_string(),
        expires_at,
        uses_left: uses,
        created_at,
        revoked: false,
    };
    store.with_conn(|c| rows::insert(c, &row))?;
    let info = info_from_row(row)?;
    Ok((JoinTokenSecret(token), info))
}

/// Redeems `token` at `now`: returns its identity and consumes one use.
///
/// # Errors
/// [`AttestError::Malformed`], [`AttestError::UnknownToken`], [`AttestError::Revoked`],
/// [`AttestError::Expired`], [`AttestError::UsedUp`] (checked in that order), or
/// [`AttestError::Store`]. A refused token is left unchanged.
pub fn redeem(store: &Store, token: &str, now: SystemTime) -> Result<SpiffeId, AttestError> {
    redeem_expecting(store, token, now, None)
}

/// Like [`redeem`], but when `expected` is given and the token is bound to another
/// identity, refuses with [`AttestError::IdentityMismatch`] *without* consuming a use.
pub fn redeem_expecting(
    store: &Store,
    token: &str,
    now: SystemTime,
    expected: Option<&SpiffeId>,
) -> Result<SpiffeId, AttestError> {
    let id = parse(token).ok_or(AttestError::Malformed)?;
    let presented = hash(token);
    store.immediate(|tx| {
        let row = rows::get(tx, id)?.ok_or(AttestError::UnknownToken)?;
        if constant_time::verify_slices_are_equal(&row.token_hash, &presented).is_err() {
            return Err(AttestError::UnknownToken);
        }
        let id = row.id.clone();
        if row.revoked {
            return Err(AttestError::Revoked { id });
        }
        if now >= row.expires_at {
            return Err(AttestError::Expired { id });
        }
        let spiffe_id = SpiffeId::new(&row.spiffe_id).map_err(|e| {
            StoreError::Corrupt(format!("join_tokens.spiffe_id {:?}: {e}", row.spiffe_id))
        })?;
        if let Some(expected) = expected
            && *expected != spiffe_id
        {
            return Err(AttestError::IdentityMismatch {
                id,
                bound: spiffe_id.to_string(),
                expected: expected.to_string(),
            });
        }
        if row.uses_left == 0 || !rows::consume_use(tx, &row.id)? {
            return Err(AttestError::UsedUp { id });
        }
        tracing::debug!(token_id = %row.id, uses_left = row.uses_left - 1, "join token redeemed");
        Ok(spiffe_id)
    })
}

/// All join tokens (including expired and revoked ones), newest first. No secrets.
pub fn list(store: &Store) -> Result<Vec<JoinTokenInfo>, StoreError> {
    let rows = store.with_conn(rows::list)?;
    rows.into_iter().map(info_from_row).collect()
}

/// Revokes the token with public id `id`. Returns `false` if there is none.
pub fn revoke(store: &Store, id: &str) -> Result<bool, StoreError> {
    store.with_conn(|c| rows::revoke(c, id))
}

/// Deletes tokens that expired before `cutoff`; returns how many.
pub fn purge_expired(store: &Store, cutoff: SystemTime) -> Result<usize, StoreError> {
    store.with_conn(|c| rows::delete_expired(c, cutoff))
}

/// Splits `fjt_<id>_<secret>` and returns the id if the whole token is well-formed.
fn parse(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 2 * ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !id_ok || secret.len() != SECRET_B64_LEN {
        return None;
    }
    let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
    (decoded.len() == SECRET_BYTES).then_some(id)
}

fn hash(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

fn random(buf: &mut [u8]) {
    // The system RNG failing is unrecoverable for a CA; aws-lc aborts in that case anyway.
    aws_lc_rs::rand::fill(buf).expect("system random number generator failed");
}

fn info_from_row(row: JoinTokenRow) -> Result<JoinTokenInfo, StoreError> {
    let spiffe_id = SpiffeId::new(&row.spiffe_id).map_err(|e| {
        StoreError::Corrupt(format!("join_tokens.spiffe_id {:?}: {e}", row.spiffe_id))
    })?;
    Ok(JoinTokenInfo {
        id: row.id,
        spiffe_id,
        expires_at: row.expires_at,
        uses_left: row.uses_left,
        created_at: row.created_at,
        revoked: row.revoked,
    })
}
