//! The compiled policy set: policies indexed by the destinations they select, so that
//! finding the policies for a request costs a hash lookup plus one lookup per segment of
//! the destination's SPIFFE ID path, however many policies the mesh has.
//!
//! Index:
//! * exact selectors (`spiffe://td/ns/prod/sa/api`): a map from the SPIFFE ID;
//! * wildcard selectors (`spiffe://td/ns/prod/*`): a map from trust domain to a map from
//!   path prefix (`/ns/prod/`); a destination `/ns/prod/sa/api` looks up
//!   `/ns/prod/sa/`, `/ns/prod/`, `/ns/` and `/`.
//!
//! **Order.** Selecting policies are visited exact selectors first, then wildcards from
//! the longest prefix to the shortest, and by name within each group. The order never
//! changes a verdict (any matching DENY rule denies; any matching ALLOW rule allows),
//! only which policy a decision names when several match.

use std::collections::HashMap;

use spiffe::{SpiffeId, TrustDomain};

use crate::identity::IdSelector;
use crate::mesh_default::MeshDefault;
use crate::policy::Policy;

/// A compiled, immutable set of policies plus the mesh default: what the proxy swaps in
/// atomically on each update and evaluates every connection and request against.
#[derive(Debug, Clone)]
pub struct PolicySet {
    policies: Vec<Policy>,
    exact: HashMap<SpiffeId, Vec<usize>>,
    prefixes: HashMap<TrustDomain, HashMap<String, Vec<usize>>>,
    default: MeshDefault,
    version: u64,
}

impl PolicySet {
    /// Indexes `policies` for evaluation, with `default` for unselected destinations.
    ///
    /// Policies are expected to have unique names ([`crate::parse_documents`] enforces
    /// it within one apply). If two share a name anyway, both are kept and enforced:
    /// dropping one could drop a DENY.
    pub fn compile(policies: Vec<Policy>, default: MeshDefault) -> Self {
        let mut exact: HashMap<SpiffeId, Vec<usize>> = HashMap::new();
        let mut prefixes: HashMap<TrustDomain, HashMap<String, Vec<usize>>> = HashMap::new();
        for (index, policy) in policies.iter().enumerate() {
            match &policy.selector().workloads {
                IdSelector::Exact(id) => exact.entry(id.clone()).or_default().push(index),
                IdSelector::Prefix(prefix) => prefixes
                    .entry(prefix.trust_domain().clone())
                    .or_default()
                    .entry(prefix.path().to_owned())
                    .or_default()
                    .push(index),
            }
        }
        let by_name = |bucket: &mut Vec<usize>| {
            bucket.sort_by(|&a, &b| policies[a].name().cmp(policies[b].name()));
        };
        exact.values_mut().for_each(by_name);
        prefixes
            .values_mut()
            .flat_map(HashMap::values_mut)
            .for_each(by_name);
        Self {
            policies,
            exact,
            prefixes,
            default,
            version: 0,
        }
    }

    /// Sets the version the control plane gave this set (reported in acks and logs).
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The version given by [`with_version`](Self::with_version) (0 if none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The mesh default for destinations no ALLOW policy selects.
    pub fn mesh_default(&self) -> MeshDefault {
        self.default
    }

    /// Every policy, in the order given to [`compile`](Self::compile).
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The names of the policies selecting `destination` on `port`, in evaluation order.
    pub fn selects(&self, destination: &SpiffeId, port: u16) -> Vec<&str> {
        self.selecting(destination)
            .filter(|p| p.selector().selects_port(port))
            .map(Policy::name)
            .collect()
    }

    /// The policies selecting `destination` on any port, in evaluation order: what the
    /// control plane sends to that workload's proxy.
    pub fn policies_for(&self, destination: &SpiffeId) -> Vec<&Policy> {
        self.selecting(destination).collect()
    }

    /// The policies whose selector matches `destination` (ports not considered), in
    /// evaluation order, without allocating.
    pub(crate) fn selecting<'s>(
        &'s self,
        destination: &SpiffeId,
    ) -> impl Iterator<Item = &'s Policy> {
        let exact = self.exact.get(destination).into_iter().flatten();
        let path = destination.path();
        let wildcard = self
            .prefixes
            .get(destination.trust_domain())
            .into_iter()
            .flat_map(move |by_prefix| {
                // Deepest prefix first: `/ns/prod/sa/`, `/ns/prod/`, `/ns/`, `/`.
                path.rmatch_indices('/')
                    .filter_map(move |(i, _)| by_prefix.get(&path[..=i]))
                    .flatten()
            });
        exact.chain(wildcard).map(|&index| &self.policies[index])
    }
}

/// An empty set with the default mesh default (`allow-authenticated`).
impl Default for PolicySet {
    fn default() -> Self {
        Self::compile(Vec::new(), MeshDefault::default())
    }
}
