//! Wires the control plane together: store → CA → servers, plus the background tasks
//! that keep the control plane's own certificate fresh and publish the trust bundle.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferrule_proto::admin::v1::admin_server::AdminServer;
use ferrule_proto::identity::v1::identity_server::IdentityServer;
use ferrule_proto::mesh::v1::mesh_server::MeshServer;
use ferrule_tls::{Credentials, IdentityHandle, TrustBundle};
use tokio_rustls::TlsAcceptor;

use crate::admin_api::AdminApi;
use crate::attest::k8s_token::K8sTokenAttestor;
use crate::ca::{CaMode, CaParams, CertificateAuthority, Kek};
use crate::config::Config;
use crate::discovery::Registry;
use crate::identity_api::IdentityApi;
use crate::mesh_api::MeshApi;
use crate::metrics::Metrics;
use crate::policy::PolicyService;
use crate::server::{admin_socket, metrics_http, tls_listener};
use crate::store::Store;

/// Lifetime of the control plane's own serving certificate. It is re-issued at half
/// its lifetime and whenever the trust bundle changes (CA rotation).
const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often CA maintenance runs: external issuer reload, intermediate renewal.
const CA_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the control plane until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = Arc::new(
        Store::open(&config.data_dir)
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
    );
    let mode = match &config.external_issuer {
        Some(ext) => CaMode::External {
            cert_chain: ext.cert_chain.clone(),
            key: ext.key.clone(),
            bundle: ext.bundle.clone(),
        },
        None => {
            let kek = match &config.kek_file {
                Some(p) => {
                    Some(Kek::from_file(p).with_context(|| {
                        format!("loading the key-encryption key {}", p.display())
                    })?)
                }
                None => {
                    tracing::warn!(
                        "no key-encryption key configured (--kek-file / FERRULE_CA_KEK_FILE): CA private keys are stored unencrypted in the data directory"
                    );
                    None
                }
            };
            CaMode::Internal { kek }
        }
    };
    let ca = Arc::new(
        CertificateAuthority::open(
            store.clone(),
            config.trust_domain.clone(),
            mode,
            CaParams::default(),
        )
        .context("opening the certificate authority")?,
    );
    let server_identity = IdentityHandle::new();
    // Poked by the admin API when the active authority changes.
    let authority_changed = Arc::new(tokio::sync::Notify::new());
    refresh_server_identity(&ca, &config, &server_identity)?;
    write_bundle_file(&ca, &config)?;

    // Identity API over TLS.
    let server_tls = ferrule_tls::server_config_with_verifier(
        &server_identity,
        Arc::new(tls_listener::DeferredClientVerifier::new(
            ferrule_tls::provider(),
        )),
        &ferrule_tls::TlsOptions {
            alpn: vec![b"h2".to_vec()],
            ..Default::default()
        },
    )
    .context("building the identity API's TLS configuration")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the identity API on {}", config.listen))?;
    let metrics = Metrics::new();
    let metrics_listener = metrics_http::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics listener on {}", config.metrics_listen))?;
    let mut identity_api =
        IdentityApi::new(ca.clone(), store.clone(), config.svid_ttl, metrics.clone());
    if let Some(k8s) = K8sTokenAttestor::from_config(&config.trust_domain, &config.k8s)
        .context("setting up service-account attestation")?
    {
        tracing::info!(
            mode = k8s.mode(),
            "kubernetes service-account attestation enabled"
        );
        identity_api = identity_api.with_k8s_attestor(Arc::new(k8s));
    }
    // Disconnected workloads stay visible for one certificate lifetime: long enough to
    // ride out a control-plane restart, short enough that a dead workload's
    // credentials have expired by the time it disappears.
    let policies = Arc::new(
        PolicyService::open(store.clone(), config.mesh_default).context("loading policies")?,
    );
    let registry = Arc::new(
        Registry::persistent(config.svid_ttl, store.clone())
            .context("loading the workload registry")?,
    );
    // With `--k8s-watch`, proxies get discovery and policy only once the pods and the
    // AuthorizationPolicy resources have been listed (see `kubernetes::watch`).
    let k8s_watch = match &config.k8s_watch {
        Some(watch_config) => {
            registry.await_kubernetes();
            policies.await_kubernetes();
            let client = config
                .k8s
                .client()
                .context("building the Kubernetes API client for --k8s-watch")?;
            Some(tokio::spawn(crate::kubernetes::watch::run(
                client,
                watch_config.clone(),
                registry.clone(),
                policies.clone(),
                metrics.clone(),
                shutdown_signal(),
            )))
        }
        None => None,
    };
    let mesh_api = MeshApi::new(
        ca.clone(),
        registry.clone(),
        policies.clone(),
        metrics.clone(),
    );
    let incoming = tls_listener::incoming(listener, TlsAcceptor::from(server_tls));
    // Keepalives detect dead proxies (their sessions end, freeing their address), and
    // per-connection limits bound what one client can open.
    let identity_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(64)
        .max_concurrent_streams(Some(64))
        .add_service(IdentityServer::new(identity_api))
        .add_service(MeshServer::new(mesh_api))
        .serve_with_incoming_shutdown(incoming, shutdown_signal());

    // Admin API on the local socket.
    let admin_listener = admin_socket::bind(&config.admin_socket)
        .with_context(|| format!("binding the admin socket {}", config.admin_socket.display()))?;
    let admin_server = tonic::transport::Server::builder()
        .add_service(AdminServer::new(AdminApi::new(
            ca.clone(),
            store.clone(),
            registry.clone(),
            policies.clone(),
            authority_changed.clone(),
        )))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(admin_listener),
            shutdown_signal(),
        );

    tokio::spawn(keep_server_identity_fresh(
        ca.clone(),
        config.clone(),
        server_identity.clone(),
        authority_changed.clone(),
    ));
    tokio::spawn(metrics_http::serve(metrics_listener, metrics.clone()));
    if let Some(wh) = &config.webhook {
        spawn_webhook(wh, &server_identity, &ca).await?;
    }
    tokio::spawn(maintain_ca(ca.clone(), metrics.clone()));
    tokio::spawn({
        let registry = registry.clone();
        let metrics = metrics.clone();
        let policies = policies.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let n = registry.expire(std::time::SystemTime::now());
                metrics
                    .registered_workloads
                    .set(registry.snapshot().workloads.len() as i64);
                let version = policies.current().set.version();
                metrics.policy_version.set(version as i64);
                let stale = registry
                    .entries()
                    .iter()
                    .filter(|e| e.session.is_some() && e.acked_policy != version)
                    .count();
                metrics.proxies_on_stale_policy.set(stale as i64);
                if n > 0 {
                    tracing::info!(
                        removed = n,
                        "expired disconnected workloads from the registry"
                    );
                }
            }
        }
    });

    tracing::info!(
        listen = %config.listen,
        admin_socket = %config.admin_socket.display(),
        trust_domain = %config.trust_domain,
        svid_ttl_s = config.svid_ttl.as_secs(),
        "control plane serving"
    );
    let (a, b) = tokio::join!(identity_server, admin_server);
    a.context("identity API server")?;
    b.context("admin API server")?;
    if let Some(watchers) = k8s_watch {
        // They stop on the same signal; a panic there is reported, not propagated.
        if watchers.await.is_err() {
            tracing::error!("the Kubernetes watchers ended abnormally");
        }
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    tracing::info!("control plane stopped");
    Ok(())
}

/// Starts the sidecar injection webhook (HTTPS with the control plane's own
/// certificate, which carries the webhook's DNS names; see `kubernetes::webhook`).
async fn spawn_webhook(
    wh: &crate::kubernetes::webhook::WebhookConfig,
    server_identity: &IdentityHandle,
    ca: &Arc<CertificateAuthority>,
) -> anyhow::Result<()> {
    use crate::kubernetes::webhook;
    let tls = webhook::tls_config(server_identity)
        .context("building the injection webhook's TLS configuration")?;
    let listener = tokio::net::TcpListener::bind(wh.listen)
        .await
        .with_context(|| format!("binding the injection webhook on {}", wh.listen))?;
    let state = Arc::new(webhook::Webhook::new(
        wh.inject.clone(),
        ca.subscribe_bundle(),
    ));
    tokio::spawn(webhook::serve(listener, tls, state));
    tracing::info!(listen = %wh.listen, dns_names = ?wh.dns_names, "sidecar injection webhook serving");
    Ok(())
}

/// Issues a fresh serving certificate for the control plane's own SPIFFE ID from the
/// active authority and publishes it, together with the current bundle.
fn refresh_server_identity(
    ca: &CertificateAuthority,
    config: &Config,
    handle: &IdentityHandle,
) -> anyhow::Result<()> {
    let crate::ca::ServerCert { chain, key, .. } = ca
        .issue_server_cert(
            &config.server_id(),
            &config.server_dns_names,
            SERVER_CERT_TTL,
        )
        .context("issuing the control plane's own certificate")?;
    handle.set_credentials(Credentials::new(chain, key).context("loading own certificate")?);
    let snapshot = ca.trust_bundle();
    handle.set_bundle(
        TrustBundle::new(
            config.trust_domain.clone(),
            snapshot.roots.clone(),
            snapshot.version,
        )
        .context("loading the trust bundle")?,
    );
    Ok(())
}

/// Writes the trust bundle as PEM for bootstrapping proxies (world-readable: public).
fn write_bundle_file(ca: &CertificateAuthority, config: &Config) -> anyhow::Result<()> {
    let snapshot = ca.trust_bundle();
    let pem = snapshot.to_pem();
    let tmp = config.bundle_out.with_extension("pem.tmp");
    std::fs::write(&tmp, pem).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &config.bundle_out)
        .with_context(|| format!("writing {}", config.bundle_out.display()))?;
    Ok(())
}

async fn keep_server_identity_fresh(
    ca: Arc<CertificateAuthority>,
    config: Config,
    handle: IdentityHandle,
    authority_changed: Arc<tokio::sync::Notify>,
) {
    let mut bundle_rx = ca.subscribe_bundle();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SERVER_CERT_TTL / 2) => {}
            _ = authority_changed.notified() => {}
            changed = bundle_rx.changed() => {
                if changed.is_err() { return; }
                if let Err(e) = write_bundle_file(&ca, &config) {
                    tracing::error!(error = format!("{e:#}"), "cannot write the bundle file");
                }
            }
        }
        if let Err(e) = refresh_server_identity(&ca, &config, &handle) {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot refresh the control plane's own certificate"
            );
        }
    }
}

/// Periodic CA maintenance. A failing reload is logged once per distinct error, not on
/// every tick.
async fn maintain_ca(ca: Arc<CertificateAuthority>, metrics: Metrics) {
    let mut tick = tokio::time::interval(CA_MAINTENANCE_INTERVAL);
    let mut last_error: Option<String> = None;
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        metrics.bundle_version.set(ca.trust_bundle().version as i64);
        match ca.status() {
            Ok(authorities) => {
                let soon = metrics.observe_ca(&authorities, std::time::SystemTime::now());
                // Warn at start and then hourly while anything is about to expire.
                if !soon.is_empty()
                    && last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
                {
                    for (authority, kind) in &soon {
                        tracing::warn!(%authority, kind, "CA {kind} expires within 14 days: rotate it (ferrulectl ca prepare/activate/retire)");
                    }
                    last_warning = Some(std::time::Instant::now());
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the CA status"),
        }
        let ca2 = ca.clone();
        let result = tokio::task::spawn_blocking(move || ca2.reload_if_changed()).await;
        match result {
            Ok(Ok(true)) => {
                last_error = None;
                tracing::info!("CA issuer reloaded or renewed");
            }
            Ok(Ok(false)) => last_error = None,
            Ok(Err(e)) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg, "CA maintenance failed; keeping the previous issuer");
                    last_error = Some(msg);
                }
            }
            Err(_) => tracing::error!("CA maintenance task panicked"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}
