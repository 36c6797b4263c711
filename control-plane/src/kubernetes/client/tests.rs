//! The API client against a real HTTPS server speaking the Kubernetes wire format.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::testing::{FakeApiServer, Reply, TestPki};
use super::*;

#[tokio::test]
async fn get_and_post_json_with_a_bearer_token_reread_per_request() {
    let server = FakeApiServer::start(|req| {
        Reply::json(
            200,
            json!({"method": req.method.as_str(), "path": req.path}),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let client = server.client(Some(token.clone()));

    let got: serde_json::Value = client.get_json("/api/v1/pods?limit=1").await.unwrap();
    assert_eq!(
        got,
        json!({"method": "GET", "path": "/api/v1/pods?limit=1"})
    );
    // The kubelet rotates projected tokens: the next request carries the new one.
    std::fs::write(&token, "second-token").unwrap();
    let got: serde_json::Value = client.post_json("/apis/x", &json!({"a": 1})).await.unwrap();
    assert_eq!(got["method"], "POST");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].authorization.as_deref(), Some("Bearer first-token"));
    assert_eq!(
        reqs[1].authorization.as_deref(),
        Some("Bearer second-token")
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reqs[1].body).unwrap(),
        json!({"a": 1})
    );
}

#[tokio::test]
async fn error_statuses_carry_the_status_objects_reason() {
    let server = FakeApiServer::start(|req| match req.path.as_str() {
        "/gone" => Reply::json(
            410,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "too old resource version: 1 (5)", "reason": "Expired", "code": 410}),
        ),
        _ => Reply::raw(503, "<html>upstream down</html>"),
    })
    .await;
    let client = server.client(None);
    match client.get_json::<serde_json::Value>("/gone").await {
        Err(KubeError::Http { status, reason }) => {
            assert_eq!(status, StatusCode::GONE);
            assert_eq!(reason, "Expired: too old resource version: 1 (5)");
        }
        other => panic!("expected a 410, got {other:?}"),
    }
    match client.get_json::<serde_json::Value>("/other").await {
        Err(KubeError::Http { status, reason }) => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(reason, "Service Unavailable");
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    assert!(server.requests()[0].authorization.is_none());
}

#[tokio::test]
async fn garbage_bodies_are_decode_errors() {
    let server = FakeApiServer::start(|_| Reply::raw(200, "not json {")).await;
    let err = server
        .client(None)
        .get_json::<serde_json::Value>("/x")
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = FakeApiServer::start(|_| Reply::raw(200, vec![b' '; MAX_BODY_BYTES + 1])).await;
    let err = server
        .client(None)
        .get_json::<serde_json::Value>("/big")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KubeError::Decode(m) if m.contains("larger than")),
        "{err:?}"
    );
}

#[tokio::test]
async fn servers_outside_the_configured_ca_or_name_are_refused() {
    // Signed by another CA than the one the client trusts.
    let server = FakeApiServer::start(|_| Reply::json(200, json!({}))).await;
    let other = TestPki::new(&["localhost"], true);
    let client = KubeClient::new(KubeClientConfig {
        base_url: server.url().parse().unwrap(),
        ca_pem: other.ca_pem.into_bytes(),
        token_file: None,
    })
    .unwrap();
    let err = client.get_json::<serde_json::Value>("/").await.unwrap_err();
    assert!(matches!(err, KubeError::Tls(_)), "{err:?}");

    // Trusted CA, but the certificate does not name 127.0.0.1.
    let named = FakeApiServer::start_with(TestPki::new(&["kubernetes.default.svc"], false), |_| {
        Reply::json(200, json!({}))
    })
    .await;
    let err = named
        .client(None)
        .get_json::<serde_json::Value>("/")
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Tls(_)), "{err:?}");
    assert!(named.requests().is_empty(), "no request may be sent");
}

#[tokio::test]
async fn unreachable_servers_are_io_errors() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = KubeClient::new(KubeClientConfig {
        base_url: format!("https://127.0.0.1:{port}").parse().unwrap(),
        ca_pem: TestPki::new(&["localhost"], true).ca_pem.into_bytes(),
        token_file: None,
    })
    .unwrap();
    let err = client.get_json::<serde_json::Value>("/").await.unwrap_err();
    assert!(matches!(err, KubeError::Io(_)), "{err:?}");
}

#[test]
fn bad_configurations_are_refused() {
    let ca = TestPki::new(&["localhost"], true).ca_pem.into_bytes();
    let cfg = |url: &str, ca: &[u8]| KubeClientConfig {
        base_url: url.parse().unwrap(),
        ca_pem: ca.to_vec(),
        token_file: None,
    };
    for url in [
        "http://127.0.0.1:6443",
        "https://127.0.0.1:6443/api",
        "https://h/?x=1",
    ] {
        let err = KubeClient::new(cfg(url, &ca)).unwrap_err();
        assert!(matches!(err, KubeError::Config { .. }), "{url}: {err:?}");
    }
    let err = KubeClient::new(cfg("https://127.0.0.1:6443", b"no pem here")).unwrap_err();
    assert!(matches!(err, KubeError::Config { .. }), "{err:?}");
    assert!(KubeClient::new(cfg("https://[::1]:6443", &ca)).is_ok());
}

#[tokio::test]
async fn watch_lines_are_split_on_newlines_across_chunks() {
    let hits = AtomicUsize::new(0);
    let server = FakeApiServer::start(move |_| {
        hits.fetch_add(1, Ordering::SeqCst);
        Reply {
            status: StatusCode::OK,
            chunks: vec![
                b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n{\"type\":\"MOD".to_vec(),
                b"IFIED\",\"object\":{}}\r\n\n".to_vec(),
                b"{\"type\":\"BOOKMARK\"}".to_vec(),
            ],
        }
    })
    .await;
    let mut lines = server
        .client(None)
        .watch_lines("/api/v1/pods?watch=1&resourceVersion=5&allowWatchBookmarks=true")
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(line) = lines.next().await {
        got.push(String::from_utf8(line.unwrap().to_vec()).unwrap());
    }
    assert_eq!(
        got,
        [
            r#"{"type":"ADDED","object":{"a":1}}"#,
            r#"{"type":"MODIFIED","object":{}}"#,
            r#"{"type":"BOOKMARK"}"#,
        ]
    );
    assert_eq!(
        server.requests()[0].path,
        "/api/v1/pods?watch=1&resourceVersion=5&allowWatchBookmarks=true"
    );
}

#[tokio::test]
async fn a_watch_refused_up_front_is_an_http_error() {
    let server = FakeApiServer::start(|_| {
        Reply::json(
            410,
            json!({"kind": "Status", "status": "Failure", "reason": "Gone", "code": 410}),
        )
    })
    .await;
    let err = server
        .client(None)
        .watch_lines("/api/v1/pods?watch=1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KubeError::Http { status, reason } if *status == StatusCode::GONE && reason == "Gone"),
        "{err:?}"
    );
}
