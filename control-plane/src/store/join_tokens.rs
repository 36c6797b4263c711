//! Rows of the `join_tokens` table. The token logic (format, hashing, redemption rules)
//! lives in `attest/join_token.rs`; only the SHA-256 of a token ever reaches this table.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{StoreError, from_unix, to_unix};

/// One join token as stored (no secret: `token_hash` is a SHA-256 digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinTokenRow {
    pub id: String,
    pub token_hash: Vec<u8>,
    pub spiffe_id: String,
    pub expires_at: SystemTime,
    pub uses_left: u32,
    pub created_at: SystemTime,
    pub revoked: bool,
}

const COLUMNS: &str = "id, token_hash, spiffe_id, expires_at, uses_left, created_at, revoked";

fn from_row(r: &Row<'_>) -> rusqlite::Result<JoinTokenRow> {
    Ok(JoinTokenRow {
        id: r.get(0)?,
        token_hash: r.get(1)?,
        spiffe_id: r.get(2)?,
        expires_at: from_unix(r.get(3)?),
        uses_left: r.get(4)?,
        created_at: from_unix(r.get(5)?),
        revoked: r.get(6)?,
    })
}

/// Inserts a token.
pub(crate) fn insert(conn: &Connection, row: &JoinTokenRow) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO join_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            row.id,
            row.token_hash,
            row.spiffe_id,
            to_unix(row.expires_at),
            row.uses_left,
            to_unix(row.created_at),
            row.revoked,
        ],
    )?;
    Ok(())
}

/// One token by its public id.
pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<JoinTokenRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM join_tokens WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// All tokens, newest first.
pub(crate) fn list(conn: &Connection) -> Result<Vec<JoinTokenRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM join_tokens ORDER BY created_at DESC, rowid DESC"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Consumes one use of token `id`. Returns `false` (and changes nothing) when it has none
/// left. Call inside the transaction that checked the token.
pub(crate) fn consume_use(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = ?1 AND uses_left > 0",
        [id],
    )?;
    Ok(n == 1)
}

/// Marks token `id` revoked. Returns `false` when no such token exists.
pub(crate) fn revoke(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let n = conn.execute("UPDATE join_tokens SET revoked = 1 WHERE id = ?1", [id])?;
    Ok(n == 1)
}

/// Deletes tokens that expired before `cutoff`; returns how many.
pub(crate) fn delete_expired(conn: &Connection, cutoff: SystemTime) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM join_tokens WHERE expires_at < ?1",
        [to_unix(cutoff)],
    )?)
}
