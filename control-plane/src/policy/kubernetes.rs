//! The Kubernetes side of [`PolicyService`]: the policies read from
//! `AuthorizationPolicy` resources by the `--k8s-watch` watcher
//! (`crate::kubernetes::watch::policies`), which replaces them wholesale after every
//! (re)list and changes them one by one on watch events.
//!
//! Each effective change is one new policy-set version, recorded in the store with an
//! audit row per policy (`who` = `kubernetes`) like an operator's apply, so proxies see
//! one increasing version sequence whichever source changed. Nothing is written when a
//! relist finds what is already in force.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ferrule_policy::{KUBERNETES_NAME_PREFIX, Policy};

use super::{ExternalPolicy, PolicyError, PolicyService};

/// The `who` of audit rows and of `updated_by` for policies read from Kubernetes.
pub(super) const WHO: &str = "kubernetes";

/// One change requested by the watcher.
enum Change {
    /// A complete listing: everything else is removed.
    Replace(Vec<Policy>),
    /// One resource added or modified.
    Upsert(Policy),
    /// One resource deleted (or no longer valid and without a previous version).
    Remove(String),
}

impl PolicyService {
    /// Replaces every Kubernetes policy with `policies`, the complete set after a
    /// (re)list, and marks the set complete (see [`Self::await_kubernetes`]). Returns the
    /// new version, or `None` when nothing changed.
    ///
    /// Names must start with `k8s/` (others are refused as an internal error).
    pub fn replace_kubernetes(&self, policies: Vec<Policy>) -> Result<Option<u64>, PolicyError> {
        self.change_kubernetes(Change::Replace(policies))
    }

    /// Adds or replaces one Kubernetes policy. Returns the new version, or `None` when
    /// the policy in force is identical.
    pub fn upsert_kubernetes(&self, policy: Policy) -> Result<Option<u64>, PolicyError> {
        self.change_kubernetes(Change::Upsert(policy))
    }

    /// Removes the Kubernetes policy `name` (`k8s/<namespace>/<name>`). Returns the new
    /// version, or `None` when there was no such policy.
    pub fn remove_kubernetes(&self, name: &str) -> Result<Option<u64>, PolicyError> {
        self.change_kubernetes(Change::Remove(name.to_string()))
    }

    /// The Kubernetes policy `name` in force, if any (the watcher keeps it when the
    /// resource is changed into an invalid document).
    pub fn kubernetes_policy(&self, name: &str) -> Option<Policy> {
        self.external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|e| e.policy.clone())
    }

    /// How many Kubernetes policies are in force.
    pub fn kubernetes_count(&self) -> usize {
        self.external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The names of the Kubernetes policies in force.
    pub fn kubernetes_names(&self) -> Vec<String> {
        self.external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn change_kubernetes(&self, change: Change) -> Result<Option<u64>, PolicyError> {
        let check = |p: &Policy| {
            if p.name().starts_with(KUBERNETES_NAME_PREFIX) {
                Ok(())
            } else {
                Err(PolicyError::Corrupt {
                    name: p.name().to_string(),
                    reason: "a policy read from Kubernetes must be named k8s/<namespace>/<name>"
                        .into(),
                })
            }
        };
        let complete = matches!(change, Change::Replace(_));
        let mut external = self.external.lock().unwrap_or_else(|p| p.into_inner());
        let mut desired: BTreeMap<String, Policy> = match &change {
            Change::Replace(_) => BTreeMap::new(),
            _ => external
                .iter()
                .map(|(k, e)| (k.clone(), e.policy.clone()))
                .collect(),
        };
        match change {
            Change::Replace(all) => {
                for p in all {
                    check(&p)?;
                    desired.insert(p.name().to_string(), p);
                }
            }
            Change::Upsert(p) => {
                check(&p)?;
                desired.insert(p.name().to_string(), p);
            }
            Change::Remove(name) => {
                desired.remove(&name);
            }
        }

        // (action, name, JSON) of every effective change.
        let mut changes: Vec<(&'static str, String, String)> = Vec::new();
        for name in external.keys() {
            if !desired.contains_key(name) {
                changes.push(("policy.delete", name.clone(), String::new()));
            }
        }
        let mut jsons = BTreeMap::new();
        for (name, p) in &desired {
            let json = serde_json::to_string(p).map_err(|e| PolicyError::Corrupt {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            match external.get(name) {
                Some(old) if old.json == json => {}
                Some(_) => changes.push(("policy.update", name.clone(), json.clone())),
                None => changes.push(("policy.create", name.clone(), json.clone())),
            }
            jsons.insert(name.clone(), json);
        }
        if changes.is_empty() {
            drop(external);
            if complete {
                self.complete.send_replace(true);
            }
            return Ok(None);
        }

        let now = SystemTime::now();
        let rows: Vec<(&str, &str, &str)> = changes
            .iter()
            .map(|(a, n, j)| (*a, n.as_str(), j.as_str()))
            .collect();
        let version = self.store.record_external_policy_changes(WHO, &rows, now)?;
        let changed: Vec<&str> = changes.iter().map(|(_, n, _)| n.as_str()).collect();
        let next = desired
            .into_iter()
            .map(|(name, policy)| {
                let json = jsons.remove(&name).unwrap_or_default();
                let entry = match external.get(&name) {
                    Some(old) if !changed.contains(&name.as_str()) => old.clone(),
                    _ => ExternalPolicy {
                        policy,
                        json,
                        version,
                        updated_at: now,
                    },
                };
                (name, entry)
            })
            .collect();
        *external = next;
        drop(external);
        for (action, name, _) in &changes {
            tracing::info!(version, %name, action, source = WHO, "policy changed");
        }
        self.reload()?;
        if complete {
            self.complete.send_replace(true);
        }
        Ok(Some(version))
    }
}

#[cfg(test)]
mod tests;
