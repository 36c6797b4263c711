//! Wires the proxy together: identity → control-plane session → inbound and outbound
//! listeners → admin endpoint, and runs graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use ferrule_tls::{IdentityHandle, TlsOptions, TrustBundle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::config::file::Mode;
use crate::control::sync::{RegisterInfo, SyncStatus};
use crate::control::{ControlClient, bundle, sync};
use crate::discovery::Discovery;
use crate::drain::Drain;
use crate::identity::IdentityManager;
use crate::inbound::{Inbound, InboundSettings, PortSettings};
use crate::metrics::Metrics;
use crate::outbound::{Destination, Outbound, OutboundSettings};
use crate::policy::Authorizer;

/// The proxy's own ports in transparent mode (never forwarded to).
fn own_ports(config: &Config) -> Vec<u16> {
    vec![
        config.admin_listen.port(),
        config.file.inbound.listen.port(),
        config.file.outbound.listen.port(),
    ]
}

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run(config: Config, log_level: crate::telemetry::LogLevel) -> anyhow::Result<()> {
    let file = &config.file;
    let identity = IdentityHandle::new();
    let metrics = Metrics::new();
    identity.set_bundle(
        TrustBundle::from_pem(config.trust_domain.clone(), &config.bundle_pem, 0)
            .context("loading the bootstrap trust bundle")?,
    );
    let control = ControlClient::new(
        config.control_plane.clone(),
        &identity,
        config.control_plane_id.clone(),
    )?;
    let manager = IdentityManager::new(
        control.clone(),
        identity.clone(),
        config.trust_domain.clone(),
        config.bootstrap.clone(),
        config.expected_id.clone(),
        config.renew_fraction,
        metrics.clone(),
    );
    let identity_status = manager.status();
    // One cap per direction under one shutdown signal: a flood of inbound connections
    // cannot starve the workload's own outbound connections. Both must fit in the
    // descriptor limit, or a flood would starve the admin endpoint too (`descriptors`).
    let max_connections = match crate::descriptors::raise_nofile_limit() {
        Some(nofile) => {
            let cap = crate::descriptors::connection_cap(nofile, file.limits.max_connections);
            if cap < file.limits.max_connections {
                tracing::info!(
                    configured = file.limits.max_connections,
                    cap,
                    nofile,
                    "limits.max_connections lowered to fit the descriptor limit (RLIMIT_NOFILE)"
                );
            }
            cap
        }
        None => file.limits.max_connections,
    };
    let drain = Drain::new(max_connections);
    let outbound_drain = drain.sibling(max_connections);
    let authz = Authorizer::new(identity.clone());
    let discovery = Discovery::new();
    let sync_status = watch::Sender::new(SyncStatus::default());
    let tls_opts = TlsOptions {
        tls13_only: file.tls.tls13_only,
        ..Default::default()
    };

    // Bind everything first so a port conflict fails the start, loudly.
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding the admin endpoint on {}", config.admin_listen))?;
    let inbound_listener = bind_inbound(file.inbound.listen).await?;
    let mut outbound_listeners = Vec::new();
    match file.mode {
        Mode::Transparent => {
            let l = TcpListener::bind(file.outbound.listen)
                .await
                .with_context(|| {
                    format!("binding the outbound listener on {}", file.outbound.listen)
                })?;
            outbound_listeners.push((l, Destination::Original));
            // REDIRECT sends IPv6 connections to ::1: listen there too when the
            // configured listener is IPv4 loopback.
            if file.outbound.listen.ip() == std::net::Ipv4Addr::LOCALHOST {
                let v6 = std::net::SocketAddr::from((
                    std::net::Ipv6Addr::LOCALHOST,
                    file.outbound.listen.port(),
                ));
                match TcpListener::bind(v6).await {
                    Ok(l) => outbound_listeners.push((l, Destination::Original)),
                    Err(e) => {
                        tracing::warn!(addr = %v6, error = %e, "no IPv6 outbound listener; IPv6 traffic cannot be captured")
                    }
                }
            }
        }
        Mode::Explicit => {
            for u in &file.outbound.upstreams {
                let l = TcpListener::bind(u.listen).await.with_context(|| {
                    format!(
                        "binding upstream {} (service {}) on {}",
                        u.port, u.service, u.listen
                    )
                })?;
                outbound_listeners.push((
                    l,
                    Destination::Service {
                        service: Arc::from(u.service.as_str()),
                        port: u.port,
                    },
                ));
            }
        }
    }

    let inbound = Arc::new(Inbound::new(
        InboundSettings {
            mode: file.mode,
            default_mode: file.inbound.default_mode,
            ports: file
                .inbound
                .ports
                .iter()
                .map(|p| {
                    (
                        p.port,
                        PortSettings {
                            app: p.app,
                            mode: p.mode.unwrap_or(file.inbound.default_mode),
                            protocol: p.protocol,
                        },
                    )
                })
                .collect::<HashMap<_, _>>(),
            own_ports: own_ports(&config),
            limits: file.limits.clone(),
            close_on_policy_change: file.inbound.close_on_policy_change,
        },
        &identity,
        &tls_opts,
        authz.clone(),
        metrics.clone(),
    )?);
    let outbound = Arc::new(Outbound::new(
        OutboundSettings {
            unmeshed: file.outbound.unmeshed,
            limits: file.limits.clone(),
            tls: tls_opts.clone(),
            pool: file.outbound.pool,
            pool_idle_timeout: file.outbound.pool_idle_timeout,
        },
        identity.clone(),
        discovery.clone(),
        metrics.clone(),
    ));

    tokio::spawn(manager.run());
    tokio::spawn(bundle::watch(
        control.clone(),
        identity.clone(),
        config.trust_domain.clone(),
    ));
    tokio::spawn(sync::run(
        control,
        identity.clone(),
        discovery.clone(),
        RegisterInfo {
            service: file.service.clone().unwrap_or_default(),
            inbound_port: file.inbound.listen.port(),
            app_ports: file.inbound.ports.iter().map(|p| p.port).collect(),
        },
        sync_status.clone(),
        metrics.clone(),
        authz.clone(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(inbound.run(inbound_listener, drain.clone()));
    for (l, dest) in outbound_listeners {
        tasks.spawn(outbound.clone().run(l, dest, outbound_drain.clone()));
    }
    tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            identity: identity.clone(),
            status: identity_status,
            sync: sync_status.subscribe(),
            discovery: discovery.clone(),
            drain: drain.clone(),
            outbound_drain: outbound_drain.clone(),
            metrics: metrics.clone(),
            authz: authz.clone(),
            log_level,
        },
    ));
    tracing::info!(
        control_plane = %config.control_plane,
        admin = %config.admin_listen,
        inbound = %file.inbound.listen,
        mode = ?file.mode,
        "proxy started"
    );

    shutdown_signal().await;
    // Readiness turns false first, then listeners stop, then live connections drain.
    drain.start();
    let grace = file.limits.shutdown_grace;
    tracing::info!(
        active = drain.active() + outbound_drain.active(),
        grace_s = grace.as_secs(),
        "draining connections"
    );
    while tasks.join_next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + grace;
    let inbound_done = drain.wait_idle(grace).await;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let outbound_done = outbound_drain.wait_idle(left).await;
    if inbound_done && outbound_done {
        tracing::info!("all connections finished; proxy stopped");
    } else {
        tracing::warn!(
            active = drain.active() + outbound_drain.active(),
            "grace period over; closing remaining connections"
        );
    }
    Ok(())
}

/// Binds the inbound listener. `[::]` is dual-stack (IPv4 arrives IPv4-mapped); on a
/// host without IPv6 it falls back to `0.0.0.0` on the same port.
async fn bind_inbound(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
            let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(error = %e, fallback = %v4, "no IPv6: inbound listener is IPv4 only");
            TcpListener::bind(v4)
                .await
                .with_context(|| format!("binding the inbound listener on {v4}"))
        }
        Err(e) => Err(e).with_context(|| format!("binding the inbound listener on {addr}")),
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
