//! Rows of the `authorities` table. The CA (`ca/authority.rs`) owns the meaning of the
//! states and the key encryption; this module only moves rows in and out.
//!
//! The functions take a `&Connection` so the CA can combine several of them, plus the
//! bundle-version bump, in one transaction ([`Store::immediate`]).

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{StoreError, from_unix, to_unix};

/// One authority as stored.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AuthorityRow {
    pub id: String,
    /// `prepared`, `active`, `standby` or `retired`.
    pub state: String,
    pub root_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    /// PKCS#8 DER, sealed when `key_encryption != "none"`.
    pub root_key: Vec<u8>,
    /// PKCS#8 DER, sealed when `key_encryption != "none"`.
    pub issuer_key: Vec<u8>,
    /// `none` or `aes-256-gcm`.
    pub key_encryption: String,
    pub created_at: SystemTime,
}

impl std::fmt::Debug for AuthorityRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRow")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("key_encryption", &self.key_encryption)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str =
    "id, state, root_der, issuer_der, root_key, issuer_key, key_encryption, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AuthorityRow> {
    Ok(AuthorityRow {
        id: r.get(0)?,
        state: r.get(1)?,
        root_der: r.get(2)?,
        issuer_der: r.get(3)?,
        root_key: r.get(4)?,
        issuer_key: r.get(5)?,
        key_encryption: r.get(6)?,
        created_at: from_unix(r.get(7)?),
    })
}

/// All authorities, oldest first.
pub(crate) fn list(conn: &Connection) -> Result<Vec<AuthorityRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM authorities ORDER BY created_at ASC, rowid ASC"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One authority by id.
pub(crate) fn get(conn: &Connection, id: &str) -> Result<Option<AuthorityRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM authorities WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Inserts a new authority.
pub(crate) fn insert(conn: &Connection, row: &AuthorityRow) -> Result<(), StoreError> {
    let created = to_unix(row.created_at);
    conn.execute(
        &format!("INSERT INTO authorities ({COLUMNS}, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"),
        params![
            row.id,
            row.state,
            row.root_der,
            row.issuer_der,
            row.root_key,
            row.issuer_key,
            row.key_encryption,
            created,
        ],
    )?;
    Ok(())
}

/// Sets the state of authority `id`.
pub(crate) fn set_state(
    conn: &Connection,
    id: &str,
    state: &str,
    now: SystemTime,
) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE authorities SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, state, to_unix(now)],
    )?;
    if n != 1 {
        return Err(StoreError::Corrupt(format!("authority {id} vanished")));
    }
    Ok(())
}

/// Replaces the issuer (certificate and key) of authority `id`, keeping its root.
pub(crate) fn replace_issuer(
    conn: &Connection,
    id: &str,
    issuer_der: &[u8],
    issuer_key: &[u8],
    now: SystemTime,
) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE authorities SET issuer_der = ?2, issuer_key = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, issuer_der, issuer_key, to_unix(now)],
    )?;
    if n != 1 {
        return Err(StoreError::Corrupt(format!("authority {id} vanished")));
    }
    Ok(())
}

/// Replaces both private keys and their protection scheme (used to encrypt keys that were
/// stored in plaintext once a KEK is configured).
pub(crate) fn replace_keys(
    conn: &Connection,
    id: &str,
    root_key: &[u8],
    issuer_key: &[u8],
    key_encryption: &str,
    now: SystemTime,
) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE authorities SET root_key = ?2, issuer_key = ?3, key_encryption = ?4,
                updated_at = ?5
          WHERE id = ?1",
        params![id, root_key, issuer_key, key_encryption, to_unix(now)],
    )?;
    if n != 1 {
        return Err(StoreError::Corrupt(format!("authority {id} vanished")));
    }
    Ok(())
}
