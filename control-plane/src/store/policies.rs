//! Persistence of authorization policies and the audit log.
//!
//! Policies are stored as validated JSON documents keyed by name; the policy-set version
//! (`meta.policy_version`) increases on every change and is what proxies acknowledge.
//! Every administrative change appends an audit row in the same transaction as the change.

use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, from_unix, meta_get, meta_set, to_unix};

const META_POLICY_VERSION: &str = "policy_version";

/// A stored policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub name: String,
    /// The validated document as JSON.
    pub json: String,
    /// Policy-set version at which it last changed.
    pub version: u64,
    pub updated_at: SystemTime,
    pub updated_by: String,
}

/// What an apply changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub version: u64,
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// One audit-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: SystemTime,
    pub who: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Deleting a policy that does not exist.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No policy with this name; nothing was deleted.
    #[error("no policy named {0:?}; nothing deleted")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn version(conn: &rusqlite::Connection) -> Result<u64, StoreError> {
    match meta_get(conn, META_POLICY_VERSION)? {
        Some(v) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("meta.policy_version = {v:?}"))),
        None => Ok(0),
    }
}

fn audit_row(
    conn: &rusqlite::Connection,
    now: SystemTime,
    who: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit_log (at, who, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![to_unix(now), who, action, target, detail],
    )?;
    Ok(())
}

impl Store {
    /// The current policy-set version (0: never changed).
    pub fn policy_version(&self) -> Result<u64, StoreError> {
        self.with_conn(version)
    }

    /// Every stored policy, by name.
    pub fn load_policies(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT name, document, version, updated_at, updated_by FROM policies ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(StoredPolicy {
                    name: r.get(0)?,
                    json: r.get(1)?,
                    version: r.get::<_, i64>(2)? as u64,
                    updated_at: from_unix(r.get(3)?),
                    updated_by: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Stores `docs` (name, JSON) atomically under one new version if anything changed.
    pub fn apply_policies(
        &self,
        docs: &[(String, String)],
        who: &str,
        now: SystemTime,
    ) -> Result<ApplyOutcome, StoreError> {
        self.immediate(|tx| {
            let mut out = ApplyOutcome {
                version: version(tx)?,
                ..Default::default()
            };
            let next = out.version + 1;
            for (name, json) in docs {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT document FROM policies WHERE name = ?1",
                        [name],
                        |r| r.get(0),
                    )
                    .optional()?;
                match existing {
                    Some(old) if &old == json => out.unchanged.push(name.clone()),
                    other => {
                        tx.execute(
                            "INSERT INTO policies (name, document, version, updated_at, updated_by)
                             VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT(name) DO UPDATE SET document = excluded.document,
                               version = excluded.version, updated_at = excluded.updated_at,
                               updated_by = excluded.updated_by",
                            params![name, json, next as i64, to_unix(now), who],
                        )?;
                        let action = if other.is_some() {
                            "policy.update"
                        } else {
                            "policy.create"
                        };
                        audit_row(tx, now, who, action, name, json)?;
                        if other.is_some() {
                            out.updated.push(name.clone());
                        } else {
                            out.created.push(name.clone());
                        }
                    }
                }
            }
            if !out.created.is_empty() || !out.updated.is_empty() {
                meta_set(tx, META_POLICY_VERSION, &next.to_string())?;
                out.version = next;
            }
            Ok(out)
        })
    }

    /// Deletes every named policy atomically (all must exist); returns the new version.
    pub fn delete_policies(
        &self,
        names: &[String],
        who: &str,
        now: SystemTime,
    ) -> Result<u64, DeleteError> {
        self.immediate(|tx| {
            let next = version(tx)? + 1;
            for name in names {
                let n = tx
                    .execute("DELETE FROM policies WHERE name = ?1", [name])
                    .map_err(StoreError::from)?;
                if n == 0 {
                    return Err(DeleteError::NotFound(name.clone()));
                }
                audit_row(tx, now, who, "policy.delete", name, "")?;
            }
            meta_set(tx, META_POLICY_VERSION, &next.to_string())?;
            Ok(next)
        })
    }

    /// Records changes to policies kept outside the store (those read from Kubernetes
    /// resources): one new policy-set version for all of them, and one audit row per
    /// change (`(action, target, detail)`), atomically. Returns the new version.
    ///
    /// The version is shared with stored policies so that proxies see one increasing
    /// sequence whatever the source of a change, across restarts too.
    pub fn record_external_policy_changes(
        &self,
        who: &str,
        changes: &[(&str, &str, &str)],
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        self.immediate(|tx| {
            let next = version(tx)? + 1;
            for (action, target, detail) in changes {
                audit_row(tx, now, who, action, target, detail)?;
            }
            meta_set(tx, META_POLICY_VERSION, &next.to_string())?;
            Ok(next)
        })
    }

    /// Appends an audit row for a change made elsewhere (tokens, CA operations).
    pub fn audit(
        &self,
        who: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| audit_row(c, SystemTime::now(), who, action, target, detail))
    }

    /// The most recent `limit` audit rows, newest first.
    pub fn list_audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT at, who, action, target, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok(AuditEntry {
                    at: from_unix(r.get(0)?),
                    who: r.get(1)?,
                    action: r.get(2)?,
                    target: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let s = Store::open(&dir.path().join("data")).unwrap();
        (dir, s)
    }

    #[test]
    fn apply_is_versioned_atomic_and_audited() {
        let (_d, s) = store();
        let now = SystemTime::now();
        assert_eq!(s.policy_version().unwrap(), 0);
        let docs = vec![
            ("a".to_string(), "{\"x\":1}".to_string()),
            ("b".to_string(), "{}".to_string()),
        ];
        let out = s.apply_policies(&docs, "uid:0", now).unwrap();
        assert_eq!((out.version, out.created.len()), (1, 2));
        // Re-applying the same documents changes nothing.
        let out = s.apply_policies(&docs, "uid:0", now).unwrap();
        assert_eq!((out.version, out.unchanged.len()), (1, 2));
        let out = s
            .apply_policies(&[("a".to_string(), "{\"x\":2}".to_string())], "uid:1", now)
            .unwrap();
        assert_eq!(
            (out.version, out.updated.clone()),
            (2, vec!["a".to_string()])
        );
        // Deleting a missing policy deletes nothing.
        assert!(matches!(
            s.delete_policies(&["b".into(), "zzz".into()], "uid:0", now),
            Err(DeleteError::NotFound(_))
        ));
        assert_eq!(s.load_policies().unwrap().len(), 2);
        assert_eq!(s.delete_policies(&["b".into()], "uid:0", now).unwrap(), 3);
        let audit = s.list_audit(10).unwrap();
        let actions: Vec<_> = audit
            .iter()
            .map(|a| (a.action.as_str(), a.target.as_str(), a.who.as_str()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("policy.delete", "b", "uid:0"),
                ("policy.update", "a", "uid:1"),
                ("policy.create", "b", "uid:0"),
                ("policy.create", "a", "uid:0"),
            ]
        );
    }
}
