//! Flags of the Kubernetes watchers (`--k8s-watch`), flattened into the control plane's
//! `config::Args` and validated with the rest of the configuration at start-up.

use clap::Args;
use spiffe::TrustDomain;

use super::WatchConfig;
use crate::config::ConfigError;
use crate::config::kubernetes::KubeConfig;

/// Raw flags of the watchers.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Follow the Kubernetes API: meshed pods' IPs and identities into discovery,
    /// AuthorizationPolicy resources into policy. Uses the `--k8s-api-*` connection.
    /// Until both are listed once, proxies get no discovery or policy.
    #[arg(long = "k8s-watch", env = "FERRULE_K8S_WATCH")]
    pub watch: bool,
    /// The namespace whose AuthorizationPolicy resources may select any workload (in
    /// any other namespace, a resource selects only that namespace's workloads).
    #[arg(
        long = "k8s-policy-root-namespace",
        env = "FERRULE_K8S_POLICY_ROOT_NAMESPACE",
        default_value = "ferrule-system"
    )]
    pub root_namespace: String,
    /// The inbound (mesh) port of the proxies the webhook injects, published for every
    /// meshed pod IP (clients that route by service dial it).
    #[arg(
        long = "k8s-inbound-port",
        env = "FERRULE_K8S_INBOUND_PORT",
        default_value_t = 15006,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub inbound_port: u16,
}

impl WatchArgs {
    /// The watchers' settings, or `None` without `--k8s-watch`. Checks that the API
    /// client can be built, so a bad connection setting stops the start.
    pub fn validate(
        self,
        trust_domain: &TrustDomain,
        k8s: &KubeConfig,
    ) -> Result<Option<WatchConfig>, ConfigError> {
        if !self.watch {
            return Ok(None);
        }
        let label_ok = !self.root_namespace.is_empty()
            && self.root_namespace.len() <= 63
            && self
                .root_namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !label_ok {
            return Err(ConfigError {
                field: "--k8s-policy-root-namespace / FERRULE_K8S_POLICY_ROOT_NAMESPACE",
                reason: format!("{:?} is not a namespace name", self.root_namespace),
            });
        }
        k8s.client()?;
        let mut config = WatchConfig::new(trust_domain.clone());
        config.root_namespace = self.root_namespace;
        config.inbound_port = self.inbound_port;
        Ok(Some(config))
    }
}
