//! The proxy's YAML config file (`--config` / `FERRULE_CONFIG`): everything structured
//! about the data path. Unknown fields are errors; every error names the file and field.
//!
//! ```yaml
//! mode: explicit            # explicit | transparent
//! service: backend          # service name this workload registers in discovery
//! inbound:
//!   listen: "[::]:15006"     # dual-stack (falls back to 0.0.0.0 without IPv6)
//!   default_mode: strict    # strict | permissive (transparent mode, undeclared ports)
//!   ports:
//!     - port: 8080          # the port clients address
//!       app: 127.0.0.1:8080 # where the application listens (default 127.0.0.1:<port>)
//!       mode: strict
//!       protocol: http      # http | opaque
//!   close_on_policy_change: true  # close live connections a new policy denies
//! outbound:
//!   listen: 127.0.0.1:15001 # transparent mode capture listener
//!   unmeshed: refuse        # refuse | passthrough (destinations not in the mesh)
//!   pool: true              # share pooled mTLS connections (ALPN ferrule/2); false: one
//!                           # ferrule/1 connection (one handshake) per app connection
//!   pool_idle_timeout: 60s  # a pooled connection without streams this long is closed
//!   upstreams:              # explicit mode: local port -> mesh service
//!     - listen: 127.0.0.1:9001
//!       service: backend
//!       port: 8080
//! limits:
//!   connect_timeout: 5s
//!   handshake_timeout: 10s
//!   detect_timeout: 1s
//!   idle_timeout: 0s        # 0 = no idle timeout
//!   max_connections: 10000 # per direction; lowered to fit RLIMIT_NOFILE
//!   max_handshakes: 1024    # inbound connections before their mTLS handshake completes
//!   shutdown_grace: 10s
//! tls:
//!   tls13_only: false
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Interception mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Applications dial local upstream ports; the inbound listener is dialled directly.
    #[default]
    Explicit,
    /// netfilter rules (installed by `ferrule-proxy init`) redirect all TCP.
    Transparent,
}

/// Whether a port accepts plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// mTLS only: plaintext is closed and counted.
    #[default]
    Strict,
    /// mTLS and plaintext (labelled unauthenticated), for migrations.
    Permissive,
}

/// How traffic on a port is understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque TCP: one authorization decision per connection.
    #[default]
    Opaque,
    /// HTTP/1.1 or HTTP/2: one decision per request.
    Http,
}

/// What to do with outbound connections to destinations that are not in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmeshed {
    /// Close them (the default: fail closed).
    #[default]
    Refuse,
    /// Forward them in plaintext, unchanged.
    Passthrough,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub mode: Mode,
    pub service: Option<String>,
    pub inbound: InboundFile,
    pub outbound: OutboundFile,
    pub limits: Limits,
    pub tls: TlsFile,
}

/// `inbound:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundFile {
    pub listen: SocketAddr,
    pub default_mode: PortMode,
    pub ports: Vec<InboundPort>,
    /// Close established opaque connections that a new policy denies (default: true).
    pub close_on_policy_change: bool,
}

impl Default for InboundFile {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 15006)),
            default_mode: PortMode::Strict,
            ports: Vec::new(),
            close_on_policy_change: true,
        }
    }
}

/// One declared application port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundPort {
    pub port: u16,
    #[serde(default)]
    pub app: Option<SocketAddr>,
    #[serde(default)]
    pub mode: Option<PortMode>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// `outbound:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundFile {
    pub listen: SocketAddr,
    pub unmeshed: Unmeshed,
    pub upstreams: Vec<Upstream>,
    /// Carry application connections as streams over pooled mesh connections
    /// (ALPN `ferrule/2`; default true). Servers that answer `ferrule/1` are still dialled
    /// per connection.
    pub pool: bool,
    /// A pooled connection that carried no stream for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
}

impl Default for OutboundFile {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 15001)),
            unmeshed: Unmeshed::Refuse,
            upstreams: Vec::new(),
            pool: true,
            pool_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// An explicit-mode upstream: a local listener bound to a mesh service's port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub listen: SocketAddr,
    pub service: String,
    pub port: u16,
}

/// `limits:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub detect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Inbound connections still in protocol detection, the TLS handshake or the hop
    /// header (unauthenticated, each bounded by its timeout); beyond this, new
    /// connections are closed at once, so a handshake flood cannot hold every slot.
    pub max_handshakes: usize,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            detect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::ZERO,
            max_connections: 10_000,
            max_handshakes: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `tls:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFile {
    pub tls13_only: bool,
}

/// Parses `250ms`, `90s`, `15m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 10s, 5m, 1h"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A config file that could not be loaded: names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct FileError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

impl FileConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            file: file.clone(),
            field: "-".into(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|(field, reason)| FileError {
            file,
            field,
            reason,
        })
    }

    /// Parses and validates YAML text; errors are `(field, reason)`.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        let cfg: FileConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let loc = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "-".into());
            (loc, e.to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.inbound.ports.iter().enumerate() {
            if p.port == 0 {
                return Err((format!("inbound.ports[{i}].port"), "must not be 0".into()));
            }
            if !seen.insert(p.port) {
                return Err((
                    format!("inbound.ports[{i}].port"),
                    format!("port {} is declared twice", p.port),
                ));
            }
        }
        let mut listens = std::collections::HashSet::new();
        for (i, u) in self.outbound.upstreams.iter().enumerate() {
            if u.service.trim().is_empty() {
                return Err((
                    format!("outbound.upstreams[{i}].service"),
                    "must not be empty".into(),
                ));
            }
            if u.port == 0 {
                return Err((
                    format!("outbound.upstreams[{i}].port"),
                    "must not be 0".into(),
                ));
            }
            if !listens.insert(u.listen) {
                return Err((
                    format!("outbound.upstreams[{i}].listen"),
                    format!("{} is used twice", u.listen),
                ));
            }
        }
        if self.limits.max_connections == 0 {
            return Err(("limits.max_connections".into(), "must be at least 1".into()));
        }
        if self.limits.max_handshakes == 0 {
            return Err(("limits.max_handshakes".into(), "must be at least 1".into()));
        }
        for (name, d) in [
            ("limits.connect_timeout", self.limits.connect_timeout),
            ("limits.handshake_timeout", self.limits.handshake_timeout),
            ("limits.detect_timeout", self.limits.detect_timeout),
            (
                "outbound.pool_idle_timeout",
                self.outbound.pool_idle_timeout,
            ),
        ] {
            if d.is_zero() {
                return Err((name.into(), "must be greater than 0".into()));
            }
        }
        if let Some(s) = &self.service
            && s.trim().is_empty()
        {
            return Err(("service".into(), "must not be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let c = FileConfig::parse(
            "mode: transparent\nservice: backend\ninbound:\n  ports:\n    - port: 8080\n      protocol: http\n      mode: permissive\noutbound:\n  unmeshed: passthrough\n  upstreams:\n    - listen: 127.0.0.1:9001\n      service: backend\n      port: 8080\nlimits:\n  connect_timeout: 250ms\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Transparent);
        assert_eq!(c.inbound.ports[0].protocol, Protocol::Http);
        assert_eq!(c.inbound.ports[0].mode, Some(PortMode::Permissive));
        assert_eq!(c.outbound.unmeshed, Unmeshed::Passthrough);
        assert_eq!(c.limits.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(10));
    }

    #[test]
    fn defaults_fail_closed() {
        let c = FileConfig::parse("{}").unwrap();
        assert_eq!(c.inbound.default_mode, PortMode::Strict);
        assert_eq!(c.outbound.unmeshed, Unmeshed::Refuse);
    }

    #[test]
    fn errors_name_the_field() {
        let e = FileConfig::parse("inbound:\n  portz: []\n").unwrap_err();
        assert!(e.1.contains("portz"), "{e:?}");
        let e =
            FileConfig::parse("inbound:\n  ports:\n    - port: 80\n    - port: 80\n").unwrap_err();
        assert_eq!(e.0, "inbound.ports[1].port");
        let e = FileConfig::parse("limits:\n  connect_timeout: 5 parsecs\n").unwrap_err();
        assert!(e.1.contains("invalid duration"), "{e:?}");
        let e = FileConfig::parse("outbound:\n  upstreams:\n    - listen: 127.0.0.1:1\n      service: ''\n      port: 1\n").unwrap_err();
        assert_eq!(e.0, "outbound.upstreams[0].service");
        let e = FileConfig::parse("mode: sideways\n").unwrap_err();
        assert!(e.1.contains("sideways") || e.1.contains("variant"), "{e:?}");
    }
}
