//! The control plane's embedded store: one SQLite file in the data directory.
//!
//! Everything the control plane must remember across restarts lives here: the certificate
//! authorities (with their private keys, encrypted when a key-encryption key is configured —
//! see [`crate::ca::kek`]), the trust-bundle version, join tokens (hashes only) and a record
//! of every certificate issued.
//!
//! - **One connection, one mutex.** [`Store`] wraps a single `rusqlite::Connection` in a
//!   `std::sync::Mutex`. Control-plane writes are rare and tiny; serialising them is simpler
//!   than a pool and makes "check then update" sequences atomic within the process. Every
//!   multi-step change also runs in an SQLite transaction (`BEGIN IMMEDIATE`), so it stays
//!   atomic against a second process opening the same file (e.g. `ferrulectl` offline tools).
//! - **WAL mode and a busy timeout**, so readers never block the writer and a second
//!   connection waits instead of failing with `SQLITE_BUSY`.
//! - **Schema migrations by `PRAGMA user_version`** (`store/schema.rs`): append a migration, never
//!   edit a shipped one. A database written by a newer binary is refused.
//! - **Private by construction.** [`Store::open`] creates the data directory `0700` and the
//!   database (and its `-wal`/`-shm` files) `0600`, and refuses to start when either is
//!   readable or writable by group or others ([`PermissionError`]).
//!
//! Times are stored as Unix seconds (`INTEGER`); the Rust API speaks [`SystemTime`].

pub(crate) mod authorities;
mod issued;
pub(crate) mod join_tokens;
mod perms;
mod policies;
mod schema;
mod workloads;

pub use policies::{ApplyOutcome, AuditEntry, DeleteError, StoredPolicy};

#[cfg(test)]
mod tests;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use spiffe::TrustDomain;

pub(crate) use authorities::AuthorityRow;
pub use issued::IssuedCertRecord;
pub use perms::{PermissionError, check_private_dir, check_private_file};

/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "ferrule.db";

/// How long a connection waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory, the database file or one of its companion files is missing or
    /// accessible by group or others. The message names the path and its mode.
    #[error(transparent)]
    Permission(#[from] PermissionError),
    /// Creating the data directory or the database file failed.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The directory or file that could not be created.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// SQLite reported an error (I/O, locking, constraint violation, ...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer Ferrule (its schema version is unknown here).
    #[error(
        "database schema version {found} is newer than this binary supports ({supported}); \
         upgrade ferrule-control-plane or restore an older backup"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest schema version this binary knows.
        supported: i64,
    },
    /// The data directory belongs to a different trust domain than the configured one.
    /// Changing the trust domain means a new mesh: use a new data directory.
    #[error(
        "the data directory belongs to trust domain {stored:?} but {configured:?} is configured; \
         a trust domain cannot be changed in place (use a fresh data directory)"
    )]
    TrustDomainMismatch {
        /// Trust domain recorded in the database.
        stored: String,
        /// Trust domain given in the configuration.
        configured: String,
    },
    /// A row holds a value this binary cannot interpret (hand-edited or corrupted database).
    #[error("corrupt database: {0}")]
    Corrupt(String),
}

/// The embedded SQLite store. Share it as `Arc<Store>`.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`.
    ///
    /// Creates `data_dir` with mode `0700` and `ferrule.db` with mode `0600`, enables WAL,
    /// applies pending schema migrations, and tightens the `-wal`/`-shm` files to `0600`.
    ///
    /// # Errors
    /// [`StoreError::Permission`] if the directory or database already exists with group or
    /// other access; [`StoreError::SchemaTooNew`] for a database from a newer binary; I/O and
    /// SQLite errors otherwise.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        if !data_dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|source| StoreError::Create {
                    path: data_dir.to_path_buf(),
                    source,
                })?;
        }
        check_private_dir(data_dir)?;

        let path = data_dir.join(DB_FILE_NAME);
        // Create the file ourselves so SQLite never creates it with the umask's mode.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Create {
                path: path.clone(),
                source,
            })?;
        check_private_file(&path)?;

        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; continuing");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn)?;
        perms::tighten_companions(&path)?;

        tracing::debug!(path = %path.display(), "store opened");
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the connection. A panic in another thread while it held the lock leaves no
    /// half-done work behind (an open transaction rolls back when dropped), so a poisoned
    /// lock is recovered rather than propagated.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the connection (no transaction).
    pub(crate) fn with_conn<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.lock();
        f(&conn)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so
    /// read-check-write sequences cannot interleave with another connection. Commits when
    /// `f` returns `Ok`, rolls back otherwise.
    pub(crate) fn immediate<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(out)
    }

    /// Records `configured` as this store's trust domain on first use; afterwards, refuses
    /// any other.
    ///
    /// # Errors
    /// [`StoreError::TrustDomainMismatch`] when the store belongs to another trust domain.
    pub fn ensure_trust_domain(&self, configured: &TrustDomain) -> Result<(), StoreError> {
        self.immediate(|tx| match meta_get(tx, META_TRUST_DOMAIN)? {
            Some(stored) if stored == configured.as_str() => Ok(()),
            Some(stored) => Err(StoreError::TrustDomainMismatch {
                stored,
                configured: configured.to_string(),
            }),
            None => meta_set(tx, META_TRUST_DOMAIN, configured.as_str()),
        })
    }

    /// The current trust-bundle version (0 before any bundle was published).
    pub fn bundle_version(&self) -> Result<u64, StoreError> {
        self.with_conn(|c| Ok(bundle_state(c)?.0))
    }
}

const META_TRUST_DOMAIN: &str = "trust_domain";
const META_BUNDLE_VERSION: &str = "bundle_version";
const META_BUNDLE_DIGEST: &str = "bundle_digest";

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// `(version, digest)` of the last published bundle.
fn bundle_state(conn: &Connection) -> Result<(u64, Option<String>), StoreError> {
    let version = match meta_get(conn, META_BUNDLE_VERSION)? {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| StoreError::Corrupt(format!("meta.bundle_version = {v:?}")))?,
        None => 0,
    };
    Ok((version, meta_get(conn, META_BUNDLE_DIGEST)?))
}

/// Publishes a bundle whose content hashes to `digest` (hex): bumps and returns the version
/// when the digest differs from the last published one, otherwise returns the current
/// version unchanged. Run it in the same transaction as the change that altered the bundle.
pub(crate) fn publish_bundle(conn: &Connection, digest: &str) -> Result<u64, StoreError> {
    let (version, stored) = bundle_state(conn)?;
    if stored.as_deref() == Some(digest) {
        return Ok(version);
    }
    let next = version + 1;
    meta_set(conn, META_BUNDLE_VERSION, &next.to_string())?;
    meta_set(conn, META_BUNDLE_DIGEST, digest)?;
    Ok(next)
}

/// Unix seconds of `t` (negative before 1970).
pub(crate) fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The [`SystemTime`] of Unix seconds `secs`.
pub(crate) fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
