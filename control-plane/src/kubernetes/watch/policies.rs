//! `AuthorizationPolicy` resources (`ferrule.dev/v1alpha1`) → the policy service.
//!
//! A resource's `spec` is the `spec` of a policy document (see `ferrule_policy`); the
//! document is rebuilt from it with the resource's name and namespace and validated by
//! the same code as `ferrulectl apply`, then named `k8s/<namespace>/<name>` so it can
//! collide neither with an operator's policy nor with a namespace's namesake.
//!
//! **Namespaces scope policies.** A resource may only select workloads of its own
//! namespace (`spiffe://<td>/ns/<namespace>/...`, exact or prefix): whoever may create
//! policies in one namespace must not be able to open, or close, another namespace's
//! workloads. Only resources in the root namespace (the control plane's, by default
//! `ferrule-system`) may select anything, like an operator's policy.
//!
//! **Invalid resources** are never applied, not even in part: each is logged once per
//! change with every reason. If the resource held a valid policy before, that version
//! stays in force (as when `ferrulectl apply` refuses a file: a typo in a DENY policy
//! must not lift the DENY); a resource that was never valid has no policy. A control
//! plane that restarts has no previous version to keep. The
//! `ferrule_cp_k8s_invalid_objects` gauge counts them.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrule_policy::{API_VERSION, IdSelector, KIND, KUBERNETES_NAME_PREFIX, Policy};
use serde::Deserialize;
use spiffe::TrustDomain;

use super::wire::{Object, ObjectMeta};
use super::{Sink, SinkError};
use crate::policy::PolicyService;

/// An `AuthorizationPolicy` resource: metadata and the raw `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicyResource {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: serde_json::Value,
}

impl Object for PolicyResource {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// `k8s/<namespace>/<name>`: the policy name of a resource.
pub fn policy_name(meta: &ObjectMeta) -> String {
    format!("{KUBERNETES_NAME_PREFIX}{}/{}", meta.namespace, meta.name)
}

/// The validated policy of `resource`, or every reason it is invalid.
pub fn policy_from_resource(
    resource: &PolicyResource,
    trust_domain: &TrustDomain,
    root_namespace: &str,
) -> Result<Policy, Vec<String>> {
    let meta = &resource.metadata;
    let document = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": { "name": meta.name, "namespace": meta.namespace },
        "spec": resource.spec,
    });
    // The policy parser reads YAML (of which this JSON is a subset): the same
    // validation, with field paths, as `ferrulectl apply`.
    let yaml = serde_yaml_ng::to_string(&document).map_err(|e| vec![e.to_string()])?;
    let mut policies = ferrule_policy::parse_documents(&yaml)
        .map_err(|errors| errors.iter().map(field_error).collect::<Vec<_>>())?;
    let Some(policy) = policies.pop().filter(|_| policies.is_empty()) else {
        return Err(vec!["not exactly one policy document".into()]);
    };
    if meta.namespace != root_namespace {
        check_scope(&policy, trust_domain, &meta.namespace)?;
    }
    // Rename to the Kubernetes key; deserialising validates the document again.
    let mut json = serde_json::to_value(&policy).map_err(|e| vec![e.to_string()])?;
    json["metadata"]["name"] = serde_json::Value::String(policy_name(meta));
    serde_json::from_value(json).map_err(|e| vec![format!("metadata.name: {e}")])
}

fn field_error(e: &ferrule_policy::DocumentError) -> String {
    if e.field.is_empty() {
        e.reason.clone()
    } else {
        format!("{}: {}", e.field, e.reason)
    }
}

/// A namespaced resource selects only its namespace's workloads.
fn check_scope(policy: &Policy, td: &TrustDomain, namespace: &str) -> Result<(), Vec<String>> {
    let scope = format!("/ns/{namespace}/");
    let (selector_td, path) = match &policy.selector().workloads {
        IdSelector::Exact(id) => (id.trust_domain().clone(), format!("{}/", id.path())),
        IdSelector::Prefix(p) => (p.trust_domain().clone(), p.path().to_string()),
    };
    if &selector_td == td && path.starts_with(&scope) {
        Ok(())
    } else {
        Err(vec![format!(
            "spec.selector.spiffeId: {} is outside namespace {namespace:?}: a policy in a \
             namespace selects only spiffe://{td}/ns/{namespace}/... (only the root \
             namespace's policies may select other workloads)",
            policy.selector().workloads
        )])
    }
}

/// Applies resources to the policy service.
pub struct PolicySink {
    policies: Arc<PolicyService>,
    trust_domain: TrustDomain,
    root_namespace: String,
    /// Invalid resources by policy name, with their resource version.
    invalid: BTreeMap<String, String>,
}

impl PolicySink {
    /// A sink feeding `policies`.
    pub fn new(
        policies: Arc<PolicyService>,
        trust_domain: TrustDomain,
        root_namespace: String,
    ) -> Self {
        Self {
            policies,
            trust_domain,
            root_namespace,
            invalid: BTreeMap::new(),
        }
    }

    /// Validates `resource`; on failure logs it (once per resource version), records it
    /// as invalid and returns the previous valid version, if any.
    fn convert(&mut self, resource: &PolicyResource) -> Option<Policy> {
        let name = policy_name(&resource.metadata);
        match policy_from_resource(resource, &self.trust_domain, &self.root_namespace) {
            Ok(p) => {
                self.invalid.remove(&name);
                Some(p)
            }
            Err(reasons) => {
                let rv = resource.metadata.resource_version.clone();
                let previous = self.policies.kubernetes_policy(&name);
                if self.invalid.get(&name) != Some(&rv) {
                    tracing::warn!(
                        policy = %name,
                        resource_version = %rv,
                        errors = %reasons.join("; "),
                        kept_previous = previous.is_some(),
                        "invalid AuthorizationPolicy resource not applied"
                    );
                }
                self.invalid.insert(name, rv);
                previous
            }
        }
    }
}

impl Sink for PolicySink {
    type Object = PolicyResource;
    const RESOURCE: &'static str = "authorizationpolicies";
    const PATH: &'static str = "/apis/ferrule.dev/v1alpha1/authorizationpolicies";

    fn replace(&mut self, resources: Vec<PolicyResource>) -> Result<(), SinkError> {
        let listed: std::collections::BTreeSet<String> =
            resources.iter().map(|r| policy_name(&r.metadata)).collect();
        self.invalid.retain(|name, _| listed.contains(name));
        let policies: Vec<Policy> = resources.iter().filter_map(|r| self.convert(r)).collect();
        let n = policies.len();
        if let Some(version) = self.policies.replace_kubernetes(policies)? {
            tracing::info!(
                resource = Self::RESOURCE,
                version,
                policies = n,
                invalid = self.invalid.len(),
                "policies reconciled with the resource list"
            );
        }
        Ok(())
    }

    fn upsert(&mut self, resource: PolicyResource) -> Result<(), SinkError> {
        if let Some(policy) = self.convert(&resource) {
            self.policies.upsert_kubernetes(policy)?;
        }
        Ok(())
    }

    fn remove(&mut self, resource: PolicyResource) -> Result<(), SinkError> {
        let name = policy_name(&resource.metadata);
        self.invalid.remove(&name);
        self.policies.remove_kubernetes(&name)?;
        Ok(())
    }

    fn tracked(&self) -> (usize, usize) {
        (self.policies.kubernetes_count(), self.invalid.len())
    }
}
