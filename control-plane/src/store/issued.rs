//! Records of issued certificates: what the CA signed, for whom, under which authority.
//!
//! Retiring an authority is refused while certificates it issued are still unexpired
//! ([`Store::count_live`]), and `ferrulectl certs` lists the newest certificate per identity
//! ([`Store::list_latest_per_identity`]).

use std::time::SystemTime;

use rusqlite::params;
use spiffe::SpiffeId;

use super::{Store, StoreError, from_unix, to_unix};

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertRecord {
    /// Serial number, lowercase hex without separators.
    pub serial_hex: String,
    /// The identity in the certificate's URI SAN.
    pub spiffe_id: SpiffeId,
    /// Id of the authority whose issuer signed it.
    pub authority_id: String,
    /// Start of validity (already backdated for clock skew).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// When the CA signed it.
    pub issued_at: SystemTime,
}

impl Store {
    /// Records an issued certificate.
    pub fn record_issued(&self, rec: &IssuedCertRecord) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO issued_certs
                   (serial_hex, spiffe_id, authority_id, not_before, not_after, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    rec.serial_hex,
                    rec.spiffe_id.to_string(),
                    rec.authority_id,
                    to_unix(rec.not_before),
                    to_unix(rec.not_after),
                    to_unix(rec.issued_at),
                ],
            )?;
            Ok(())
        })
    }

    /// The most recently issued certificate of every identity, soonest expiry first.
    pub fn list_latest_per_identity(&self) -> Result<Vec<IssuedCertRecord>, StoreError> {
        self.with_conn(|c| {
            // For each identity, the row with the greatest issued_at (ties: greatest serial).
            let mut stmt = c.prepare(
                "SELECT serial_hex, spiffe_id, authority_id, not_before, not_after, issued_at
                   FROM issued_certs AS i
                  WHERE serial_hex = (
                        SELECT serial_hex FROM issued_certs AS j
                         WHERE j.spiffe_id = i.spiffe_id
                         ORDER BY issued_at DESC, serial_hex DESC
                         LIMIT 1)
                  ORDER BY not_after ASC, spiffe_id ASC",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (serial_hex, id, authority_id, nb, na, ia) = row?;
                let spiffe_id = SpiffeId::new(&id).map_err(|e| {
                    StoreError::Corrupt(format!("issued_certs.spiffe_id {id:?}: {e}"))
                })?;
                out.push(IssuedCertRecord {
                    serial_hex,
                    spiffe_id,
                    authority_id,
                    not_before: from_unix(nb),
                    not_after: from_unix(na),
                    issued_at: from_unix(ia),
                });
            }
            Ok(out)
        })
    }

    /// How many certificates issued under `authority_id` are still unexpired at `now`.
    pub fn count_live(&self, authority_id: &str, now: SystemTime) -> Result<u64, StoreError> {
        self.with_conn(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM issued_certs WHERE authority_id = ?1 AND not_after > ?2",
                params![authority_id, to_unix(now)],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Deletes records of certificates that expired before `cutoff`; returns how many.
    /// Run it now and then (e.g. daily with `cutoff = now - 7 days`) to bound the table.
    pub fn prune_issued(&self, cutoff: SystemTime) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            Ok(c.execute(
                "DELETE FROM issued_certs WHERE not_after < ?1",
                [to_unix(cutoff)],
            )?)
        })
    }
}
