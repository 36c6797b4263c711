//! Kubernetes flags of the control plane: service-account attestation and how to reach
//! the API server. Validated with the rest of the configuration at start-up.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::ConfigError;
use crate::attest::k8s_token::DEFAULT_AUDIENCE;
use crate::attest::k8s_token::jwks::KeySet;
use crate::kubernetes::client::{KubeClient, KubeClientConfig};

/// How Kubernetes service-account tokens are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttestationMode {
    /// Refuse service-account tokens (FAILED_PRECONDITION).
    Off,
    /// Ask the API server (TokenReview); needs `create` on `tokenreviews`.
    TokenReview,
    /// Check signatures against the cluster's JWKS (file or `/openid/v1/jwks`).
    Jwks,
}

/// Raw Kubernetes flags, flattened into the control plane's [`super::Args`].
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Kubernetes service-account token attestation: off, token-review, jwks.
    #[arg(
        long = "k8s-attestation",
        env = "FERRULE_K8S_ATTESTATION",
        value_enum,
        default_value = "off"
    )]
    pub attestation: AttestationMode,
    /// Audience the projected service-account tokens must be issued for.
    #[arg(
        long = "k8s-token-audience",
        env = "FERRULE_K8S_TOKEN_AUDIENCE",
        default_value = DEFAULT_AUDIENCE
    )]
    pub token_audience: String,
    /// The cluster's service-account token issuer (`iss`), e.g.
    /// `https://kubernetes.default.svc.cluster.local`. Required with `jwks`.
    #[arg(long = "k8s-issuer", env = "FERRULE_K8S_ISSUER")]
    pub issuer: Option<String>,
    /// JWKS file with the cluster's token signing keys (`kubectl get --raw
    /// /openid/v1/jwks`). Without it, `jwks` fetches them from the API server.
    #[arg(long = "k8s-jwks-file", env = "FERRULE_K8S_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// API server URL, `https://host:port`. Default: in-cluster
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT` and the pod's service-account files).
    #[arg(
        long = "k8s-api-url",
        env = "FERRULE_K8S_API_URL",
        requires = "api_ca_file"
    )]
    pub api_url: Option<String>,
    /// PEM CA certificate(s) of the API server (with `--k8s-api-url`).
    #[arg(
        long = "k8s-api-ca-file",
        env = "FERRULE_K8S_API_CA_FILE",
        requires = "api_url"
    )]
    pub api_ca_file: Option<PathBuf>,
    /// Bearer token file for the API server, re-read on every request (with
    /// `--k8s-api-url`).
    #[arg(
        long = "k8s-api-token-file",
        env = "FERRULE_K8S_API_TOKEN_FILE",
        requires = "api_url"
    )]
    pub api_token_file: Option<PathBuf>,
}

/// Validated Kubernetes settings.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Service-account attestation.
    pub attestation: K8sAttestation,
    /// How to reach the API server (resolved lazily with [`KubeConfig::client`]).
    pub api: KubeApi,
}

/// Validated attestation settings.
#[derive(Debug, Clone)]
pub enum K8sAttestation {
    /// Service-account tokens are refused.
    Off,
    /// TokenReview through the API client.
    TokenReview {
        /// Required token audience.
        audience: String,
    },
    /// JWKS signature verification.
    Jwks {
        /// Required token audience.
        audience: String,
        /// Required `iss`.
        issuer: String,
        /// The JWKS file, with the keys read from it at start-up; `None`: fetch from the API.
        file: Option<(PathBuf, KeySet)>,
    },
}

/// Where the API server is.
#[derive(Debug, Clone)]
pub enum KubeApi {
    /// Inside a pod: the service environment and mounted service-account files.
    InCluster,
    /// Given by flags.
    Explicit(KubeClientConfig),
}

const URL_FIELD: &str = "--k8s-api-url / FERRULE_K8S_API_URL";

impl KubeConfig {
    /// Builds an API client (validated at start-up whenever a feature needs one).
    pub fn client(&self) -> Result<KubeClient, ConfigError> {
        match &self.api {
            KubeApi::Explicit(cfg) => KubeClient::new(cfg.clone()).map_err(|e| ConfigError {
                field: URL_FIELD,
                reason: e.to_string(),
            }),
            KubeApi::InCluster => KubeClient::in_cluster().map_err(|e| ConfigError {
                field: URL_FIELD,
                reason: format!("not given, and the in-cluster configuration is unusable: {e}"),
            }),
        }
    }

    /// Whether the configured attestation talks to the API server.
    pub fn attestation_needs_api(&self) -> bool {
        matches!(
            self.attestation,
            K8sAttestation::TokenReview { .. } | K8sAttestation::Jwks { file: None, .. }
        )
    }
}

impl KubeArgs {
    /// Validates the flags; reads the JWKS and CA files so mistakes surface at start-up.
    pub fn validate(self) -> Result<KubeConfig, ConfigError> {
        let err = |field, reason: String| ConfigError { field, reason };
        let api = match (self.api_url, self.api_ca_file) {
            (Some(url), Some(ca)) => {
                let base_url = url
                    .parse()
                    .map_err(|e| err(URL_FIELD, format!("{url:?}: {e}")))?;
                let ca_pem = std::fs::read(&ca).map_err(|e| {
                    err(
                        "--k8s-api-ca-file / FERRULE_K8S_API_CA_FILE",
                        format!("{}: {e}", ca.display()),
                    )
                })?;
                KubeApi::Explicit(KubeClientConfig {
                    base_url,
                    ca_pem,
                    token_file: self.api_token_file,
                })
            }
            _ => KubeApi::InCluster,
        };
        const AUD: &str = "--k8s-token-audience / FERRULE_K8S_TOKEN_AUDIENCE";
        if self.token_audience.trim().is_empty() {
            return Err(err(AUD, "must not be empty".into()));
        }
        const JWKS: &str = "--k8s-jwks-file / FERRULE_K8S_JWKS_FILE";
        const ISS: &str = "--k8s-issuer / FERRULE_K8S_ISSUER";
        if self.attestation != AttestationMode::Jwks {
            if self.jwks_file.is_some() {
                return Err(err(JWKS, "only used with --k8s-attestation jwks".into()));
            }
            if self.issuer.is_some() {
                return Err(err(ISS, "only used with --k8s-attestation jwks".into()));
            }
        }
        let attestation = match self.attestation {
            AttestationMode::Off => K8sAttestation::Off,
            AttestationMode::TokenReview => K8sAttestation::TokenReview {
                audience: self.token_audience,
            },
            AttestationMode::Jwks => {
                let issuer = self.issuer.filter(|i| !i.trim().is_empty()).ok_or_else(|| {
                    err(ISS, "required with --k8s-attestation jwks (the cluster's service-account issuer, `iss`)".into())
                })?;
                let file = match self.jwks_file {
                    Some(path) => {
                        let keys =
                            KeySet::from_file(&path).map_err(|e| err(JWKS, e.to_string()))?;
                        Some((path, keys))
                    }
                    None => None,
                };
                K8sAttestation::Jwks {
                    audience: self.token_audience,
                    issuer,
                    file,
                }
            }
        };
        let config = KubeConfig { attestation, api };
        if config.attestation_needs_api() {
            config.client()?;
        }
        Ok(config)
    }
}
