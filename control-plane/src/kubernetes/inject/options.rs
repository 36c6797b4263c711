//! The pod's `ferrule.dev/*` annotations, validated strictly into [`PodOptions`].
//!
//! A value that is not exactly one of the documented forms refuses the pod with a
//! message naming the annotation: a typo must not silently leave a port unprotected or
//! protected differently than the author believes.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{ANN_INJECT, ANN_INJECTED, ANN_PROXY_CONFIG, ANN_TRUST_BUNDLE, PREFIX};
use ferrule_policy::Cidr;

/// `ferrule.dev/mode`.
pub const ANN_MODE: &str = "ferrule.dev/mode";
/// `ferrule.dev/log-level`.
pub const ANN_LOG_LEVEL: &str = "ferrule.dev/log-level";
/// `ferrule.dev/sidecar-mode`.
pub const ANN_SIDECAR_MODE: &str = "ferrule.dev/sidecar-mode";
/// `ferrule.dev/skip-inbound-ports`.
pub const ANN_SKIP_INBOUND: &str = "ferrule.dev/skip-inbound-ports";
/// `ferrule.dev/skip-outbound-ports`.
pub const ANN_SKIP_OUTBOUND: &str = "ferrule.dev/skip-outbound-ports";
/// `ferrule.dev/skip-outbound-cidrs`.
pub const ANN_SKIP_CIDRS: &str = "ferrule.dev/skip-outbound-cidrs";
/// `ferrule.dev/skip-probe-ports`.
pub const ANN_SKIP_PROBES: &str = "ferrule.dev/skip-probe-ports";
/// `ferrule.dev/unmeshed-outbound`.
pub const ANN_UNMESHED: &str = "ferrule.dev/unmeshed-outbound";

/// Every annotation under [`PREFIX`] the webhook understands.
pub const KNOWN: [&str; 12] = [
    ANN_INJECT,
    ANN_INJECTED,
    ANN_TRUST_BUNDLE,
    ANN_PROXY_CONFIG,
    ANN_MODE,
    ANN_LOG_LEVEL,
    ANN_SIDECAR_MODE,
    ANN_SKIP_INBOUND,
    ANN_SKIP_OUTBOUND,
    ANN_SKIP_CIDRS,
    ANN_SKIP_PROBES,
    ANN_UNMESHED,
];

/// Most entries accepted in one skip list (each becomes a netfilter rule).
pub const MAX_LIST: usize = 64;

/// How the proxy joins the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+).
    Native,
    /// The first regular container (older clusters; see the module docs' caveats).
    Classic,
}

/// The proxy's log level (`RUST_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `error`
    Error,
    /// `warn`
    Warn,
    /// `info`
    Info,
    /// `debug`
    Debug,
    /// `trace`
    Trace,
}

impl LogLevel {
    /// The `RUST_LOG` directive.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Per-pod choices: the flags' defaults overridden by the pod's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    /// Inbound default for undeclared ports: `true` = permissive, `false` = strict.
    pub permissive: bool,
    /// Proxy log level.
    pub log_level: LogLevel,
    /// Native or classic sidecar.
    pub sidecar: SidecarMode,
    /// Outbound connections to destinations outside the mesh pass through in plaintext
    /// (`true`) or are refused (`false`, fail closed).
    pub unmeshed_passthrough: bool,
    /// Exempt the app's kubelet probe ports from inbound capture.
    pub skip_probe_ports: bool,
    /// Inbound ports not captured (from the annotation only; probe ports come later).
    pub skip_inbound_ports: BTreeSet<u16>,
    /// Outbound ports not captured.
    pub skip_outbound_ports: BTreeSet<u16>,
    /// Outbound destinations not captured, as written (validated CIDRs or addresses).
    pub skip_outbound_cidrs: Vec<String>,
}

impl Default for PodOptions {
    fn default() -> Self {
        Self {
            permissive: false,
            log_level: LogLevel::Info,
            sidecar: SidecarMode::Native,
            unmeshed_passthrough: false,
            skip_probe_ports: true,
            skip_inbound_ports: BTreeSet::new(),
            skip_outbound_ports: BTreeSet::new(),
            skip_outbound_cidrs: Vec::new(),
        }
    }
}

/// Why an annotation was refused: `"<annotation>: <reason>"` in the denial message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {reason}")]
pub struct AnnotationError {
    /// The annotation key.
    pub annotation: String,
    /// What is wrong with its value.
    pub reason: String,
}

fn bad(annotation: &str, reason: impl Into<String>) -> AnnotationError {
    AnnotationError {
        annotation: annotation.to_string(),
        reason: reason.into(),
    }
}

/// Parses `value` as one of `choices` (exact, lower-case), returning its index.
fn choice(annotation: &str, value: &str, choices: &[&str]) -> Result<usize, AnnotationError> {
    choices.iter().position(|c| *c == value).ok_or_else(|| {
        bad(
            annotation,
            format!("{value:?} is not one of {}", choices.join(", ")),
        )
    })
}

/// Parses a boolean annotation (`"true"` / `"false"` exactly).
pub fn boolean(annotation: &str, value: &str) -> Result<bool, AnnotationError> {
    Ok(choice(annotation, value, &["false", "true"])? == 1)
}

/// Splits a comma-separated list, ignoring spaces around entries; refuses empty entries
/// and lists longer than [`MAX_LIST`].
fn entries<'a>(annotation: &str, value: &'a str) -> Result<Vec<&'a str>, AnnotationError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.iter().any(|s| s.is_empty()) {
        return Err(bad(annotation, format!("{value:?} has an empty entry")));
    }
    if items.len() > MAX_LIST {
        return Err(bad(
            annotation,
            format!("{} entries; at most {MAX_LIST}", items.len()),
        ));
    }
    Ok(items)
}

fn ports(annotation: &str, value: &str) -> Result<BTreeSet<u16>, AnnotationError> {
    entries(annotation, value)?
        .into_iter()
        .map(|p| {
            // Digits only: `parse` would accept "+80".
            let n = p
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|n| *n != 0);
            n.ok_or_else(|| bad(annotation, format!("{p:?} is not a port number (1-65535)")))
        })
        .collect()
}

fn cidrs(annotation: &str, value: &str) -> Result<Vec<String>, AnnotationError> {
    entries(annotation, value)?
        .into_iter()
        .map(|c| {
            Cidr::parse(c)
                .map(|_| c.to_string())
                .map_err(|e| bad(annotation, e))
        })
        .collect()
}

impl PodOptions {
    /// `defaults` overridden by the `ferrule.dev/*` entries of `annotations`.
    ///
    /// # Errors
    /// The first annotation (in key order) that is unknown or has a bad value.
    pub fn from_annotations(
        annotations: &Map<String, Value>,
        defaults: &PodOptions,
    ) -> Result<PodOptions, AnnotationError> {
        let mut o = defaults.clone();
        for (key, value) in annotations {
            if !key.starts_with(PREFIX) {
                continue;
            }
            let Some(v) = value.as_str() else {
                return Err(bad(key, "the value must be a string"));
            };
            match key.as_str() {
                ANN_MODE => o.permissive = choice(key, v, &["strict", "permissive"])? == 1,
                ANN_LOG_LEVEL => {
                    const LEVELS: [LogLevel; 5] = [
                        LogLevel::Error,
                        LogLevel::Warn,
                        LogLevel::Info,
                        LogLevel::Debug,
                        LogLevel::Trace,
                    ];
                    let names = LEVELS.map(LogLevel::as_str);
                    o.log_level = LEVELS[choice(key, v, &names)?];
                }
                ANN_SIDECAR_MODE => {
                    o.sidecar = match choice(key, v, &["native", "classic"])? {
                        0 => SidecarMode::Native,
                        _ => SidecarMode::Classic,
                    }
                }
                ANN_UNMESHED => {
                    o.unmeshed_passthrough = choice(key, v, &["refuse", "passthrough"])? == 1
                }
                ANN_SKIP_PROBES => o.skip_probe_ports = boolean(key, v)?,
                ANN_SKIP_INBOUND => o.skip_inbound_ports = ports(key, v)?,
                ANN_SKIP_OUTBOUND => o.skip_outbound_ports = ports(key, v)?,
                ANN_SKIP_CIDRS => o.skip_outbound_cidrs = cidrs(key, v)?,
                // Checked by the caller (opt-out, idempotency) or written by us.
                ANN_INJECT | ANN_INJECTED | ANN_TRUST_BUNDLE | ANN_PROXY_CONFIG => {}
                _ => {
                    return Err(bad(
                        key,
                        format!("unknown Ferrule annotation; known: {}", KNOWN.join(", ")),
                    ));
                }
            }
        }
        Ok(o)
    }
}
