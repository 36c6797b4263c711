//! The control plane's Prometheus metrics (`ferrule_cp_*`), served on `/metrics` of the
//! metrics listener together with `/healthz`.
//!
//! Certificate material that can expire is always visible: every root and issuer has an
//! expiry timestamp and an `expiring_soon` flag that turns 1 fourteen days ahead (the
//! alert rules in `deploy/prometheus/` fire on it).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ca::AuthorityStatus;

/// How far ahead long-lived material (roots, issuers) counts as expiring soon.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// `attestation` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssueLabels {
    /// `join_token` or `renewal`.
    pub attestation: &'static str,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Stable reason label.
    pub reason: String,
}

/// Labels of a piece of CA material.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaLabels {
    /// Authority id.
    pub authority: String,
    /// `root` or `issuer`.
    pub kind: &'static str,
    /// `active`, `prepared`, `standby`.
    pub state: String,
}

/// `resource` label of the Kubernetes watchers (`pods`, `authorizationpolicies`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

/// Labels of a Kubernetes watch restart.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchRestartLabels {
    pub resource: &'static str,
    /// `closed` (the server's timeout), `gone` (410: relist), `error_event`,
    /// `watch_failed`, `stream_error`, `idle`, `malformed_line`, `undecodable_object`,
    /// `unknown_event`, `apply_failed`, `list_failed`.
    pub reason: &'static str,
}

/// Labels of a Kubernetes watch event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchEventLabels {
    pub resource: &'static str,
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`.
    pub event: &'static str,
}

/// Every control-plane metric.
#[derive(Clone)]
pub struct Metrics {
    pub issued: Family<IssueLabels, Counter>,
    pub issuance_duration: Histogram,
    pub issuance_failures: Family<ReasonLabels, Counter>,
    pub connected_proxies: Gauge,
    pub registered_workloads: Gauge,
    pub bundle_version: Gauge,
    pub policy_version: Gauge,
    pub proxies_on_stale_policy: Gauge,
    pub ca_expiry: Family<CaLabels, Gauge>,
    pub ca_expiring_soon: Family<CaLabels, Gauge>,
    pub k8s_watch_restarts: Family<WatchRestartLabels, Counter>,
    pub k8s_watch_events: Family<WatchEventLabels, Counter>,
    pub k8s_last_sync: Family<ResourceLabels, Gauge>,
    pub k8s_objects: Family<ResourceLabels, Gauge>,
    pub k8s_invalid_objects: Family<ResourceLabels, Gauge>,
    registry: Arc<Registry>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("ferrule_cp");
        let m = Self {
            issued: Family::default(),
            issuance_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            issuance_failures: Family::default(),
            connected_proxies: Gauge::default(),
            registered_workloads: Gauge::default(),
            bundle_version: Gauge::default(),
            policy_version: Gauge::default(),
            proxies_on_stale_policy: Gauge::default(),
            ca_expiry: Family::default(),
            ca_expiring_soon: Family::default(),
            k8s_watch_restarts: Family::default(),
            k8s_watch_events: Family::default(),
            k8s_last_sync: Family::default(),
            k8s_objects: Family::default(),
            k8s_invalid_objects: Family::default(),
            registry: Arc::new(Registry::default()),
        };
        r.register(
            "certificates_issued",
            "Workload certificates issued, by attestation",
            m.issued.clone(),
        );
        r.register(
            "issuance_duration_seconds",
            "Time to attest and sign a certificate",
            m.issuance_duration.clone(),
        );
        r.register(
            "issuance_failures",
            "Refused certificate requests by reason (attestation failures, bad CSRs, refused renewals)",
            m.issuance_failures.clone(),
        );
        r.register(
            "connected_proxies",
            "Proxies with an open mesh session",
            m.connected_proxies.clone(),
        );
        r.register(
            "registered_workloads",
            "Workloads in the discovery registry",
            m.registered_workloads.clone(),
        );
        r.register(
            "bundle_version",
            "Version of the trust bundle",
            m.bundle_version.clone(),
        );
        r.register(
            "policy_version",
            "Version of the authorization policy set",
            m.policy_version.clone(),
        );
        r.register(
            "proxies_on_stale_policy",
            "Connected proxies that have not acknowledged the current policy version",
            m.proxies_on_stale_policy.clone(),
        );
        r.register(
            "ca_expiry_timestamp_seconds",
            "notAfter of every root and issuer in the trust bundle (Unix seconds)",
            m.ca_expiry.clone(),
        );
        r.register(
            "ca_expiring_soon",
            "1 when a root or issuer expires within 14 days",
            m.ca_expiring_soon.clone(),
        );
        r.register(
            "k8s_watch_restarts",
            "Kubernetes watches ended and restarted (or relisted), by resource and reason",
            m.k8s_watch_restarts.clone(),
        );
        r.register(
            "k8s_watch_events",
            "Kubernetes watch events received, by resource and type",
            m.k8s_watch_events.clone(),
        );
        r.register(
            "k8s_last_sync_timestamp_seconds",
            "When each Kubernetes watcher last heard from the API server (a list, an event or a bookmark; Unix seconds)",
            m.k8s_last_sync.clone(),
        );
        r.register(
            "k8s_objects",
            "Objects read from Kubernetes in force: meshed pods in discovery, Services whose ClusterIPs are in discovery, AuthorizationPolicy resources in the policy set",
            m.k8s_objects.clone(),
        );
        r.register(
            "k8s_invalid_objects",
            "AuthorizationPolicy resources that are invalid and not applied (a previous valid version may be in force); Services whose meshed pods have several identities (ClusterIPs not in discovery)",
            m.k8s_invalid_objects.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts a Kubernetes watch restart.
    pub fn k8s_watch_restart(&self, resource: &'static str, reason: &'static str) {
        self.k8s_watch_restarts
            .get_or_create(&WatchRestartLabels { resource, reason })
            .inc();
    }

    /// Counts a Kubernetes watch event.
    pub fn k8s_watch_event(&self, resource: &'static str, event: &'static str) {
        self.k8s_watch_events
            .get_or_create(&WatchEventLabels { resource, event })
            .inc();
    }

    /// Records that a Kubernetes watcher is in step with the API server now, holding
    /// `objects` in force and `invalid` refused ones.
    pub fn k8s_synced(&self, resource: &'static str, objects: usize, invalid: usize) {
        let labels = ResourceLabels { resource };
        self.k8s_last_sync
            .get_or_create(&labels)
            .set(unix(SystemTime::now()));
        self.k8s_objects.get_or_create(&labels).set(objects as i64);
        self.k8s_invalid_objects
            .get_or_create(&labels)
            .set(invalid as i64);
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a refused certificate request.
    pub fn issuance_failure(&self, reason: impl Into<String>) {
        self.issuance_failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Publishes the expiry of every authority's root and issuer, and logs a warning for
    /// each within [`EXPIRY_WARNING`]. Returns the (authority, kind) pairs expiring soon.
    pub fn observe_ca(
        &self,
        authorities: &[AuthorityStatus],
        now: SystemTime,
    ) -> Vec<(String, &'static str)> {
        self.ca_expiry.clear();
        self.ca_expiring_soon.clear();
        let mut soon = Vec::new();
        for a in authorities {
            for (kind, not_after) in [("root", a.root_not_after), ("issuer", a.issuer_not_after)] {
                let labels = CaLabels {
                    authority: a.id.clone(),
                    kind,
                    state: a.state.as_str().to_string(),
                };
                self.ca_expiry.get_or_create(&labels).set(unix(not_after));
                let expiring = not_after <= now + EXPIRY_WARNING;
                self.ca_expiring_soon
                    .get_or_create(&labels)
                    .set(i64::from(expiring));
                if expiring {
                    soon.push((a.id.clone(), kind));
                }
            }
        }
        soon
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Unix seconds.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
