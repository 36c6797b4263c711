//! Sidecar injection: a Pod `CREATE` AdmissionReview (`admission.k8s.io/v1`) in, a
//! response with a JSON Patch (RFC 6902) out. Pure logic: no I/O, no clock, so every
//! case is a unit test on real AdmissionReview JSON (`inject/tests.rs`, `testdata/`).
//! The HTTPS server around it is `kubernetes::webhook`.
//!
//! # What an injected pod gets
//!
//! ```text
//! initContainers: [ferrule-init, ferrule-proxy (restartPolicy: Always), <the pod's own>...]
//! containers:     [<the pod's own>...]                       (native sidecar, the default)
//! volumes:        + ferrule-run    emptyDir {medium: Memory}   -> /run/ferrule
//!                 + ferrule-token  projected SA token (aud ferrule, 3600 s) -> /var/run/secrets/ferrule/token
//!                 + ferrule-config downwardAPI: bundle.pem, proxy.yaml     -> /etc/ferrule
//! annotations:    + ferrule.dev/injected: "true", ferrule.dev/trust-bundle, ferrule.dev/proxy-config
//! ```
//!
//! * **`ferrule-init`** runs `ferrule-proxy init` (netfilter redirect rules, excluding uid
//!   1337; with probe ports, the variables `FERRULE_HOST_IP(S)` from the downward API)
//!   with capabilities `NET_ADMIN` + `NET_RAW` only (`drop: [ALL]`), a read-only
//!   root filesystem and no privilege escalation. It runs as **root (uid 0)**: Kubernetes
//!   gives added capabilities to a non-root container only in its bounding set (there
//!   are no ambient capabilities), and file capabilities do not work under
//!   `allowPrivilegeEscalation: false` (no_new_privs). The process holds two capabilities,
//!   runs for about a second in the pod's network namespace, and exits. Consequence: an
//!   injected pod needs the `privileged` Pod Security level (`NET_ADMIN` is outside
//!   `baseline`), as with Istio and Linkerd without their CNI plugins.
//! * **`ferrule-proxy`** is a native sidecar (Kubernetes 1.29+): kubelet starts it
//!   after `ferrule-init`, waits for its startup probe (`GET /ready` on the admin port
//!   15000: certificate, bundle and discovery in hand), and only then starts the pod's
//!   own init containers (which therefore get the mesh) and its containers; it is stopped
//!   after them, so Jobs complete. uid/gid 1337 (the uid the redirect rules exclude),
//!   `runAsNonRoot`, read-only root filesystem, no privilege escalation, all capabilities
//!   dropped, seccomp `RuntimeDefault`.
//! * **Classic sidecar** (`ferrule.dev/sidecar-mode: classic`, for clusters before 1.29):
//!   the proxy is the first entry of `containers`. Caveats, stated in the admission
//!   warnings too: a Job's pod never completes (the proxy keeps running); the application
//!   may start before the proxy is ready, and its outbound connections are then refused
//!   (the redirect rules are already installed: fail closed, never plaintext) until the
//!   proxy listens; the pod's own init containers run with the rules installed and no
//!   proxy, so their outbound TCP is refused. There is no postStart hook: a hook that
//!   waits for readiness needs a `wait` command in the proxy image, which it does not have.
//! * **Bootstrap files without a ConfigMap**: the proxy needs the trust bundle (to
//!   authenticate the control plane) and its data-path config file. The webhook writes
//!   both into annotations and mounts them with a downward-API volume, so injection works
//!   in any namespace with no per-namespace objects (Linkerd similarly stamps its trust
//!   anchors into the pod at injection). The bundle is the one current at admission: a
//!   pod created before a CA rotation's `prepare` keeps bootstrapping against the old
//!   roots if its proxy restarts after `activate`; recreate such pods during rotation.
//!
//! # Kubelet probes under strict mTLS
//!
//! The kubelet probes a pod from its node, in plaintext, at the pod IP; a strict inbound
//! port closes plaintext, so probes would fail. Probes are not rewritten. Instead the
//! webhook collects the ports of every `httpGet`, `tcpSocket` and `grpc` probe and
//! `httpGet` lifecycle hook of the pod's containers (and of its own native sidecars),
//! resolving named ports, and passes them to `ferrule-init --probe-ports`: those ports
//! skip the proxy **only for connections from the node**, given as `--probe-sources
//! $(FERRULE_HOST_IP),$(FERRULE_HOST_IPS),gateway`. The variables come from the downward
//! API (`status.hostIP`, and `status.hostIPs` in native mode: the API server refuses that
//! field before 1.29) and Kubernetes expands them in `args`; `gateway` is the pod's
//! default gateway, which is the node's address on the pod link with bridge and
//! point-to-point CNIs, where the kubelet's connections come from that address rather
//! than from `status.hostIP` (see `ferrule_proxy::intercept::probe`). From anywhere else
//! a probe port is redirected to the proxy like any other port. Fail closed: an empty
//! node address adds no source, no source at all exempts nothing (the probes then fail
//! visibly), and a variable that is not defined is refused by `init` (exit 64).
//!
//! **Remaining trade-off**: anything on the node itself, including host-network pods and
//! whoever can spoof the node's address on the pod network, reaches the probe ports in
//! plaintext without authorization. The admission warnings name any probe port that is
//! also a declared container port: serve probes on a dedicated port, or set
//! `ferrule.dev/skip-probe-ports: "false"` (probes then fail under strict mode unless
//! they use `exec`). `ferrule.dev/skip-inbound-ports` stays a bypass for every source,
//! as its author asked. The proxy's own admin port (15000: `/live`, `/ready`,
//! `/identity`, `/metrics`; never intercepted) listens on the pod address for the same
//! reason.
//!
//! # Annotations (all optional; a bad value refuses the pod: fail closed)
//!
//! | annotation                        | values                      | default (flag)            |
//! |-----------------------------------|-----------------------------|---------------------------|
//! | `ferrule.dev/inject`              | `true`, `false` (opt out)   | `true` in a labelled namespace |
//! | `ferrule.dev/mode`                | `strict`, `permissive`      | `--inject-default-mode`   |
//! | `ferrule.dev/log-level`           | `error` … `trace`           | `--inject-log-level`      |
//! | `ferrule.dev/sidecar-mode`        | `native`, `classic`         | `--inject-sidecar-mode`   |
//! | `ferrule.dev/skip-inbound-ports`  | `22,8081` (1–65535)         | none                      |
//! | `ferrule.dev/skip-outbound-ports` | `5432`                      | none                      |
//! | `ferrule.dev/skip-outbound-cidrs` | `10.0.0.0/8,fd00::/8`       | none                      |
//! | `ferrule.dev/skip-probe-ports`    | `true`, `false`             | `true`                    |
//! | `ferrule.dev/unmeshed-outbound`   | `refuse`, `passthrough`     | `--inject-unmeshed-outbound` |
//!
//! Any other `ferrule.dev/` annotation is refused (a typo would otherwise silently do
//! nothing). `ferrule.dev/injected`, `ferrule.dev/trust-bundle` and
//! `ferrule.dev/proxy-config` are written by the webhook.
//!
//! # Errors: which kind, and why
//!
//! Following the Kubernetes documentation (a webhook answers `200` with an
//! AdmissionReview echoing the request's `uid`):
//! * **The envelope is unusable** (not JSON, not `admission.k8s.io/v1` `AdmissionReview`,
//!   no `request` or `uid`, body too large): HTTP `400`/`413` with the reason in plain
//!   text. There is no `uid` to answer to; the API server treats it as a failed call and
//!   applies the webhook's `failurePolicy` (`Fail`: the pod is not created).
//! * **The request is well-formed but not something we inject** (not a Pod, not
//!   `CREATE`, a subresource, no object) or **the pod cannot be injected safely** (a bad
//!   annotation, a name or port conflict, `hostNetwork`, uid 1337 in the app): `200` with
//!   `allowed: false` and a `status` whose message names the field or annotation. The
//!   user sees it in `kubectl` / the ReplicaSet's events.
//!
//! Idempotent: a pod carrying `ferrule.dev/injected: "true"` and the `ferrule-proxy`
//! container gets `allowed: true` and no patch. The marker without the container is
//! refused (a copied annotation must not make discovery treat a plain pod as meshed).

pub mod options;
mod patch;
mod probes;
mod review;
mod spec;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use spiffe::TrustDomain;

pub use options::{LogLevel, PodOptions, SidecarMode};
pub use review::{Outcome, review};

/// Annotation prefix owned by Ferrule.
pub const PREFIX: &str = "ferrule.dev/";
/// Per-pod opt-out: `ferrule.dev/inject: "false"`.
pub const ANN_INJECT: &str = "ferrule.dev/inject";
/// Marker set on injected pods (idempotency; the Pod watch keys on it).
pub const ANN_INJECTED: &str = "ferrule.dev/injected";
/// Trust bundle PEM at admission time (mounted as `/etc/ferrule/bundle.pem`).
pub const ANN_TRUST_BUNDLE: &str = "ferrule.dev/trust-bundle";
/// The proxy's data-path config file (mounted as `/etc/ferrule/proxy.yaml`).
pub const ANN_PROXY_CONFIG: &str = "ferrule.dev/proxy-config";

/// Name of the init container that installs the redirect rules.
pub const INIT_CONTAINER: &str = "ferrule-init";
/// Name of the proxy container.
pub const PROXY_CONTAINER: &str = "ferrule-proxy";
/// The uid (and gid) the proxy runs as; the redirect rules exclude it.
pub const PROXY_UID: u32 = 1337;
/// The proxy's admin port (`/live`, `/ready`).
pub const ADMIN_PORT: u16 = 15000;
/// The proxy's outbound capture port.
pub const OUTBOUND_PORT: u16 = 15001;
/// The proxy's inbound (mesh) port.
pub const INBOUND_PORT: u16 = 15006;

/// CPU and memory of one injected container, as Kubernetes quantities (`100m`, `64Mi`).
/// An empty string leaves that entry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: String,
    /// `requests.memory`.
    pub memory_request: String,
    /// `limits.cpu` (empty: none).
    pub cpu_limit: String,
    /// `limits.memory`.
    pub memory_limit: String,
}

/// What the webhook injects, from the control plane's flags (`webhook::WebhookArgs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// Image holding `ferrule-proxy` as its entrypoint (used for both containers).
    pub proxy_image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// The identity API address proxies dial (`host:port`).
    pub control_plane: String,
    /// The mesh's trust domain (SPIFFE IDs are `spiffe://<td>/ns/<ns>/sa/<sa>`).
    pub trust_domain: TrustDomain,
    /// Audience of the projected service-account token (what attestation checks).
    pub token_audience: String,
    /// Lifetime requested for the projected token, in seconds (kubelet refreshes it).
    pub token_expiration_seconds: u32,
    /// Address the proxy's admin endpoint binds (`0.0.0.0`, or `::` for IPv6-only pods).
    pub admin_address: IpAddr,
    /// Resources of the proxy container.
    pub proxy_resources: Resources,
    /// Resources of the init container.
    pub init_resources: Resources,
    /// Values used when the pod has no annotation.
    pub defaults: PodOptions,
}

impl InjectConfig {
    /// A configuration with the built-in defaults for `trust_domain` (tests, examples).
    pub fn with_defaults(trust_domain: TrustDomain) -> Self {
        Self {
            proxy_image: format!("ferrule/proxy:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".into(),
            control_plane: "ferrule-control-plane.ferrule-system.svc:8443".into(),
            trust_domain,
            token_audience: "ferrule".into(),
            token_expiration_seconds: 3600,
            admin_address: IpAddr::from([0, 0, 0, 0]),
            proxy_resources: Resources {
                cpu_request: "100m".into(),
                memory_request: "64Mi".into(),
                cpu_limit: "1".into(),
                memory_limit: "256Mi".into(),
            },
            init_resources: Resources {
                cpu_request: "10m".into(),
                memory_request: "16Mi".into(),
                cpu_limit: "100m".into(),
                memory_limit: "64Mi".into(),
            },
            defaults: PodOptions::default(),
        }
    }
}

/// Whether `s` is a non-negative Kubernetes resource quantity (`100m`, `0.5`, `64Mi`,
/// `1e3`, `2G`), the syntax the API server accepts for `resources`.
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    let digits = num.bytes().filter(u8::is_ascii_digit).count();
    let dots = num.bytes().filter(|b| *b == b'.').count();
    if digits == 0 || dots > 1 {
        return false;
    }
    const SUFFIXES: [&str; 14] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti",
    ];
    if SUFFIXES.contains(&suffix) || suffix == "Pi" || suffix == "Ei" {
        return true;
    }
    // Decimal exponent: e3, E-2.
    let Some(exp) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
}
