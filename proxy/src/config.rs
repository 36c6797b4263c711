//! Proxy configuration: flags and `FERRULE_*` environment variables, validated entirely
//! at start-up. A bad value names the flag/variable and the binary exits 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

pub mod file;
use spiffe::{SpiffeId, TrustDomain};

use crate::identity::BootstrapCredential;

/// `ferrule-proxy` command line.
#[derive(Debug, Parser)]
#[command(name = "ferrule-proxy", version, about = "Ferrule sidecar proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run(RunArgs),
    /// Install (or with --cleanup remove) the traffic interception rules in the current
    /// network namespace. Needs CAP_NET_ADMIN; run once per pod before the application.
    Init(crate::intercept::InitArgs),
}

/// Raw arguments of `ferrule-proxy run`.
#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    /// The mesh's SPIFFE trust domain, e.g. `demo.local`.
    #[arg(long, env = "FERRULE_TRUST_DOMAIN")]
    pub trust_domain: String,
    /// Control plane identity API address, `host:port`.
    #[arg(long, env = "FERRULE_CONTROL_PLANE")]
    pub control_plane: String,
    /// SPIFFE ID the control plane must present (default
    /// `spiffe://<trust-domain>/ferrule/control-plane`).
    #[arg(long, env = "FERRULE_CONTROL_PLANE_ID")]
    pub control_plane_id: Option<String>,
    /// PEM file with the trust bundle (root certificates) used to authenticate the
    /// control plane at bootstrap. Afterwards the bundle follows the control plane's stream.
    #[arg(long, env = "FERRULE_BUNDLE_FILE")]
    pub bundle_file: PathBuf,
    /// Join token for the first certificate (prefer `--join-token-file`: environment
    /// variables leak into process listings and crash dumps more easily).
    #[arg(long, env = "FERRULE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// File containing the join token.
    #[arg(long, env = "FERRULE_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    pub join_token_file: Option<PathBuf>,
    /// Kubernetes projected service-account token file (audience `ferrule`), sent to the
    /// control plane instead of a join token; re-read at every bootstrap attempt.
    #[arg(
        long,
        env = "FERRULE_SA_TOKEN_FILE",
        conflicts_with_all = ["join_token", "join_token_file"]
    )]
    pub sa_token_file: Option<PathBuf>,
    /// The SPIFFE ID this workload expects to receive; issuance for any other identity is
    /// refused by the control plane.
    #[arg(long, env = "FERRULE_SPIFFE_ID")]
    pub spiffe_id: Option<String>,
    /// Admin endpoint (`/live`, `/ready`, `/identity`, `/metrics`).
    #[arg(long, env = "FERRULE_ADMIN_LISTEN", default_value = "127.0.0.1:15000")]
    pub admin_listen: SocketAddr,
    /// Renew the certificate after this fraction of its lifetime (plus/minus 10% jitter).
    #[arg(long, env = "FERRULE_RENEW_FRACTION", default_value_t = 0.5)]
    pub renew_fraction: f64,
    /// YAML file describing the data path (mode, inbound ports, upstreams, limits); see
    /// `config::file`. Without it: explicit mode, no ports.
    #[arg(long, env = "FERRULE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "FERRULE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Validated proxy configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub trust_domain: TrustDomain,
    pub control_plane: String,
    pub control_plane_id: SpiffeId,
    pub bundle_pem: Vec<u8>,
    /// Join token or service-account token file, for the first certificate.
    pub bootstrap: Option<crate::identity::BootstrapCredential>,
    pub expected_id: Option<SpiffeId>,
    pub admin_listen: SocketAddr,
    pub renew_fraction: f64,
    pub file: file::FileConfig,
}

/// A configuration value that failed validation.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    /// The flag and environment variable at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

impl RunArgs {
    /// Validates the raw arguments into a [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        const TD: &str = "--trust-domain / FERRULE_TRUST_DOMAIN";
        if self.trust_domain.contains(':') || self.trust_domain.contains('/') {
            return Err(err(
                TD,
                format!("{:?}: give the bare trust domain name", self.trust_domain),
            ));
        }
        let trust_domain = TrustDomain::new(&self.trust_domain)
            .map_err(|e| err(TD, format!("{:?}: {e}", self.trust_domain)))?;
        let control_plane_id = match &self.control_plane_id {
            Some(s) => SpiffeId::new(s).map_err(|e| {
                err(
                    "--control-plane-id / FERRULE_CONTROL_PLANE_ID",
                    format!("{s:?}: {e}"),
                )
            })?,
            None => SpiffeId::from_segments(trust_domain.clone(), &["ferrule", "control-plane"])
                .map_err(|e| err(TD, e.to_string()))?,
        };
        if self.control_plane.is_empty() || !self.control_plane.contains(':') {
            return Err(err(
                "--control-plane / FERRULE_CONTROL_PLANE",
                format!("{:?}: expected host:port", self.control_plane),
            ));
        }
        const BF: &str = "--bundle-file / FERRULE_BUNDLE_FILE";
        let bundle_pem = std::fs::read(&self.bundle_file)
            .map_err(|e| err(BF, format!("{}: {e}", self.bundle_file.display())))?;
        // Fail at load, naming the file, rather than at the first handshake.
        ferrule_tls::TrustBundle::from_pem(trust_domain.clone(), &bundle_pem, 0)
            .map_err(|e| err(BF, format!("{}: {e}", self.bundle_file.display())))?;
        let join_token = match (self.join_token, self.join_token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        err(
                            "--join-token-file / FERRULE_JOIN_TOKEN_FILE",
                            format!("{}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty())
        .map(|t| BootstrapCredential::JoinToken(crate::identity::JoinToken::new(t)));
        let bootstrap = match (join_token, self.sa_token_file) {
            (Some(_), Some(_)) => {
                // clap already refuses the combination; never pick one silently.
                return Err(err(
                    "--sa-token-file / FERRULE_SA_TOKEN_FILE",
                    "cannot be combined with a join token",
                ));
            }
            (Some(j), None) => Some(j),
            (None, Some(path)) => {
                // The file may appear later (the kubelet writes it); it is read at
                // every attempt. An unreadable path now is still reported early.
                if let Err(e) = std::fs::metadata(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(err(
                        "--sa-token-file / FERRULE_SA_TOKEN_FILE",
                        format!("{}: {e}", path.display()),
                    ));
                }
                Some(BootstrapCredential::SaTokenFile(path))
            }
            (None, None) => None,
        };
        let expected_id = match &self.spiffe_id {
            Some(s) => Some(
                SpiffeId::new(s)
                    .map_err(|e| err("--spiffe-id / FERRULE_SPIFFE_ID", format!("{s:?}: {e}")))?,
            ),
            None => None,
        };
        if !(0.1..=0.9).contains(&self.renew_fraction) {
            return Err(err(
                "--renew-fraction / FERRULE_RENEW_FRACTION",
                format!("{} is outside 0.1..=0.9", self.renew_fraction),
            ));
        }
        let file = match &self.config {
            Some(path) => file::FileConfig::load(path)
                .map_err(|e| err("--config / FERRULE_CONFIG", e.to_string()))?,
            None => file::FileConfig::default(),
        };
        Ok(Config {
            file,
            trust_domain,
            control_plane: self.control_plane,
            control_plane_id,
            bundle_pem,
            bootstrap,
            expected_id,
            admin_listen: self.admin_listen,
            renew_fraction: self.renew_fraction,
        })
    }
}

/// Backoff policy for retries against the control plane.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Upper bound of the retry backoff.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
