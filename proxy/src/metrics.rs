//! The proxy's Prometheus metrics, served on the admin endpoint's `/metrics`.
//!
//! Naming: `ferrule_proxy_*`. Labels stay bounded: directions, outcomes and reasons are
//! fixed sets; `peer` is a SPIFFE ID (one per workload identity in the mesh, the same
//! cardinality Linkerd and Istio accept); `policy`/`rule` come from the operator's
//! documents.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `direction` + `peer` + `tls` labels of a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The peer's SPIFFE ID, `unauthenticated`, or `unmeshed`.
    pub peer: String,
    /// `mtls` or `plaintext`.
    pub tls: &'static str,
}

/// `direction` + `reason` labels of a refused connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Stable reason label (e.g. `unknown_ca`, `identity_mismatch`, `timeout`).
    pub reason: &'static str,
}

/// Labels of an authorization decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Deciding policy (`mesh-default` when none did).
    pub policy: String,
    /// Rule index within the policy, or empty.
    pub rule: String,
    /// Stable reason label.
    pub reason: &'static str,
}

/// Labels of a completed mesh handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Negotiated hop protocol: `ferrule/1` (one application connection) or `ferrule/2`
    /// (pooled, many).
    pub alpn: &'static str,
}

/// `direction` label only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
}

/// `result` / `reason` labels of a certificate renewal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    /// `success` or `failure`.
    pub result: &'static str,
    /// Failure reason, or empty.
    pub reason: &'static str,
}

/// Labels of an HTTP request on an `http` port.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Application port.
    pub port: u16,
    /// Status class: `2xx`, `3xx`, `4xx`, `5xx`.
    pub status: &'static str,
}

/// Every metric of the proxy.
#[derive(Clone)]
pub struct Metrics {
    pub connections_opened: Family<ConnLabels, Counter>,
    pub connections_closed: Family<ConnLabels, Counter>,
    pub connections_active: Family<DirLabels, Gauge>,
    pub bytes_received: Family<ConnLabels, Counter>,
    pub bytes_sent: Family<ConnLabels, Counter>,
    pub connection_failures: Family<FailureLabels, Counter>,
    pub mesh_handshakes: Family<HandshakeLabels, Counter>,
    pub authz_decisions: Family<DecisionLabels, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram>,
    pub cert_expiry: Gauge,
    pub cert_renewals: Family<RenewalLabels, Counter>,
    pub control_plane_connected: Gauge,
    pub policy_version: Gauge,
    pub discovery_version: Gauge,
    registry: Arc<Registry>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("ferrule_proxy");
        let m = Self {
            connections_opened: Family::default(),
            connections_closed: Family::default(),
            connections_active: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            connection_failures: Family::default(),
            mesh_handshakes: Family::default(),
            authz_decisions: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            cert_expiry: Gauge::default(),
            cert_renewals: Family::default(),
            control_plane_connected: Gauge::default(),
            policy_version: Gauge::default(),
            discovery_version: Gauge::default(),
            registry: Arc::new(Registry::default()),
        };
        r.register(
            "connections_opened",
            "Connections accepted and forwarded",
            m.connections_opened.clone(),
        );
        r.register(
            "connections_closed",
            "Forwarded connections that ended",
            m.connections_closed.clone(),
        );
        r.register(
            "connections_active",
            "Connections currently open",
            m.connections_active.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes received from the connection's initiator",
            m.bytes_received.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes sent back to the connection's initiator",
            m.bytes_sent.clone(),
        );
        r.register(
            "connection_failures",
            "Connections refused or failed, by reason (handshake failures: unknown_ca, identity_mismatch, expired, no_client_certificate, protocol, timeout, ...)",
            m.connection_failures.clone(),
        );
        r.register(
            "mesh_handshakes",
            "Completed mTLS handshakes of mesh connections, by hop protocol (a ferrule/2 connection carries many application connections)",
            m.mesh_handshakes.clone(),
        );
        r.register(
            "authz_decisions",
            "Authorization decisions by policy, rule and reason",
            m.authz_decisions.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests on http ports",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency on http ports",
            m.http_duration.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the proxy's current certificate (Unix seconds; 0 = none)",
            m.cert_expiry.clone(),
        );
        r.register(
            "certificate_renewals",
            "Certificate issuance attempts by result",
            m.cert_renewals.clone(),
        );
        r.register(
            "control_plane_connected",
            "1 while the control-plane session is open",
            m.control_plane_connected.clone(),
        );
        r.register(
            "policy_version",
            "Version of the policy in force",
            m.policy_version.clone(),
        );
        r.register(
            "discovery_version",
            "Version of the discovery data in force",
            m.discovery_version.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a refused/failed connection.
    pub fn failure(&self, direction: &'static str, reason: &'static str) {
        self.connection_failures
            .get_or_create(&FailureLabels { direction, reason })
            .inc();
    }

    /// Counts a completed mesh handshake that negotiated `alpn`.
    pub fn handshake(&self, direction: &'static str, alpn: Option<&[u8]>) {
        let alpn = match alpn {
            Some(a) if a == crate::hop::ALPN_MUX => "ferrule/2",
            _ => "ferrule/1",
        };
        self.mesh_handshakes
            .get_or_create(&HandshakeLabels { direction, alpn })
            .inc();
    }

    /// Counts an authorization decision.
    pub fn decision(&self, d: &crate::policy::Decision) {
        self.authz_decisions
            .get_or_create(&DecisionLabels {
                decision: if d.allow { "allow" } else { "deny" },
                policy: d.policy.clone(),
                rule: d.rule.map(|r| r.to_string()).unwrap_or_default(),
                reason: d.reason,
            })
            .inc();
    }

    /// Tracks a forwarded connection; the guard records close and bytes.
    pub fn open(&self, labels: ConnLabels) -> ConnMetrics {
        self.open_with(self.conn_handles(&labels))
    }

    /// The metrics of connections with `labels`, resolved once (see [`ConnHandles`]).
    pub fn conn_handles(&self, labels: &ConnLabels) -> ConnHandles {
        ConnHandles {
            opened: self.connections_opened.get_or_create(labels).clone(),
            closed: self.connections_closed.get_or_create(labels).clone(),
            received: self.bytes_received.get_or_create(labels).clone(),
            sent: self.bytes_sent.get_or_create(labels).clone(),
            active: self
                .connections_active
                .get_or_create(&DirLabels {
                    direction: labels.direction,
                })
                .clone(),
        }
    }

    /// Tracks a forwarded connection whose metrics were resolved already.
    pub fn open_with(&self, handles: ConnHandles) -> ConnMetrics {
        handles.opened.inc();
        handles.active.inc();
        ConnMetrics { handles }
    }
}

/// The counters of one label set (direction, peer, tls), resolved once: counting a
/// connection through them costs a few atomic operations instead of hashing the labels
/// five times. A pooled mesh connection resolves them once for all its streams.
#[derive(Clone, Debug)]
pub struct ConnHandles {
    opened: Counter,
    closed: Counter,
    received: Counter,
    sent: Counter,
    active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A live connection's metrics; records the close when dropped.
pub struct ConnMetrics {
    handles: ConnHandles,
}

impl ConnMetrics {
    /// Adds transferred bytes (`received` from the initiator, `sent` back to it).
    pub fn bytes(&self, received: u64, sent: u64) {
        self.handles.received.inc_by(received);
        self.handles.sent.inc_by(sent);
    }
}

impl Drop for ConnMetrics {
    fn drop(&mut self) {
        self.handles.closed.inc();
        self.handles.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_tracks_active_connections() {
        let m = Metrics::new();
        let c = m.open(ConnLabels {
            direction: "inbound",
            peer: "spiffe://td/a".into(),
            tls: "mtls",
        });
        c.bytes(10, 20);
        m.failure("inbound", "unknown_ca");
        let text = m.encode();
        assert!(
            text.contains("ferrule_proxy_connections_active{direction=\"inbound\"} 1"),
            "{text}"
        );
        drop(c);
        let text = m.encode();
        assert!(
            text.contains("ferrule_proxy_connections_active{direction=\"inbound\"} 0"),
            "{text}"
        );
        assert!(text.contains("ferrule_proxy_connections_closed_total{direction=\"inbound\",peer=\"spiffe://td/a\",tls=\"mtls\"} 1"), "{text}");
        assert!(text.contains("ferrule_proxy_received_bytes_total{direction=\"inbound\",peer=\"spiffe://td/a\",tls=\"mtls\"} 10"), "{text}");
        assert!(text.contains("ferrule_proxy_connection_failures_total{direction=\"inbound\",reason=\"unknown_ca\"} 1"), "{text}");
    }
}
