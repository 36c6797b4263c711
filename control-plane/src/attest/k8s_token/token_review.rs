//! TokenReview verification: the API server authenticates the token for our audience.
//!
//! `POST /apis/authentication.k8s.io/v1/tokenreviews` with
//! `spec: {token, audiences: [<aud>]}` (the control plane's own service account needs
//! the `system:auth-delegator` ClusterRole, or a role allowing `create` on
//! `tokenreviews`). The answer is accepted only if `status.authenticated` is true,
//! `status.audiences` includes ours (an API server that ignores `spec.audiences` leaves it
//! empty, and is refused: fail closed), the user is `system:serviceaccount:<ns>:<sa>`, and
//! the token is bound to a pod (`authentication.kubernetes.io/pod-name` in
//! `status.user.extra`).
//!
//! An API server that cannot be reached, refuses *our* credentials (401/403), fails
//! (5xx) or answers something that is not a TokenReview is reported as
//! [`K8sTokenError::Unavailable`]: the caller is not at fault and may retry.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use spiffe::TrustDomain;

use super::{K8sTokenError, ServiceAccountIdentity, identity, parse_sa_username};
use crate::kubernetes::client::{KubeClient, KubeError};

/// The TokenReview collection.
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// `status.user.extra` key naming the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// `status.user.extra` key with that pod's UID.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Asks one API server about tokens.
#[derive(Debug, Clone)]
pub struct TokenReviewer {
    client: KubeClient,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Spec<'a> {
    token: &'a str,
    audiences: [&'a str; 1],
}

/// The fields of a TokenReview answer that we read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    kind: Option<String>,
    status: Option<Status>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    username: String,
    #[serde(default)]
    extra: HashMap<String, Vec<String>>,
}

impl TokenReviewer {
    /// Reviews tokens through `client`.
    pub fn new(client: KubeClient) -> Self {
        Self { client }
    }

    /// Submits `token` for `audience` and turns the answer into an identity.
    pub async fn review(
        &self,
        token: &str,
        audience: &str,
        td: &TrustDomain,
    ) -> Result<ServiceAccountIdentity, K8sTokenError> {
        let req = Request {
            api_version: "authentication.k8s.io/v1",
            kind: "TokenReview",
            spec: Spec {
                token,
                audiences: [audience],
            },
        };
        let review: Review = self
            .client
            .post_json(TOKEN_REVIEW_PATH, &req)
            .await
            .map_err(K8sTokenError::Unavailable)?;
        if review.kind.as_deref().is_some_and(|k| k != "TokenReview") {
            return Err(K8sTokenError::Unavailable(KubeError::Decode(format!(
                "expected a TokenReview, got kind {:?}",
                review.kind
            ))));
        }
        let status = review.status.ok_or_else(|| {
            K8sTokenError::Unavailable(KubeError::Decode("TokenReview without status".into()))
        })?;
        if !status.authenticated {
            let why = if status.error.is_empty() {
                "not authenticated".to_string()
            } else {
                status.error
            };
            return Err(K8sTokenError::NotAuthenticated(why));
        }
        if !status.audiences.iter().any(|a| a == audience) {
            return Err(K8sTokenError::WrongAudience {
                found: status.audiences,
                expected: audience.to_string(),
            });
        }
        let user = status
            .user
            .ok_or(K8sTokenError::MissingClaim("status.user"))?;
        let (ns, sa) = parse_sa_username(&user.username)
            .ok_or_else(|| K8sTokenError::NotServiceAccount(user.username.clone()))?;
        let first = |key: &str| {
            user.extra
                .get(key)
                .and_then(|v| v.first())
                .map(String::as_str)
                .unwrap_or("")
        };
        let pod_name = first(POD_NAME_EXTRA);
        if pod_name.is_empty() {
            return Err(K8sTokenError::MissingClaim(POD_NAME_EXTRA));
        }
        identity(td, ns, sa, pod_name, first(POD_UID_EXTRA))
    }
}
