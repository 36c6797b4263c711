//! Schema migrations, applied in order and tracked by `PRAGMA user_version`.
//!
//! To change the schema, **append** a migration to [`MIGRATIONS`]; never edit one that has
//! shipped. Each runs in its own transaction together with the `user_version` bump, so a
//! crash mid-migration leaves the previous version intact. Planned additions (policies,
//! audit log, workload registry) become migrations 2, 3, ...

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: authorities, metadata, join tokens, issued certificates.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    -- A certificate authority: a root and the intermediate that signs leaves.
    -- Private keys are PKCS#8 DER, sealed with AES-256-GCM when key_encryption is
    -- 'aes-256-gcm' (see ca/kek.rs), plaintext when it is 'none'.
    CREATE TABLE authorities (
        id             TEXT PRIMARY KEY,
        state          TEXT NOT NULL
                       CHECK (state IN ('prepared', 'active', 'standby', 'retired')),
        root_der       BLOB NOT NULL,
        issuer_der     BLOB NOT NULL,
        root_key       BLOB NOT NULL,
        issuer_key     BLOB NOT NULL,
        key_encryption TEXT NOT NULL CHECK (key_encryption IN ('none', 'aes-256-gcm')),
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    ) STRICT;
    -- Exactly one active authority at a time (at most one enforced here; the CA makes
    -- sure there is one).
    CREATE UNIQUE INDEX authorities_one_active ON authorities (state) WHERE state = 'active';

    -- Join tokens: only the SHA-256 of the whole token string is stored.
    CREATE TABLE join_tokens (
        id         TEXT PRIMARY KEY,
        token_hash BLOB NOT NULL,
        spiffe_id  TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        uses_left  INTEGER NOT NULL CHECK (uses_left >= 0),
        created_at INTEGER NOT NULL,
        revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
    ) STRICT;

    -- Every certificate the CA signed (for rotation safety and `ferrulectl certs`).
    CREATE TABLE issued_certs (
        serial_hex   TEXT PRIMARY KEY,
        spiffe_id    TEXT NOT NULL,
        authority_id TEXT NOT NULL,
        not_before   INTEGER NOT NULL,
        not_after    INTEGER NOT NULL,
        issued_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX issued_certs_by_authority ON issued_certs (authority_id, not_after);
    CREATE INDEX issued_certs_by_identity ON issued_certs (spiffe_id, issued_at);
    "#,
    // 2: workload registry, authorization policies, audit log.
    r#"
    -- Registered workloads, kept across restarts so a restarted control plane serves the
    -- same discovery view at once. last_seen: end of the last session (or its start
    -- while connected).
    CREATE TABLE workloads (
        address       TEXT NOT NULL,
        inbound_port  INTEGER NOT NULL,
        spiffe_id     TEXT NOT NULL,
        service       TEXT NOT NULL,
        app_ports     TEXT NOT NULL,
        proxy_version TEXT NOT NULL,
        last_seen     INTEGER NOT NULL,
        PRIMARY KEY (address, inbound_port)
    ) STRICT;

    -- Authorization policy documents (validated, stored as JSON). The policy-set version
    -- lives in meta.policy_version.
    CREATE TABLE policies (
        name       TEXT PRIMARY KEY,
        document   TEXT NOT NULL,
        version    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    ) STRICT;

    -- Every administrative change: who, when, what.
    CREATE TABLE audit_log (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at     INTEGER NOT NULL,
        who    TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    ) STRICT;
    "#,
];

/// The schema version this binary writes.
pub(super) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database up to [`latest`].
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > latest() {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: latest(),
            });
        }
        if version == latest() {
            return Ok(());
        }
        let index = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
        tx.execute_batch(MIGRATIONS[index])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(from = version, to = version + 1, "store schema migrated");
    }
}
