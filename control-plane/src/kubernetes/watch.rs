//! List+watch of the Kubernetes resources the control plane follows (`--k8s-watch`):
//! Pods → discovery (`pods`), Services' ClusterIPs → discovery (`services`),
//! `AuthorizationPolicy` resources → policy (`policies`).
//!
//! Each resource runs the loop the API documents for keeping a cache:
//!
//! 1. **List** the collection (pages of [`WatchConfig::page_size`] joined with
//!    `continue` tokens) and **replace** everything the source held with it: what the
//!    list does not hold is gone (reconciliation after any gap).
//! 2. **Watch** from the list's `resourceVersion` with bookmarks, applying each event and
//!    remembering the resource version of each (bookmarks only move it on).
//! 3. When the watch ends (the server's `timeoutSeconds`, a dropped connection, a
//!    malformed line, an `ERROR` event, no line for a while) watch again **from the last
//!    resource version**; when the server answers `410 Gone` / `Expired` (as an HTTP
//!    status or an `ERROR` event), or sends an event it cannot be applied from, **list
//!    again**. Failures back off exponentially with jitter.
//!
//! The pure part (decoding lines and lists, the resource-version bookkeeping, what to do
//! next) is [`Cursor`]; the loop around it only moves bytes ([`run`]).
//!
//! Until the first list of every resource has been applied, the registry and the policy
//! service hold back discovery and policy from proxies (`await_kubernetes`): a proxy
//! given a view without the pods could send plaintext to a meshed pod, one given the
//! policies without the resources' DENY rules could admit what they forbid. If the API
//! server is unreachable at start-up, proxies wait (and keep what they had).

mod config;
mod pods;
mod policies;
mod services;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use spiffe::TrustDomain;

pub use config::WatchArgs;
pub use pods::{INJECTED_ANNOTATION, Pod, PodSink, Skip, meshed_pod};
pub use policies::{PolicyResource, PolicySink, policy_from_resource, policy_name};
pub use services::{Service, ServiceSink, ServiceSkip, cluster_service};
pub use wire::{DecodeError, ObjectMeta, Status, WatchEvent, decode_event};

use super::client::{KubeClient, KubeError, WatchLines};
use crate::discovery::Registry;
use crate::metrics::Metrics;
use crate::policy::{PolicyError, PolicyService};
use wire::{ListPage, Object, decode_items};

/// Settings of the watchers.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The mesh's trust domain (pod identities are `spiffe://<td>/ns/<ns>/sa/<sa>`).
    pub trust_domain: TrustDomain,
    /// The inbound (mesh) port of injected proxies.
    pub inbound_port: u16,
    /// The namespace whose `AuthorizationPolicy` resources may select any workload.
    pub root_namespace: String,
    /// Items per list page.
    pub page_size: u32,
    /// `timeoutSeconds` asked of the server for each watch (plus up to 20 % jitter, so
    /// that watches do not all restart together); a watch with no line for that long
    /// plus a minute is considered dead.
    pub watch_timeout: Duration,
    /// First and longest delay between failed attempts.
    pub backoff: (Duration, Duration),
}

impl WatchConfig {
    /// Defaults for `trust_domain`: inbound port 15006, root namespace
    /// `ferrule-system`, pages of 500, 5-minute watches, backoff 0.5 s to 30 s.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            inbound_port: 15006,
            root_namespace: "ferrule-system".into(),
            page_size: 500,
            watch_timeout: Duration::from_secs(300),
            backoff: (Duration::from_millis(500), Duration::from_secs(30)),
        }
    }
}

/// A sink could not apply a change (the policy store failed): the source is out of
/// step, so the watcher lists again.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The policy service refused or failed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Where one resource's objects go.
pub trait Sink: Send {
    /// The object type.
    type Object: Object + Send;
    /// The resource (plural), for logs and metric labels.
    const RESOURCE: &'static str;
    /// The API path of the collection across all namespaces.
    const PATH: &'static str;
    /// Replaces everything with a complete listing.
    fn replace(&mut self, objects: Vec<Self::Object>) -> Result<(), SinkError>;
    /// An object was added or modified.
    fn upsert(&mut self, object: Self::Object) -> Result<(), SinkError>;
    /// An object was deleted.
    fn remove(&mut self, object: Self::Object) -> Result<(), SinkError>;
    /// (objects in force, invalid objects not applied), for metrics.
    fn tracked(&self) -> (usize, usize);
}

/// What the loop does after a watch line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep reading.
    Continue,
    /// Watch again from the last resource version (the reason labels the restart).
    Rewatch(&'static str),
    /// List again.
    Relist(&'static str),
}

/// The pure state of one list+watch: the resource version to watch from.
#[derive(Debug, Default)]
pub struct Cursor {
    /// `None` until listed, and again when a relist is needed.
    pub resource_version: Option<String>,
}

impl Cursor {
    /// The path of a list page.
    pub fn list_path<S: Sink>(page_size: u32, continue_token: &str) -> String {
        let mut p = format!("{}?limit={page_size}", S::PATH);
        if !continue_token.is_empty() {
            p.push_str("&continue=");
            p.push_str(&query_escape(continue_token));
        }
        p
    }

    /// The path of a watch from the current resource version (`None` if a list is due).
    pub fn watch_path<S: Sink>(&self, timeout: Duration) -> Option<String> {
        self.resource_version.as_ref().map(|rv| {
            format!(
                "{}?watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}",
                S::PATH,
                query_escape(rv),
                timeout.as_secs().max(1)
            )
        })
    }

    /// Applies a complete listing (every page's items, the last page's resource
    /// version). Undecodable items are logged and left out.
    pub fn apply_list<S: Sink>(
        &mut self,
        sink: &mut S,
        items: Vec<serde_json::Value>,
        resource_version: String,
    ) -> Result<(), SinkError> {
        let (objects, bad) = decode_items::<S::Object>(items);
        for (index, error) in bad {
            tracing::warn!(resource = S::RESOURCE, index, %error, "undecodable object in a list skipped");
        }
        sink.replace(objects)?;
        self.resource_version = Some(resource_version);
        Ok(())
    }

    /// Applies one watch line and says what to do next; `event` receives the event type
    /// of a decoded line (for metrics).
    pub fn apply_line<S: Sink>(
        &mut self,
        sink: &mut S,
        line: &[u8],
        mut event: impl FnMut(&'static str),
    ) -> Next {
        let ev = match decode_event::<S::Object>(line) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(resource = S::RESOURCE, error = %e, "watch line not applied");
                return match e {
                    DecodeError::Line(_) => Next::Rewatch("malformed_line"),
                    DecodeError::UnknownType(_) => Next::Relist("unknown_event"),
                    DecodeError::Object { .. } => Next::Relist("undecodable_object"),
                };
            }
        };
        event(ev.kind());
        let (applied, rv) = match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let rv = o.meta().resource_version.clone();
                (sink.upsert(o), rv)
            }
            WatchEvent::Deleted(o) => {
                let rv = o.meta().resource_version.clone();
                (sink.remove(o), rv)
            }
            WatchEvent::Bookmark { resource_version } => (Ok(()), resource_version),
            WatchEvent::Error(status) => {
                let gone = status.is_gone();
                tracing::warn!(
                    resource = S::RESOURCE,
                    code = status.code,
                    reason = %status.reason,
                    message = %status.message,
                    "watch ERROR event"
                );
                return if gone {
                    self.resource_version = None;
                    Next::Relist("gone")
                } else {
                    Next::Rewatch("error_event")
                };
            }
        };
        if let Err(e) = applied {
            tracing::error!(resource = S::RESOURCE, error = %e, "watch event not applied; listing again");
            self.resource_version = None;
            return Next::Relist("apply_failed");
        }
        if !rv.is_empty() {
            self.resource_version = Some(rv);
        }
        Next::Continue
    }
}

/// Percent-encodes a query value (resource versions and continue tokens are opaque).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs the watchers until `shutdown` resolves.
///
/// Cancelling is safe at any point: changes are applied synchronously between reads,
/// so a watcher stops between two changes, never inside one.
pub async fn run(
    client: KubeClient,
    config: WatchConfig,
    registry: Arc<Registry>,
    policies: Arc<PolicyService>,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let services = ServiceSink::new(registry.clone());
    let pods = PodSink::new(registry, config.trust_domain.clone(), config.inbound_port);
    let crs = PolicySink::new(
        policies,
        config.trust_domain.clone(),
        config.root_namespace.clone(),
    );
    tracing::info!(
        pods = PodSink::PATH,
        services = ServiceSink::PATH,
        policies = PolicySink::PATH,
        "watching the Kubernetes API"
    );
    tokio::select! {
        _ = list_watch(&client, pods, &config, &metrics) => {}
        _ = list_watch(&client, services, &config, &metrics) => {}
        _ = list_watch(&client, crs, &config, &metrics) => {}
        _ = shutdown => tracing::info!("Kubernetes watchers stopped"),
    }
}

/// Exponential backoff with ±20 % jitter.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new((min, max): (Duration, Duration)) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    async fn wait(&mut self) {
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(self.max);
    }
}

/// Lists and watches one resource forever.
pub async fn list_watch<S: Sink>(
    client: &KubeClient,
    mut sink: S,
    config: &WatchConfig,
    metrics: &Metrics,
) {
    let mut cursor = Cursor::default();
    let mut backoff = Backoff::new(config.backoff);
    let restart = |reason: &'static str| {
        metrics.k8s_watch_restart(S::RESOURCE, reason);
    };
    loop {
        let timeout = config
            .watch_timeout
            .mul_f64(1.0 + rand::random::<f64>() * 0.2);
        let Some(path) = cursor.watch_path::<S>(timeout) else {
            match list::<S>(client, &mut cursor, &mut sink, config.page_size).await {
                Ok(()) => {
                    let (objects, invalid) = sink.tracked();
                    metrics.k8s_synced(S::RESOURCE, objects, invalid);
                    tracing::info!(
                        resource = S::RESOURCE,
                        resource_version = cursor.resource_version.as_deref().unwrap_or_default(),
                        objects,
                        invalid,
                        "listed"
                    );
                    backoff.reset();
                }
                Err(e) => {
                    tracing::warn!(resource = S::RESOURCE, error = %e, "list failed; retrying");
                    restart("list_failed");
                    backoff.wait().await;
                }
            }
            continue;
        };
        let mut progressed = false;
        let next = match client.watch_lines(&path).await {
            Ok(lines) => {
                let idle = timeout + Duration::from_secs(60);
                watch_stream(
                    lines,
                    &mut cursor,
                    &mut sink,
                    idle,
                    metrics,
                    &mut progressed,
                )
                .await
            }
            Err(KubeError::Http { status, reason }) if status.as_u16() == 410 => {
                tracing::info!(resource = S::RESOURCE, %reason, "resource version expired");
                Next::Relist("gone")
            }
            Err(e) => {
                tracing::warn!(resource = S::RESOURCE, error = %e, "watch request failed");
                Next::Rewatch("watch_failed")
            }
        };
        let reason = match next {
            Next::Relist(r) => {
                cursor.resource_version = None;
                r
            }
            Next::Rewatch(r) => r,
            Next::Continue => "closed",
        };
        restart(reason);
        tracing::debug!(resource = S::RESOURCE, reason, "watch ended");
        if progressed {
            backoff.reset();
        } else {
            backoff.wait().await;
        }
    }
}

/// Reads one watch until it ends; returns what to do next.
async fn watch_stream<S: Sink>(
    mut lines: WatchLines,
    cursor: &mut Cursor,
    sink: &mut S,
    idle: Duration,
    metrics: &Metrics,
    progressed: &mut bool,
) -> Next {
    loop {
        let line = match tokio::time::timeout(idle, lines.next()).await {
            Err(_) => return Next::Rewatch("idle"),
            Ok(None) => return Next::Rewatch("closed"),
            Ok(Some(Err(e))) => {
                tracing::debug!(resource = S::RESOURCE, error = %e, "watch stream broke");
                return Next::Rewatch("stream_error");
            }
            Ok(Some(Ok(line))) => line,
        };
        let next = cursor.apply_line(sink, &line, |event| {
            metrics.k8s_watch_event(S::RESOURCE, event);
        });
        if next != Next::Continue {
            return next;
        }
        *progressed = true;
        let (objects, invalid) = sink.tracked();
        metrics.k8s_synced(S::RESOURCE, objects, invalid);
    }
}

/// Why a list failed.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(transparent)]
    Api(#[from] KubeError),
    #[error("the list has no resourceVersion to watch from")]
    NoResourceVersion,
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Lists every page and applies the listing. A `continue` token that expired (410)
/// restarts the listing from the first page, once.
async fn list<S: Sink>(
    client: &KubeClient,
    cursor: &mut Cursor,
    sink: &mut S,
    page_size: u32,
) -> Result<(), ListError> {
    let mut restarted = false;
    'listing: loop {
        let mut items = Vec::new();
        let mut token = String::new();
        loop {
            let path = Cursor::list_path::<S>(page_size, &token);
            let page: ListPage = match client.get_json(&path).await {
                Ok(p) => p,
                Err(KubeError::Http { status, .. })
                    if status.as_u16() == 410 && !token.is_empty() && !restarted =>
                {
                    restarted = true;
                    continue 'listing;
                }
                Err(e) => return Err(e.into()),
            };
            items.extend(page.items);
            token = page.metadata.continue_token;
            if token.is_empty() {
                let rv = page.metadata.resource_version;
                if rv.is_empty() {
                    return Err(ListError::NoResourceVersion);
                }
                cursor.apply_list(sink, items, rv)?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
