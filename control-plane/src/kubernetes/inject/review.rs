//! The AdmissionReview envelope (`admission.k8s.io/v1`): checking a request, and writing
//! the response (`uid` echoed, `patchType: JSONPatch`, base64 patch). See the module docs
//! of `inject` for when a problem is an HTTP 400 and when an `allowed: false` response.

use base64::Engine as _;
use serde_json::{Value, json};

use super::InjectConfig;
use super::patch::{Mutation, Refusal, mutate};

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";
/// Longest `request.uid` echoed (the API server sends a 36-character UUID).
const MAX_UID: usize = 128;

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// HTTP 200 with `body`, an AdmissionReview response.
    Review {
        /// The AdmissionReview JSON.
        body: Value,
        /// What was decided, for the log.
        summary: Summary,
    },
    /// HTTP 400: the envelope is unusable (no `uid` to answer to). The text says why.
    BadRequest(String),
}

/// One admission, for the log line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// `request.uid`.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// `metadata.name`, else `metadata.generateName` (pods of controllers have no name yet).
    pub pod: String,
    /// `injected`, `unchanged` or `refused`.
    pub decision: &'static str,
    /// Why (unchanged, refused) or the SPIFFE ID (injected).
    pub detail: String,
    /// Admission warnings returned (also worth a log line: kubectl shows them only to
    /// whoever created the pod, usually a controller).
    pub warnings: Vec<String>,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Reviews one request body. Never panics on any input.
pub fn review(body: &[u8], cfg: &InjectConfig, bundle_pem: &str) -> Outcome {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Outcome::BadRequest(format!("the body is not JSON: {e}")),
    };
    let api_version = str_at(&v, "/apiVersion");
    let kind = str_at(&v, "/kind");
    if api_version != API_VERSION || kind != KIND {
        return Outcome::BadRequest(format!(
            "expected apiVersion {API_VERSION} kind {KIND}, got {api_version:?} {kind:?} \
             (the webhook configuration must say admissionReviewVersions: [v1])"
        ));
    }
    let Some(request) = v.get("request").filter(|r| r.is_object()) else {
        return Outcome::BadRequest("the AdmissionReview has no request".into());
    };
    let uid = str_at(request, "/uid");
    if uid.is_empty() || uid.len() > MAX_UID {
        return Outcome::BadRequest(format!(
            "request.uid is missing, empty or longer than {MAX_UID} bytes"
        ));
    }
    let object = request.get("object").unwrap_or(&Value::Null);
    let mut summary = Summary {
        uid: uid.to_string(),
        namespace: [
            str_at(request, "/namespace"),
            str_at(object, "/metadata/namespace"),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string(),
        pod: [
            str_at(object, "/metadata/name"),
            str_at(object, "/metadata/generateName"),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string(),
        ..Summary::default()
    };
    let result = check_request(request, object, &summary.namespace)
        .and_then(|()| mutate(object, &summary.namespace, cfg, bundle_pem));
    let response = match result {
        Ok(Mutation::Unchanged { reason }) => {
            summary.decision = "unchanged";
            summary.detail = reason.to_string();
            json!({"uid": uid, "allowed": true})
        }
        Ok(Mutation::Inject {
            ops,
            warnings,
            spiffe_id,
        }) => {
            summary.decision = "injected";
            summary.detail = spiffe_id;
            summary.warnings = warnings.clone();
            let patch = serde_json::to_vec(&ops).unwrap_or_default();
            let mut r = json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch),
            });
            if !warnings.is_empty()
                && let Some(m) = r.as_object_mut()
            {
                m.insert("warnings".into(), json!(warnings));
            }
            r
        }
        Err(Refusal { code, message }) => {
            summary.decision = "refused";
            summary.detail = message.clone();
            let reason = match code {
                400 => "BadRequest",
                422 => "Invalid",
                _ => "InternalError",
            };
            json!({
                "uid": uid,
                "allowed": false,
                "status": {
                    "status": "Failure",
                    "code": code,
                    "reason": reason,
                    "message": format!("ferrule sidecar injection: {message}"),
                },
            })
        }
    };
    Outcome::Review {
        body: json!({"apiVersion": API_VERSION, "kind": KIND, "response": response}),
        summary,
    }
}

/// The request must be a Pod CREATE with an object (what the webhook configuration's
/// rules select); anything else means a misconfigured webhook and is refused.
fn check_request(request: &Value, object: &Value, namespace: &str) -> Result<(), Refusal> {
    let gvk = (
        str_at(request, "/kind/group"),
        str_at(request, "/kind/version"),
        str_at(request, "/kind/kind"),
    );
    let gvr = (
        str_at(request, "/resource/group"),
        str_at(request, "/resource/version"),
        str_at(request, "/resource/resource"),
    );
    if gvk != ("", "v1", "Pod") || gvr != ("", "v1", "pods") {
        return Err(Refusal::malformed(format!(
            "only core/v1 pods are injected, got kind {}/{}/{} resource {}/{}/{} (check the \
             webhook configuration's rules)",
            gvk.0, gvk.1, gvk.2, gvr.0, gvr.1, gvr.2
        )));
    }
    let sub = str_at(request, "/subResource");
    if !sub.is_empty() {
        return Err(Refusal::malformed(format!(
            "subresource {sub:?} is not injected (rules must select pods only)"
        )));
    }
    let op = str_at(request, "/operation");
    if op != "CREATE" {
        return Err(Refusal::malformed(format!(
            "operation {op:?}: only CREATE is injected (rules must select operations: [CREATE])"
        )));
    }
    if !object.is_object() {
        return Err(Refusal::malformed("request.object is missing"));
    }
    let object_kind = str_at(object, "/kind");
    if !object_kind.is_empty() && object_kind != "Pod" {
        return Err(Refusal::malformed(format!(
            "request.object is a {object_kind:?}, not a Pod"
        )));
    }
    if namespace.is_empty() {
        return Err(Refusal::malformed(
            "no namespace in request.namespace or object.metadata.namespace",
        ));
    }
    Ok(())
}
