//! Authorization policy on the control plane: validation, versioned atomic storage,
//! Explain, and the compiled set every proxy session streams from.
//!
//! The engine itself (model, validation, evaluation) is the `ferrule-policy` crate, the
//! same code the proxies enforce with, so Explain answers exactly what a proxy decides.
//!
//! Policies come from two sources that make one set under one version sequence:
//! * operators (`ferrulectl policy apply`), stored in the store, named by DNS-1123 labels;
//! * Kubernetes `AuthorizationPolicy` resources (`--k8s-watch`, see `kubernetes`), kept
//!   in memory (the API server is their source of truth and is re-listed at start-up),
//!   named `k8s/<namespace>/<name>`. Operators can neither apply nor delete such names;
//!   changes are audited as made by `kubernetes`.

mod kubernetes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ferrule_policy::{DocumentError, KUBERNETES_NAME_PREFIX, MeshDefault, Policy, PolicySet};
use spiffe::SpiffeId;
use tokio::sync::watch;

use crate::store::{ApplyOutcome, DeleteError, Store, StoreError, StoredPolicy};

/// The policy set in force and its version.
pub struct PolicyState {
    /// Compiled policies; `version()` is the policy-set version.
    pub set: PolicySet,
    /// Metadata per policy name (for policies read from Kubernetes, `updated_by` is
    /// `kubernetes` and `version` the policy-set version at which they last changed).
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
    /// The policy is read from a Kubernetes resource: change or delete the resource.
    #[error(
        "policy {0:?} is read from a Kubernetes AuthorizationPolicy resource; change or delete \
         the resource instead"
    )]
    Managed(String),
}

/// The control plane's policy service (shared as `Arc<PolicyService>`).
pub struct PolicyService {
    store: Arc<Store>,
    default: MeshDefault,
    tx: watch::Sender<Arc<PolicyState>>,
    /// Policies read from Kubernetes resources, by name (`k8s/<namespace>/<name>`).
    external: Mutex<BTreeMap<String, ExternalPolicy>>,
    /// Whether the set is complete: false from [`Self::await_kubernetes`] until the
    /// Kubernetes resources have been listed once. Proxies get no policy before.
    complete: watch::Sender<bool>,
}

/// A policy read from a Kubernetes resource, with the metadata the store keeps for
/// stored ones.
#[derive(Debug, Clone)]
struct ExternalPolicy {
    policy: Policy,
    json: String,
    version: u64,
    updated_at: SystemTime,
}

impl PolicyService {
    /// Loads the stored policies and compiles them.
    pub fn open(store: Arc<Store>, default: MeshDefault) -> Result<Self, PolicyError> {
        let state = load(&store, default, &BTreeMap::new())?;
        Ok(Self {
            store,
            default,
            tx: watch::Sender::new(Arc::new(state)),
            external: Mutex::new(BTreeMap::new()),
            complete: watch::Sender::new(true),
        })
    }

    /// Marks the set incomplete until the Kubernetes resources have been listed once
    /// (`--k8s-watch`): a proxy given the set without them could be missing a DENY.
    pub fn await_kubernetes(&self) {
        self.complete.send_replace(false);
    }

    /// Waits until the set is complete (at once unless [`Self::await_kubernetes`] was
    /// called and the first listing has not finished).
    pub async fn wait_complete(&self) {
        let mut rx = self.complete.subscribe();
        let _ = rx.wait_for(|c| *c).await;
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
        if let Some(p) = policies
            .iter()
            .find(|p| p.name().starts_with(KUBERNETES_NAME_PREFIX))
        {
            return Err(PolicyError::Managed(p.name().to_string()));
        }
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
        if let Some(name) = names.iter().find(|n| n.starts_with(KUBERNETES_NAME_PREFIX)) {
            return Err(PolicyError::Managed(name.clone()));
        }
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
        // Under the lock that external changes hold while they record their version
        // and swap in: the version read and the external policies are consistent.
        let state = {
            let external = self.external.lock().unwrap_or_else(|p| p.into_inner());
            Arc::new(load(&self.store, self.default, &external)?)
        };
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

fn load(
    store: &Store,
    default: MeshDefault,
    external: &BTreeMap<String, ExternalPolicy>,
) -> Result<PolicyState, PolicyError> {
    let version = store.policy_version()?;
    let mut meta = store.load_policies()?;
    let mut policies = Vec::with_capacity(meta.len());
    for m in &meta {
        let p: Policy = serde_json::from_str(&m.json).map_err(|e| PolicyError::Corrupt {
            name: m.name.clone(),
            reason: e.to_string(),
        })?;
        policies.push(p);
    }
    for (name, e) in external {
        policies.push(e.policy.clone());
        meta.push(StoredPolicy {
            name: name.clone(),
            json: e.json.clone(),
            version: e.version,
            updated_at: e.updated_at,
            updated_by: kubernetes::WHO.to_string(),
        });
    }
    Ok(PolicyState {
        set: PolicySet::compile(policies, default).with_version(version),
        meta,
    })
}
