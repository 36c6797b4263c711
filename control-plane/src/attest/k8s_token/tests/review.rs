//! TokenReview verification against a real HTTPS server speaking the documented
//! `authentication.k8s.io/v1` TokenReview API.

use serde_json::{Value, json};

use super::support::*;
use crate::attest::k8s_token::token_review::{TOKEN_REVIEW_PATH, TokenReviewer};
use crate::attest::k8s_token::{K8sTokenAttestor, K8sTokenError, ServiceAccountIdentity};
use crate::kubernetes::client::KubeError;
use crate::kubernetes::client::testing::{FakeApiServer, Reply};

/// The API server's answer for an authenticated, pod-bound token of `shop/web`
/// (status as documented, with the `extra` keys the service-account authenticator sets).
fn authenticated(audiences: Value) -> Value {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"token": "<redacted by the test>", "audiences": [AUD]},
        "status": {
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:shop:web",
                "uid": "1a2b3c4d-0000-4000-8000-000000000003",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/credential-id": ["JTI=3c4f8a52-7d64-4d3e-9a53-0b8f2f6d7e11"],
                    "authentication.kubernetes.io/node-name": ["node-a"],
                    "authentication.kubernetes.io/node-uid": ["6a1b2c3d-0000-4000-8000-000000000001"],
                    "authentication.kubernetes.io/pod-name": ["web-5d8f7b9c4-x2x9q"],
                    "authentication.kubernetes.io/pod-uid": ["0f9e8d7c-0000-4000-8000-000000000002"]
                }
            },
            "audiences": audiences
        }
    })
}

struct Setup {
    server: FakeApiServer,
    attestor: K8sTokenAttestor,
    token: String,
    _dir: tempfile::TempDir,
}

async fn setup(reply: impl Fn() -> Reply + Send + Sync + 'static) -> Setup {
    let server = FakeApiServer::start(move |_| reply()).await;
    let dir = tempfile::tempdir().unwrap();
    let cp_token = dir.path().join("token");
    std::fs::write(&cp_token, "control-plane-sa-token\n").unwrap();
    let reviewer = TokenReviewer::new(server.client(Some(cp_token)));
    Setup {
        server,
        attestor: K8sTokenAttestor::token_review(td(), AUD.into(), reviewer),
        token: TestKey::rsa().token(&claims()),
        _dir: dir,
    }
}

async fn review(
    reply: impl Fn() -> Reply + Send + Sync + 'static,
) -> Result<ServiceAccountIdentity, K8sTokenError> {
    let s = setup(reply).await;
    s.attestor.attest(&s.token, now()).await
}

#[tokio::test]
async fn an_authenticated_pod_token_is_accepted_and_the_request_is_as_documented() {
    let s = setup(|| Reply::json(201, authenticated(json!([AUD])))).await;
    let id = s.attestor.attest(&s.token, now()).await.unwrap();
    assert_eq!(
        id.spiffe_id.to_string(),
        "spiffe://example.org/ns/shop/sa/web"
    );
    assert_eq!(id.pod_name, "web-5d8f7b9c4-x2x9q");
    assert_eq!(id.pod_uid, "0f9e8d7c-0000-4000-8000-000000000002");

    let reqs = s.server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, http::Method::POST);
    assert_eq!(reqs[0].path, TOKEN_REVIEW_PATH);
    // The control plane authenticates with its own token, not the workload's.
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some("Bearer control-plane-sa-token")
    );
    let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(
        body,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": s.token, "audiences": [AUD]}
        })
    );
}

#[tokio::test]
async fn an_unauthenticated_token_is_refused_with_the_servers_reason() {
    let err = review(|| {
        Reply::json(
            201,
            json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                   "status": {"user": {}, "error": "[invalid bearer token, token has been invalidated]"}}),
        )
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, K8sTokenError::NotAuthenticated(m) if m.contains("invalidated")),
        "{err:?}"
    );
}

#[tokio::test]
async fn audiences_not_confirmed_by_the_server_are_refused() {
    for audiences in [
        json!(["https://kubernetes.default.svc"]),
        json!([]),
        Value::Null,
    ] {
        let a = audiences.clone();
        let err = review(move || {
            let mut r = authenticated(a.clone());
            if a.is_null() {
                r["status"].as_object_mut().unwrap().remove("audiences");
            }
            Reply::json(201, r)
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, K8sTokenError::WrongAudience { .. }),
            "{audiences}: {err:?}"
        );
    }
}

#[tokio::test]
async fn users_that_are_not_pod_bound_service_accounts_are_refused() {
    let err = review(|| {
        let mut r = authenticated(json!([AUD]));
        r["status"]["user"]["username"] = json!("alice@example.com");
        Reply::json(201, r)
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, K8sTokenError::NotServiceAccount(u) if u == "alice@example.com"),
        "{err:?}"
    );

    let err = review(|| {
        let mut r = authenticated(json!([AUD]));
        r["status"]["user"]["extra"]
            .as_object_mut()
            .unwrap()
            .remove("authentication.kubernetes.io/pod-name");
        Reply::json(201, r)
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            K8sTokenError::MissingClaim("authentication.kubernetes.io/pod-name")
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn api_server_failures_are_unavailable_not_a_verdict_on_the_token() {
    let status = |code: u16, reason: &str| {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
               "reason": reason, "message": format!("{reason} (test)")})
    };
    let cases = [
        (401, status(401, "Unauthorized")),
        (403, status(403, "Forbidden")),
        (500, status(500, "InternalError")),
    ];
    for (code, body) in cases {
        let err = review(move || Reply::json(code, body.clone()))
            .await
            .unwrap_err();
        match &err {
            K8sTokenError::Unavailable(KubeError::Http { status, .. }) => {
                assert_eq!(status.as_u16(), code)
            }
            other => panic!("{code}: expected unavailable, got {other:?}"),
        }
        assert_eq!(err.reason(), "k8s_api_unavailable");
    }
    for garbage in [
        &b"<html>proxy error</html>"[..],
        b"{\"kind\":\"Status\"}",
        b"[]",
    ] {
        let g = garbage.to_vec();
        let err = review(move || Reply::raw(200, g.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, K8sTokenError::Unavailable(KubeError::Decode(_))),
            "{}: {err:?}",
            String::from_utf8_lossy(garbage)
        );
    }
}

#[tokio::test]
async fn malformed_tokens_are_not_forwarded() {
    let s = setup(|| Reply::json(201, authenticated(json!([AUD])))).await;
    let err = s.attestor.attest("not-a-jwt", now()).await.unwrap_err();
    assert!(matches!(err, K8sTokenError::Malformed(_)), "{err:?}");
    assert!(s.server.requests().is_empty());
}
