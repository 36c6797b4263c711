//! Authorization policy on the control plane: validation, versioned atomic storage,
//! Explain, and the compiled set every proxy session streams from.
//!
//! The engine itself (model, validation, evaluation) is the `ferrule-policy` crate, the
//! same code the proxies enforce with, so Explain answers exactly what a proxy decides.

use std::sync::Arc;
use std::time::SystemTime;

use ferrule_policy::{DocumentError, MeshDefault, Policy, PolicySet};
use spiffe::SpiffeId;
use tokio::sync::watch;

use crate::store::{ApplyOutcome, DeleteError, Store, StoreError, StoredPolicy};

/// The policy set in force and its version.
pub struct PolicyState {
    /// Compiled policies; `version()` is the policy-set version.
    pub set: PolicySet,
    /// Storage metadata per policy name.
    pub meta: Vec<StoredPolicy>,
}

/// Why an apply or delete failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Documents failed validation; nothing was stored.
    #[error("{} invalid document(s)", .0.len())]
    Invalid(Vec<DocumentError>),
    /// Delete of an unknown policy; nothing was deleted.
    #[error(transparent)]
    NotFound(DeleteError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document no longer parses (store corrupted or engine downgraded).
    #[error("stored policy {name:?} is unreadable: {reason}")]
    Corrupt { name: String, reason: String },
}

/// The control plane's policy service (shared as `Arc<PolicyService>`).
pub struct PolicyService {
    store: Arc<Store>,
    default: MeshDefault,
    tx: watch::Sender<Arc<PolicyState>>,
}

impl PolicyService {
    /// Loads the stored policies and compiles them.
    pub fn open(store: Arc<Store>, default: MeshDefault) -> Result<Self, PolicyError> {
        let state = load(&store, default)?;
        Ok(Self {
            store,
            default,
            tx: watch::Sender::new(Arc::new(state)),
        })
    }

    /// The mesh default sent to proxies with their policy.
    pub fn mesh_default(&self) -> MeshDefault {
        self.default
    }

    /// The state in force.
    pub fn current(&self) -> Arc<PolicyState> {
        self.tx.borrow().clone()
    }

    /// Subscribes to changes (current state first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicyState>> {
        self.tx.subscribe()
    }

    /// Validates documents without storing anything.
    pub fn validate(yaml: &str) -> Result<Vec<Policy>, PolicyError> {
        ferrule_policy::parse_documents(yaml).map_err(PolicyError::Invalid)
    }

    /// Validates and stores every document atomically under one new version.
    pub fn apply(&self, yaml: &str, who: &str) -> Result<ApplyOutcome, PolicyError> {
        let policies = Self::validate(yaml)?;
        let docs = policies
            .iter()
            .map(|p| {
                serde_json::to_string(p)
                    .map(|j| (p.name().to_string(), j))
                    .map_err(|e| PolicyError::Corrupt {
                        name: p.name().to_string(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.store.apply_policies(&docs, who, SystemTime::now())?;
        if !out.created.is_empty() || !out.updated.is_empty() {
            self.reload()?;
        }
        Ok(out)
    }

    /// Deletes the named policies atomically.
    pub fn delete(&self, names: &[String], who: &str) -> Result<u64, PolicyError> {
        let v = self
            .store
            .delete_policies(names, who, SystemTime::now())
            .map_err(|e| match e {
                DeleteError::Store(s) => PolicyError::Store(s),
                other => PolicyError::NotFound(other),
            })?;
        self.reload()?;
        Ok(v)
    }

    fn reload(&self) -> Result<(), PolicyError> {
        let state = Arc::new(load(&self.store, self.default)?);
        let version = state.set.version();
        // Concurrent applies may reload out of order: never replace a newer state.
        let published = self.tx.send_if_modified(|cur| {
            if version > cur.set.version() {
                *cur = state.clone();
                true
            } else {
                false
            }
        });
        if published {
            tracing::info!(version, policies = state.meta.len(), "policy set updated");
        }
        Ok(())
    }

    /// The policy documents that apply to `destination`, as JSON, for its proxy.
    pub fn documents_for(state: &PolicyState, destination: &SpiffeId) -> Vec<String> {
        state
            .set
            .policies_for(destination)
            .into_iter()
            .filter_map(|p| serde_json::to_string(p).ok())
            .collect()
    }
}

fn load(store: &Store, default: MeshDefault) -> Result<PolicyState, PolicyError> {
    let version = store.policy_version()?;
    let meta = store.load_policies()?;
    let mut policies = Vec::with_capacity(meta.len());
    for m in &meta {
        let p: Policy = serde_json::from_str(&m.json).map_err(|e| PolicyError::Corrupt {
            name: m.name.clone(),
            reason: e.to_string(),
        })?;
        policies.push(p);
    }
    Ok(PolicyState {
        set: PolicySet::compile(policies, default).with_version(version),
        meta,
    })
}
