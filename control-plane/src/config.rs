//! Control-plane configuration: flags and `FERRULE_*` environment variables, validated
//! entirely at start-up. A bad value names the flag/variable and the binary exits 64.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use spiffe::{SpiffeId, TrustDomain};

use crate::ctl::parse_duration;

pub mod kubernetes;

/// Raw command line / environment of `ferrule-control-plane`.
#[derive(Debug, Parser)]
#[command(
    name = "ferrule-control-plane",
    version,
    about = "Ferrule control plane: attests workloads, signs their certificates, streams trust bundles"
)]
pub struct Args {
    /// Directory for the embedded store (SQLite) and the admin socket. Created 0700.
    #[arg(long, env = "FERRULE_DATA_DIR", default_value = "/var/lib/ferrule")]
    pub data_dir: PathBuf,
    /// The mesh's SPIFFE trust domain, e.g. `demo.local`.
    #[arg(long, env = "FERRULE_TRUST_DOMAIN")]
    pub trust_domain: String,
    /// Address of the identity API (gRPC over TLS) that proxies dial.
    #[arg(long, env = "FERRULE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP `/metrics` and `/healthz` listener.
    #[arg(long, env = "FERRULE_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: SocketAddr,
    /// Admin socket path (default: `<data-dir>/admin.sock`).
    #[arg(long, env = "FERRULE_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Lifetime of issued workload certificates (X.509-SVIDs).
    #[arg(long, env = "FERRULE_SVID_TTL", default_value = "1h", value_parser = parse_duration)]
    pub svid_ttl: Duration,
    /// File holding the key-encryption key (32 bytes raw, hex or base64) that encrypts
    /// CA private keys in the store. Must be mode 0600 or stricter.
    #[arg(long, env = "FERRULE_CA_KEK_FILE")]
    pub kek_file: Option<PathBuf>,
    /// External issuer: PEM certificate chain (issuer first). Requires `--issuer-key`.
    #[arg(long, env = "FERRULE_CA_ISSUER_CERT", requires = "issuer_key")]
    pub issuer_cert: Option<PathBuf>,
    /// External issuer: PEM private key (mode 0600 or stricter).
    #[arg(long, env = "FERRULE_CA_ISSUER_KEY", requires = "issuer_cert")]
    pub issuer_key: Option<PathBuf>,
    /// External issuer: PEM trust bundle (roots). Default: the last certificate of the chain.
    #[arg(long, env = "FERRULE_CA_BUNDLE", requires = "issuer_cert")]
    pub issuer_bundle: Option<PathBuf>,
    /// Extra DNS names in the control plane's own serving certificate (its SPIFFE ID is
    /// always `spiffe://<trust-domain>/ferrule/control-plane`).
    #[arg(
        long,
        env = "FERRULE_SERVER_DNS_NAMES",
        value_delimiter = ',',
        default_value = "localhost"
    )]
    pub server_dns_names: Vec<String>,
    /// Where to write the current trust bundle as PEM for bootstrapping proxies
    /// (default: `<data-dir>/bundle.pem`). Rewritten on every bundle change.
    #[arg(long, env = "FERRULE_BUNDLE_OUT")]
    pub bundle_out: Option<PathBuf>,
    /// Decision when no ALLOW policy selects a destination: deny, allow-authenticated,
    /// allow-all. Streamed to every proxy with its policy.
    #[arg(
        long,
        env = "FERRULE_MESH_DEFAULT",
        default_value = "allow-authenticated"
    )]
    pub mesh_default: ferrule_policy::MeshDefault,
    /// Log format.
    #[arg(long, env = "FERRULE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Kubernetes: service-account attestation and the API server (`--k8s-*`).
    #[command(flatten)]
    pub k8s: kubernetes::KubeArgs,
    /// The sidecar injection webhook (`--webhook-*`, `--inject-*`).
    #[command(flatten)]
    pub webhook: crate::kubernetes::webhook::WebhookArgs,
    /// The Kubernetes watchers (`--k8s-watch`).
    #[command(flatten)]
    pub k8s_watch: crate::kubernetes::watch::WatchArgs,
}

/// Validated control-plane configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub admin_socket: PathBuf,
    pub svid_ttl: Duration,
    pub kek_file: Option<PathBuf>,
    pub external_issuer: Option<ExternalIssuer>,
    pub server_dns_names: Vec<String>,
    pub bundle_out: PathBuf,
    pub mesh_default: ferrule_policy::MeshDefault,
    /// Kubernetes attestation and API server settings.
    pub k8s: kubernetes::KubeConfig,
    /// The injection webhook, when `--webhook-listen` is set.
    pub webhook: Option<crate::kubernetes::webhook::WebhookConfig>,
    /// The Kubernetes watchers, when `--k8s-watch` is set.
    pub k8s_watch: Option<crate::kubernetes::watch::WatchConfig>,
}

/// Paths of an externally managed issuer (e.g. written by cert-manager).
#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    pub bundle: Option<PathBuf>,
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

/// Shortest certificate lifetime accepted (tests use seconds-long lifetimes).
const MIN_SVID_TTL: Duration = Duration::from_secs(5);
/// Longest workload certificate lifetime accepted.
const MAX_SVID_TTL: Duration = Duration::from_secs(7 * 86_400);

impl Args {
    /// Validates the raw arguments into a [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let td_field = "--trust-domain / FERRULE_TRUST_DOMAIN";
        if self.trust_domain.contains(':') || self.trust_domain.contains('/') {
            return Err(ConfigError {
                field: td_field,
                reason: format!(
                    "{:?}: give the bare trust domain name (e.g. demo.local), not a URI",
                    self.trust_domain
                ),
            });
        }
        let trust_domain = TrustDomain::new(&self.trust_domain).map_err(|e| ConfigError {
            field: td_field,
            reason: format!(
                "{:?} is not a valid SPIFFE trust domain: {e}",
                self.trust_domain
            ),
        })?;
        if self.svid_ttl < MIN_SVID_TTL || self.svid_ttl > MAX_SVID_TTL {
            return Err(ConfigError {
                field: "--svid-ttl / FERRULE_SVID_TTL",
                reason: format!(
                    "{}s is outside the allowed range {}s..={}s",
                    self.svid_ttl.as_secs(),
                    MIN_SVID_TTL.as_secs(),
                    MAX_SVID_TTL.as_secs()
                ),
            });
        }
        let admin_socket = self
            .admin_socket
            .unwrap_or_else(|| self.data_dir.join("admin.sock"));
        let bundle_out = self
            .bundle_out
            .unwrap_or_else(|| self.data_dir.join("bundle.pem"));
        let external_issuer = match (self.issuer_cert, self.issuer_key) {
            (Some(cert_chain), Some(key)) => Some(ExternalIssuer {
                cert_chain,
                key,
                bundle: self.issuer_bundle,
            }),
            _ => None,
        };
        let webhook = self
            .webhook
            .validate(&trust_domain, &self.k8s.token_audience)?;
        // The webhook serves the control plane's own certificate: it carries the
        // webhook's DNS names too.
        let mut server_dns_names = self.server_dns_names;
        for name in webhook.iter().flat_map(|w| &w.dns_names) {
            if !server_dns_names.contains(name) {
                server_dns_names.push(name.clone());
            }
        }
        let k8s = self.k8s.validate()?;
        let k8s_watch = self.k8s_watch.validate(&trust_domain, &k8s)?;
        Ok(Config {
            data_dir: self.data_dir,
            trust_domain,
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            admin_socket,
            svid_ttl: self.svid_ttl,
            kek_file: self.kek_file,
            external_issuer,
            server_dns_names,
            bundle_out,
            mesh_default: self.mesh_default,
            k8s,
            webhook,
            k8s_watch,
        })
    }
}

impl Config {
    /// The control plane's own SPIFFE ID, which proxies expect when they dial it.
    pub fn server_id(&self) -> SpiffeId {
        control_plane_id(&self.trust_domain)
    }
}

/// `spiffe://<td>/ferrule/control-plane`: the control plane's identity. Paths under
/// `/ferrule/` are reserved: no join token can be created for them.
pub fn control_plane_id(td: &TrustDomain) -> SpiffeId {
    SpiffeId::from_segments(td.clone(), &["ferrule", "control-plane"])
        .expect("static path segments are valid")
}
