//! Flags of the injection webhook (`--webhook-*`) and of what it injects (`--inject-*`),
//! flattened into the control plane's command line and validated at start-up like every
//! other flag: a bad value names its flag and variable, and the binary exits 64.

use std::net::{IpAddr, SocketAddr};

use clap::Args as ClapArgs;
use serde_json::{Map, Value};
use spiffe::TrustDomain;

use crate::config::ConfigError;
use crate::kubernetes::inject::{self, InjectConfig, PodOptions, Resources, options};

/// Raw `--webhook-*` / `--inject-*` flags.
#[derive(Debug, Clone, ClapArgs)]
pub struct WebhookArgs {
    /// Serve the sidecar injection webhook (HTTPS, paths /inject and /healthz) on this
    /// address, e.g. 0.0.0.0:9443. Off when not given.
    #[arg(long, env = "FERRULE_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,
    /// DNS names of the webhook's serving certificate: the Service the API server calls
    /// (`<service>.<namespace>.svc`). Added to the control plane's own certificate, which
    /// the CA renews at half its lifetime.
    #[arg(
        long,
        env = "FERRULE_WEBHOOK_DNS_NAMES",
        value_delimiter = ',',
        default_value = "ferrule-webhook.ferrule-system.svc"
    )]
    pub webhook_dns_names: Vec<String>,
    /// Image of the injected containers (its entrypoint must be `ferrule-proxy`).
    #[arg(long, env = "FERRULE_INJECT_PROXY_IMAGE", default_value = concat!("ferrule/proxy:", env!("CARGO_PKG_VERSION")))]
    pub inject_proxy_image: String,
    /// imagePullPolicy of the injected containers: Always, IfNotPresent or Never.
    #[arg(
        long,
        env = "FERRULE_INJECT_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub inject_image_pull_policy: String,
    /// The identity API address injected proxies dial (host:port).
    #[arg(
        long,
        env = "FERRULE_INJECT_CONTROL_PLANE",
        default_value = "ferrule-control-plane.ferrule-system.svc:8443"
    )]
    pub inject_control_plane: String,
    /// Address the proxy's admin endpoint (port 15000, kubelet probes) binds: 0.0.0.0,
    /// or :: on IPv6-only clusters.
    #[arg(long, env = "FERRULE_INJECT_ADMIN_ADDRESS", default_value = "0.0.0.0")]
    pub inject_admin_address: String,
    /// Proxy container: requests.cpu.
    #[arg(long, env = "FERRULE_INJECT_PROXY_CPU_REQUEST", default_value = "100m")]
    pub inject_proxy_cpu_request: String,
    /// Proxy container: requests.memory.
    #[arg(
        long,
        env = "FERRULE_INJECT_PROXY_MEMORY_REQUEST",
        default_value = "64Mi"
    )]
    pub inject_proxy_memory_request: String,
    /// Proxy container: limits.cpu (empty: no limit).
    #[arg(long, env = "FERRULE_INJECT_PROXY_CPU_LIMIT", default_value = "1")]
    pub inject_proxy_cpu_limit: String,
    /// Proxy container: limits.memory (empty: no limit).
    #[arg(
        long,
        env = "FERRULE_INJECT_PROXY_MEMORY_LIMIT",
        default_value = "256Mi"
    )]
    pub inject_proxy_memory_limit: String,
    /// Init container: requests.cpu.
    #[arg(long, env = "FERRULE_INJECT_INIT_CPU_REQUEST", default_value = "10m")]
    pub inject_init_cpu_request: String,
    /// Init container: requests.memory.
    #[arg(
        long,
        env = "FERRULE_INJECT_INIT_MEMORY_REQUEST",
        default_value = "16Mi"
    )]
    pub inject_init_memory_request: String,
    /// Init container: limits.cpu (empty: no limit).
    #[arg(long, env = "FERRULE_INJECT_INIT_CPU_LIMIT", default_value = "100m")]
    pub inject_init_cpu_limit: String,
    /// Init container: limits.memory (empty: no limit).
    #[arg(long, env = "FERRULE_INJECT_INIT_MEMORY_LIMIT", default_value = "64Mi")]
    pub inject_init_memory_limit: String,
    /// Default of `ferrule.dev/mode`: strict or permissive.
    #[arg(long, env = "FERRULE_INJECT_DEFAULT_MODE", default_value = "strict")]
    pub inject_default_mode: String,
    /// Default of `ferrule.dev/log-level`: error, warn, info, debug or trace.
    #[arg(long, env = "FERRULE_INJECT_LOG_LEVEL", default_value = "info")]
    pub inject_log_level: String,
    /// Default of `ferrule.dev/sidecar-mode`: native (Kubernetes 1.29+) or classic.
    #[arg(long, env = "FERRULE_INJECT_SIDECAR_MODE", default_value = "native")]
    pub inject_sidecar_mode: String,
    /// Default of `ferrule.dev/unmeshed-outbound`: refuse or passthrough.
    #[arg(
        long,
        env = "FERRULE_INJECT_UNMESHED_OUTBOUND",
        default_value = "refuse"
    )]
    pub inject_unmeshed_outbound: String,
    /// Default of `ferrule.dev/skip-probe-ports`: true or false.
    #[arg(long, env = "FERRULE_INJECT_SKIP_PROBE_PORTS", default_value = "true")]
    pub inject_skip_probe_ports: String,
}

/// The validated webhook configuration.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where to serve.
    pub listen: SocketAddr,
    /// DNS names for the serving certificate.
    pub dns_names: Vec<String>,
    /// What to inject.
    pub inject: InjectConfig,
}

fn err(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

fn dns_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(err(field, format!("{name:?} is not a lower-case DNS name")))
    }
}

impl WebhookArgs {
    /// Validates the flags; `None` when the webhook is off (`--webhook-listen` unset).
    /// `token_audience` is the audience attestation requires (`--k8s-token-audience`):
    /// injected pods get tokens for exactly that audience.
    pub fn validate(
        self,
        trust_domain: &TrustDomain,
        token_audience: &str,
    ) -> Result<Option<WebhookConfig>, ConfigError> {
        let Some(listen) = self.webhook_listen else {
            return Ok(None);
        };
        const DNS: &str = "--webhook-dns-names / FERRULE_WEBHOOK_DNS_NAMES";
        if self.webhook_dns_names.is_empty() {
            return Err(err(DNS, "at least one name is needed"));
        }
        for name in &self.webhook_dns_names {
            dns_name(DNS, name)?;
        }
        const IMAGE: &str = "--inject-proxy-image / FERRULE_INJECT_PROXY_IMAGE";
        if self.inject_proxy_image.is_empty()
            || self
                .inject_proxy_image
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err(
                IMAGE,
                format!("{:?} is not an image reference", self.inject_proxy_image),
            ));
        }
        const PULL: &str = "--inject-image-pull-policy / FERRULE_INJECT_IMAGE_PULL_POLICY";
        if !["Always", "IfNotPresent", "Never"].contains(&self.inject_image_pull_policy.as_str()) {
            return Err(err(
                PULL,
                format!(
                    "{:?}: expected Always, IfNotPresent or Never",
                    self.inject_image_pull_policy
                ),
            ));
        }
        const CP: &str = "--inject-control-plane / FERRULE_INJECT_CONTROL_PLANE";
        let port_ok = self
            .inject_control_plane
            .rsplit_once(':')
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
        if !port_ok {
            return Err(err(
                CP,
                format!("{:?}: expected host:port", self.inject_control_plane),
            ));
        }
        const ADMIN: &str = "--inject-admin-address / FERRULE_INJECT_ADMIN_ADDRESS";
        let admin_address: IpAddr = self.inject_admin_address.parse().map_err(|_| {
            err(
                ADMIN,
                format!("{:?} is not an IP address", self.inject_admin_address),
            )
        })?;
        let quantity = |field: &'static str, v: String| {
            if v.is_empty() || inject::is_quantity(&v) {
                Ok(v)
            } else {
                Err(err(
                    field,
                    format!("{v:?} is not a Kubernetes quantity (e.g. 100m, 64Mi)"),
                ))
            }
        };
        let proxy_resources = Resources {
            cpu_request: quantity(
                "--inject-proxy-cpu-request / FERRULE_INJECT_PROXY_CPU_REQUEST",
                self.inject_proxy_cpu_request,
            )?,
            memory_request: quantity(
                "--inject-proxy-memory-request / FERRULE_INJECT_PROXY_MEMORY_REQUEST",
                self.inject_proxy_memory_request,
            )?,
            cpu_limit: quantity(
                "--inject-proxy-cpu-limit / FERRULE_INJECT_PROXY_CPU_LIMIT",
                self.inject_proxy_cpu_limit,
            )?,
            memory_limit: quantity(
                "--inject-proxy-memory-limit / FERRULE_INJECT_PROXY_MEMORY_LIMIT",
                self.inject_proxy_memory_limit,
            )?,
        };
        let init_resources = Resources {
            cpu_request: quantity(
                "--inject-init-cpu-request / FERRULE_INJECT_INIT_CPU_REQUEST",
                self.inject_init_cpu_request,
            )?,
            memory_request: quantity(
                "--inject-init-memory-request / FERRULE_INJECT_INIT_MEMORY_REQUEST",
                self.inject_init_memory_request,
            )?,
            cpu_limit: quantity(
                "--inject-init-cpu-limit / FERRULE_INJECT_INIT_CPU_LIMIT",
                self.inject_init_cpu_limit,
            )?,
            memory_limit: quantity(
                "--inject-init-memory-limit / FERRULE_INJECT_INIT_MEMORY_LIMIT",
                self.inject_init_memory_limit,
            )?,
        };
        // The defaults go through the annotation parser itself, so a flag accepts exactly
        // what the annotation accepts.
        let mut defaults = PodOptions::default();
        for (field, annotation, value) in [
            (
                "--inject-default-mode / FERRULE_INJECT_DEFAULT_MODE",
                options::ANN_MODE,
                self.inject_default_mode,
            ),
            (
                "--inject-log-level / FERRULE_INJECT_LOG_LEVEL",
                options::ANN_LOG_LEVEL,
                self.inject_log_level,
            ),
            (
                "--inject-sidecar-mode / FERRULE_INJECT_SIDECAR_MODE",
                options::ANN_SIDECAR_MODE,
                self.inject_sidecar_mode,
            ),
            (
                "--inject-unmeshed-outbound / FERRULE_INJECT_UNMESHED_OUTBOUND",
                options::ANN_UNMESHED,
                self.inject_unmeshed_outbound,
            ),
            (
                "--inject-skip-probe-ports / FERRULE_INJECT_SKIP_PROBE_PORTS",
                options::ANN_SKIP_PROBES,
                self.inject_skip_probe_ports,
            ),
        ] {
            let one: Map<String, Value> = [(annotation.to_string(), Value::String(value))]
                .into_iter()
                .collect();
            defaults =
                PodOptions::from_annotations(&one, &defaults).map_err(|e| err(field, e.reason))?;
        }
        let mut inject = InjectConfig::with_defaults(trust_domain.clone());
        inject.proxy_image = self.inject_proxy_image;
        inject.image_pull_policy = self.inject_image_pull_policy;
        inject.control_plane = self.inject_control_plane;
        inject.token_audience = token_audience.to_string();
        inject.admin_address = admin_address;
        inject.proxy_resources = proxy_resources;
        inject.init_resources = init_resources;
        inject.defaults = defaults;
        Ok(Some(WebhookConfig {
            listen,
            dns_names: self.webhook_dns_names,
            inject,
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Args;

    fn parse(extra: &[&str]) -> Result<Option<WebhookConfig>, ConfigError> {
        let mut argv = vec!["ferrule-control-plane", "--trust-domain", "cluster.local"];
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv).unwrap();
        args.webhook
            .validate(&TrustDomain::new("cluster.local").unwrap(), "ferrule")
    }

    #[test]
    fn off_by_default_and_the_defaults_are_the_documented_ones() {
        assert!(parse(&[]).unwrap().is_none());
        let wh = parse(&["--webhook-listen", "0.0.0.0:9443"])
            .unwrap()
            .unwrap();
        assert_eq!(wh.dns_names, ["ferrule-webhook.ferrule-system.svc"]);
        let expected = InjectConfig::with_defaults(TrustDomain::new("cluster.local").unwrap());
        assert_eq!(wh.inject, expected);
    }

    #[test]
    fn flags_override_and_defaults_go_through_the_annotation_parser() {
        let wh = parse(&[
            "--webhook-listen",
            "[::]:9443",
            "--inject-sidecar-mode",
            "classic",
            "--inject-default-mode",
            "permissive",
            "--inject-proxy-cpu-limit",
            "",
            "--inject-admin-address",
            "::",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(wh.inject.defaults.sidecar, inject::SidecarMode::Classic);
        assert!(wh.inject.defaults.permissive);
        assert_eq!(wh.inject.proxy_resources.cpu_limit, "");
        assert_eq!(wh.inject.admin_address.to_string(), "::");
    }

    #[test]
    fn injected_tokens_carry_the_audience_attestation_requires() {
        let config = Args::try_parse_from([
            "ferrule-control-plane",
            "--trust-domain",
            "cluster.local",
            "--webhook-listen",
            "0.0.0.0:9443",
            "--k8s-token-audience",
            "mesh.example",
        ])
        .unwrap()
        .validate()
        .unwrap();
        let wh = config.webhook.unwrap();
        assert_eq!(wh.inject.token_audience, "mesh.example");
        // The webhook's names join the control plane's own certificate.
        assert!(
            config
                .server_dns_names
                .contains(&"ferrule-webhook.ferrule-system.svc".to_string())
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (flag, value) in [
            ("--inject-log-level", "loud"),
            ("--inject-skip-probe-ports", "maybe"),
            ("--inject-unmeshed-outbound", "allow"),
            ("--inject-init-memory-request", "-1"),
            ("--inject-admin-address", "localhost"),
            ("--inject-proxy-image", "a b"),
            ("--webhook-dns-names", "-bad.svc"),
        ] {
            let arg = format!("{flag}={value}");
            let e = parse(&["--webhook-listen", "0.0.0.0:9443", &arg]).unwrap_err();
            assert!(e.field.starts_with(flag), "{flag}: {e}");
        }
    }
}
