//! Which ports the kubelet connects to: the `httpGet`, `tcpSocket` and `grpc` probes and
//! `httpGet` lifecycle hooks of the pod's containers. They are exempted from inbound
//! capture (see the `inject` module docs for why, and what it costs).

use std::collections::BTreeMap;

use serde_json::Value;

/// One port the kubelet connects to, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePort {
    /// The port.
    pub port: u16,
    /// `<container>/<probe>`, e.g. `app/livenessProbe`.
    pub source: String,
    /// The container also declares it in `ports` (it probably serves traffic too).
    pub declared: bool,
}

const PROBES: [&str; 3] = ["livenessProbe", "readinessProbe", "startupProbe"];
const HOOKS: [&str; 2] = ["postStart", "preStop"];

/// The kubelet-facing ports of `containers` (the pod's `containers` plus its native
/// sidecars), sorted by port, one entry per port (its first source).
///
/// Skipped: `exec` probes (no network), `httpGet` with a `host` (the kubelet then
/// connects elsewhere), named ports the container does not declare (the kubelet fails
/// that probe anyway), and malformed values (the API server's validation refuses them).
pub fn probe_ports<'a>(containers: impl IntoIterator<Item = &'a Value>) -> Vec<ProbePort> {
    let mut found: BTreeMap<u16, ProbePort> = BTreeMap::new();
    for c in containers {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
        let declared = declared_ports(c);
        let mut add = |port: Option<u16>, what: &str| {
            if let Some(port) = port {
                found.entry(port).or_insert_with(|| ProbePort {
                    port,
                    source: format!("{name}/{what}"),
                    declared: declared.iter().any(|(_, p)| *p == port),
                });
            }
        };
        for probe in PROBES {
            let Some(p) = c.get(probe) else { continue };
            if let Some(h) = p.get("httpGet") {
                add(http_port(h, &declared), probe);
            }
            if let Some(t) = p.get("tcpSocket") {
                add(resolve(t.get("port"), &declared), probe);
            }
            if let Some(g) = p.get("grpc") {
                // gRPC probes take a number only.
                add(g.get("port").and_then(number), probe);
            }
        }
        for hook in HOOKS {
            if let Some(h) = c.pointer(&format!("/lifecycle/{hook}/httpGet")) {
                add(http_port(h, &declared), hook);
            }
        }
    }
    found.into_values().collect()
}

/// The port of an `httpGet` handler, unless it names another host.
fn http_port(h: &Value, declared: &[(String, u16)]) -> Option<u16> {
    let host = h.get("host").and_then(Value::as_str).unwrap_or("");
    if !host.is_empty() {
        return None;
    }
    resolve(h.get("port"), declared)
}

/// An IntOrString port: a number, or the name of one of the container's ports.
fn resolve(port: Option<&Value>, declared: &[(String, u16)]) -> Option<u16> {
    match port? {
        Value::String(name) => declared.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
        other => number(other),
    }
}

fn number(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

/// `(name, containerPort)` of the container's declared ports (unnamed ones with "").
pub fn declared_ports(c: &Value) -> Vec<(String, u16)> {
    c.get("ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let port = p.get("containerPort").and_then(number)?;
                    let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                    Some((name.to_string(), port))
                })
                .collect()
        })
        .unwrap_or_default()
}
