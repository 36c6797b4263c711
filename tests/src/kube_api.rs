//! A fake Kubernetes API server for the watch tests: real HTTPS on `127.0.0.1:0` with a
//! CA generated per test, speaking the list and watch wire format the Kubernetes API
//! documents ("Efficient detection of changes", API concepts), because no real API
//! server can run here.
//!
//! It keeps collections of objects with a global resource version and an event log, and
//! serves:
//! * lists (`GET <collection>?limit=N[&continue=T]`): `{"kind": "<Kind>List",
//!   "metadata": {"resourceVersion", "continue"}, "items"}`, pages from one snapshot;
//! * watches (`GET <collection>?watch=1&resourceVersion=R&allowWatchBookmarks=true`): a
//!   chunked `200` streaming one JSON event per line (`ADDED`, `MODIFIED`, `DELETED`,
//!   `BOOKMARK`, `ERROR`), starting with the logged events after `R`;
//! * `410 Gone` for a resource version older than the compacted history: as an `ERROR`
//!   event carrying a `Status` (what the watch cache does) or as the HTTP status;
//! * `401` without the expected bearer token, `404` for unknown paths.
//!
//! The test drives it: change objects (events go to open watches), send bookmarks or
//! ERROR events, compact the history, end watches cleanly or drop their connections
//! (optionally in the middle of a line). It runs on its own runtime thread so both
//! synchronous end-to-end tests and async in-process tests can use it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The Pod collection across namespaces.
pub const PODS: &str = "/api/v1/pods";
/// The Service collection across namespaces.
pub const SERVICES: &str = "/api/v1/services";
/// The AuthorizationPolicy collection across namespaces.
pub const POLICIES: &str = "/apis/ferrule.dev/v1alpha1/authorizationpolicies";

type Chunk = Result<Frame<Bytes>, std::io::Error>;
type Body = BoxBody<Bytes, std::io::Error>;

struct Collection {
    kind: &'static str,
    api_version: &'static str,
    objects: BTreeMap<(String, String), Value>,
    /// (resource version, event type, object) of every change.
    log: Vec<(u64, &'static str, Value)>,
}

struct OpenWatch {
    collection: String,
    tx: mpsc::UnboundedSender<Chunk>,
}

struct State {
    rv: u64,
    /// Events at or below this version are forgotten: watches from there get 410.
    compacted: u64,
    collections: HashMap<String, Collection>,
    watches: Vec<OpenWatch>,
    /// Path and query of every request, in order.
    requests: Vec<String>,
    /// Answer a too-old watch with HTTP 410 instead of an ERROR event.
    gone_as_http: bool,
    /// Answer lists with 500.
    fail_lists: bool,
    /// List snapshots by continue token: (items, resource version, next offset).
    pages: HashMap<String, (Vec<Value>, u64, usize)>,
    next_token: u64,
}

/// How [`FakeKube::cut_watches`] ends watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The connection breaks (no terminating chunk).
    Reset,
    /// Half an event line, then the connection breaks.
    HalfLineThenReset,
    /// Half an event line, then the response ends cleanly: the client is left with a
    /// truncated line.
    HalfLineThenClose,
}

/// The fake API server; stops when dropped.
pub struct FakeKube {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA certificate (PEM) that signed its serving certificate.
    pub ca_pem: String,
    token: Option<String>,
    state: Arc<Mutex<State>>,
    rt: Option<tokio::runtime::Runtime>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("JSON");
    b.push(b'\n');
    Bytes::from(b)
}

impl FakeKube {
    /// Starts a server requiring `Authorization: Bearer <token>` when `token` is given.
    pub fn start(token: Option<&str>) -> Self {
        let ca_params = {
            let mut p = CertificateParams::default();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        };
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        leaf.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &ca).expect("leaf");
        let tls = rustls::ServerConfig::builder_with_provider(ferrule_tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let mut collections = HashMap::new();
        collections.insert(
            PODS.to_string(),
            Collection {
                kind: "Pod",
                api_version: "v1",
                objects: BTreeMap::new(),
                log: Vec::new(),
            },
        );
        collections.insert(
            SERVICES.to_string(),
            Collection {
                kind: "Service",
                api_version: "v1",
                objects: BTreeMap::new(),
                log: Vec::new(),
            },
        );
        collections.insert(
            POLICIES.to_string(),
            Collection {
                kind: "AuthorizationPolicy",
                api_version: "ferrule.dev/v1alpha1",
                objects: BTreeMap::new(),
                log: Vec::new(),
            },
        );
        let state = Arc::new(Mutex::new(State {
            rv: 1000,
            compacted: 0,
            collections,
            watches: Vec::new(),
            requests: Vec::new(),
            gone_as_http: false,
            fail_lists: false,
            pages: HashMap::new(),
            next_token: 0,
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // Bound here (std), so `start` works inside another runtime too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let token = token.map(str::to_string);
        let (st, tok) = (state.clone(), token.clone());
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, st, tok) = (acceptor.clone(), st.clone(), tok.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, tok) = (st.clone(), tok.clone());
                        async move { Ok::<_, std::convert::Infallible>(serve(req, &st, tok.as_deref())) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem: ca.pem(),
            token,
            state,
            rt: Some(rt),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Writes the CA (`ca.pem`) and, if any, the token (`token`) into `dir`.
    pub fn write_files(&self, dir: &Path) -> (PathBuf, Option<PathBuf>) {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &self.ca_pem).expect("write CA");
        let token = self.token.as_ref().map(|t| {
            let p = dir.join("token");
            std::fs::write(&p, t).expect("write token");
            p
        });
        (ca, token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates or replaces an object in `collection` (its `metadata.resourceVersion` is
    /// set); open watches get `ADDED` or `MODIFIED`. Returns the resource version.
    pub fn apply(&self, collection: &str, mut object: Value) -> u64 {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&object);
        let c = st
            .collections
            .get_mut(collection)
            .expect("known collection");
        let kind = if c.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.objects.insert(key, object.clone());
        c.log.push((rv, kind, object.clone()));
        broadcast(
            &mut st,
            collection,
            &line(&json!({"type": kind, "object": object})),
        );
        rv
    }

    /// Deletes an object; open watches get `DELETED`.
    pub fn delete(&self, collection: &str, namespace: &str, name: &str) -> u64 {
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let c = st
            .collections
            .get_mut(collection)
            .expect("known collection");
        let Some(mut object) = c.objects.remove(&(namespace.into(), name.into())) else {
            panic!("no {namespace}/{name} in {collection}");
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        c.log.push((rv, "DELETED", object.clone()));
        broadcast(
            &mut st,
            collection,
            &line(&json!({"type": "DELETED", "object": object})),
        );
        rv
    }

    /// Deletes an object while no watch can see it: no event, and the history is
    /// compacted past it, so only a new list reveals the deletion. Open watches are not
    /// told (call [`Self::expire`] or drop them).
    pub fn delete_unseen(&self, collection: &str, namespace: &str, name: &str) {
        let mut st = self.lock();
        st.rv += 1;
        st.compacted = st.rv;
        let c = st
            .collections
            .get_mut(collection)
            .expect("known collection");
        c.objects.remove(&(namespace.into(), name.into()));
    }

    /// Sends every open watch a `BOOKMARK` at the current resource version.
    pub fn bookmark(&self) -> u64 {
        let mut st = self.lock();
        let rv = st.rv;
        let watches: Vec<String> = st.watches.iter().map(|w| w.collection.clone()).collect();
        for collection in watches {
            let kind = st.collections[&collection].kind;
            let api_version = st.collections[&collection].api_version;
            let b = line(&json!({"type": "BOOKMARK", "object": {"kind": kind,
                "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}}}));
            broadcast(&mut st, &collection, &b);
        }
        rv
    }

    /// Sends every open watch an `ERROR` event with a `Status` of `code`, then ends it.
    pub fn error_event(&self, code: u16, reason: &str, message: &str) {
        let mut st = self.lock();
        let e = line(&json!({"type": "ERROR", "object": status(code, reason, message)}));
        for w in st.watches.drain(..) {
            let _ = w.tx.send(Ok(Frame::data(e.clone())));
        }
    }

    /// Forgets the history up to now: open watches get `ERROR` 410 `Expired` and end, and
    /// a watch from an older resource version is refused the same way.
    pub fn expire(&self) {
        let rv = {
            let mut st = self.lock();
            st.compacted = st.rv;
            st.rv
        };
        self.error_event(
            410,
            "Expired",
            &format!("too old resource version: {} ({rv})", rv - 1),
        );
    }

    /// Refuse too-old watches with HTTP 410 (`true`) or an `ERROR` event (`false`).
    pub fn set_gone_as_http(&self, http: bool) {
        self.lock().gone_as_http = http;
    }

    /// Ends every open watch cleanly (as the server's `timeoutSeconds` does).
    pub fn end_watches(&self) {
        self.lock().watches.clear();
    }

    /// Cuts every open watch short (see [`Cut`]).
    pub fn cut_watches(&self, cut: Cut) {
        let mut st = self.lock();
        for w in st.watches.drain(..) {
            if matches!(cut, Cut::HalfLineThenReset | Cut::HalfLineThenClose) {
                let half = Bytes::from_static(br#"{"type":"ADDED","object":{"metadata":{"name":"#);
                let _ = w.tx.send(Ok(Frame::data(half)));
            }
            if matches!(cut, Cut::Reset | Cut::HalfLineThenReset) {
                let _ =
                    w.tx.send(Err(std::io::Error::other("connection dropped by the test")));
            }
        }
    }

    /// Answer lists with `500 InternalError` while `fail` is set.
    pub fn fail_lists(&self, fail: bool) {
        self.lock().fail_lists = fail;
    }

    /// Open watches of `collection`.
    pub fn open_watches(&self, collection: &str) -> usize {
        self.lock()
            .watches
            .iter()
            .filter(|w| w.collection == collection && !w.tx.is_closed())
            .count()
    }

    /// Path and query of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The number of list requests (first pages) for `collection`.
    pub fn lists(&self, collection: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.split_once('?').map(|(p, _)| p) == Some(collection)
                    && !r.contains("watch=")
                    && !r.contains("continue=")
            })
            .count()
    }

    /// The `resourceVersion` of every watch request for `collection`, in order.
    pub fn watch_versions(&self, collection: &str) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| {
                let (p, q) = r.split_once('?')?;
                let q = query(q);
                (p == collection && q.contains_key("watch"))
                    .then(|| q.get("resourceVersion").cloned().unwrap_or_default())
            })
            .collect()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn key_of(object: &Value) -> (String, String) {
    let m = &object["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().expect("metadata.name").to_string(),
    )
}

fn broadcast(st: &mut State, collection: &str, bytes: &Bytes) {
    st.watches.retain(|w| {
        w.collection != collection || w.tx.send(Ok(Frame::data(bytes.clone()))).is_ok()
    });
}

fn query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_reply(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(serde_json::to_vec(v).expect("JSON")))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("response")
}

fn serve(req: Request<Incoming>, state: &Mutex<State>, token: Option<&str>) -> Response<Body> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    st.requests.push(path_and_query);
    if let Some(t) = token {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {t}")) {
            return json_reply(
                StatusCode::UNAUTHORIZED,
                &status(401, "Unauthorized", "Unauthorized"),
            );
        }
    }
    let path = req.uri().path().to_string();
    let q = query(req.uri().query().unwrap_or_default());
    if !st.collections.contains_key(&path) {
        return json_reply(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    if q.get("watch").is_some_and(|w| w == "1" || w == "true") {
        watch(&mut st, &path, &q)
    } else {
        list(&mut st, &path, &q)
    }
}

fn list(st: &mut State, path: &str, q: &HashMap<String, String>) -> Response<Body> {
    if st.fail_lists {
        return json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &status(500, "InternalError", "etcdserver: request timed out"),
        );
    }
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (items, rv, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match st.pages.get(token) {
            Some((_, rv, _)) if *rv < st.compacted => {
                return json_reply(
                    StatusCode::GONE,
                    &status(410, "Expired", "The provided continue parameter is too old"),
                );
            }
            Some(p) => p.clone(),
            None => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    &status(400, "BadRequest", "invalid continue token"),
                );
            }
        },
        None => {
            let c = &st.collections[path];
            (c.objects.values().cloned().collect(), st.rv, 0)
        }
    };
    let end = offset.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items[offset..end].to_vec();
    let continue_token = if end < items.len() {
        st.next_token += 1;
        // Opaque, and needing escaping in a query, like the API server's base64 ones.
        let token = format!("c+{}/{}=", st.next_token, rv);
        st.pages.insert(token.clone(), (items, rv, end));
        token
    } else {
        String::new()
    };
    let c = &st.collections[path];
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if !continue_token.is_empty() {
        metadata["continue"] = json!(continue_token);
    }
    json_reply(
        StatusCode::OK,
        &json!({"kind": format!("{}List", c.kind), "apiVersion": c.api_version,
            "metadata": metadata, "items": page}),
    )
}

fn watch(st: &mut State, path: &str, q: &HashMap<String, String>) -> Response<Body> {
    let from: u64 = match q.get("resourceVersion").map(|v| v.parse()) {
        Some(Ok(v)) => v,
        _ => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &status(
                    400,
                    "BadRequest",
                    "this fake serves watches from a resourceVersion only",
                ),
            );
        }
    };
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    if from < st.compacted {
        let message = format!("too old resource version: {from} ({})", st.rv);
        if st.gone_as_http {
            return json_reply(StatusCode::GONE, &status(410, "Expired", &message));
        }
        let e = line(&json!({"type": "ERROR", "object": status(410, "Expired", &message)}));
        let _ = tx.send(Ok(Frame::data(e)));
        drop(tx);
    } else {
        for (rv, kind, object) in &st.collections[path].log {
            if *rv > from {
                let _ = tx.send(Ok(Frame::data(line(
                    &json!({"type": kind, "object": object}),
                ))));
            }
        }
        st.watches.push(OpenWatch {
            collection: path.to_string(),
            tx,
        });
    }
    let body = StreamBody::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(body))
        .expect("response")
}

/// An injected Pod as the API server returns it (fields from the Pod API reference).
pub fn pod(namespace: &str, name: &str, service_account: &str, phase: &str, ips: &[&str]) -> Value {
    let mut p = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("00000000-0000-0000-0000-{:012x}", name.len()),
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"app": service_account},
            "annotations": {"ferrule.dev/injected": "true"}
        },
        "spec": {
            "serviceAccountName": service_account,
            "nodeName": "node-1",
            "containers": [{"name": "app", "image": "app:1"}]
        },
        "status": {"phase": phase, "hostIP": "192.168.0.10"}
    });
    if let Some(first) = ips.first() {
        p["status"]["podIP"] = json!(first);
        p["status"]["podIPs"] = Value::Array(ips.iter().map(|ip| json!({ "ip": ip })).collect());
    }
    p
}

/// A `ClusterIP` Service selecting `app: <app>` on TCP `ports` (targetPort = port), as
/// the API server returns it (fields from the Service API reference).
pub fn service(
    namespace: &str,
    name: &str,
    cluster_ips: &[&str],
    app: &str,
    ports: &[u16],
) -> Value {
    json!({
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("22222222-0000-0000-0000-{:012x}", name.len()),
            "creationTimestamp": "2025-01-02T03:04:05Z"
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ips.first(),
            "clusterIPs": cluster_ips,
            "ipFamilyPolicy": if cluster_ips.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "selector": {"app": app},
            "sessionAffinity": "None",
            "ports": ports.iter().map(|p| json!({
                "name": format!("tcp-{p}"), "protocol": "TCP", "port": p, "targetPort": p
            })).collect::<Vec<_>>()
        },
        "status": {"loadBalancer": {}}
    })
}

/// An AuthorizationPolicy resource with `spec`.
pub fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferrule.dev/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace, "generation": 1,
            "uid": "11111111-2222-3333-4444-555555555555",
            "creationTimestamp": "2025-01-02T03:04:05Z"},
        "spec": spec
    })
}
