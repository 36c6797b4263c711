//! The identity API (`ferrule.identity.v1.Identity`): attests callers and signs their CSRs.
//!
//! `Certify` decides *which* identity a caller gets — from its credential on first
//! contact (join token, Kubernetes service-account token) or from its still-valid
//! certificate on renewal — and only then
//! asks the CA (`ca::sign`) to sign the CSR's public key for exactly that identity.
//! The CSR's own subject and SANs never influence the result.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrule_proto::identity::v1 as pb;
use ferrule_proto::identity::v1::identity_server::Identity;
use spiffe::SpiffeId;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::attest::k8s_token::{K8sTokenAttestor, K8sTokenError};
use crate::attest::{AttestError, Credential};
use crate::ca::{BundleSnapshot, CertificateAuthority};
use crate::metrics::{IssueLabels, Metrics};
use crate::server::tls_listener::PeerInfo;
use crate::store::Store;

/// A refused request: the status for the caller and a stable reason label for metrics.
struct Refusal {
    status: Status,
    reason: &'static str,
}

fn refuse(reason: &'static str, status: Status) -> Refusal {
    Refusal { status, reason }
}

/// Largest CSR accepted, in bytes (a P-256 CSR is ~250 bytes).
const MAX_CSR_BYTES: usize = 8 * 1024;

/// Implementation of the identity gRPC service.
pub struct IdentityApi {
    ca: Arc<CertificateAuthority>,
    store: Arc<Store>,
    svid_ttl: Duration,
    metrics: Metrics,
    /// Kubernetes service-account token verifier; `None` when `--k8s-attestation off`.
    k8s: Option<Arc<K8sTokenAttestor>>,
}

impl IdentityApi {
    /// Creates the service over the CA and store.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        store: Arc<Store>,
        svid_ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            ca,
            store,
            svid_ttl,
            metrics,
            k8s: None,
        }
    }

    /// Accepts Kubernetes service-account tokens, verified by `attestor`. Without it
    /// they are refused with FAILED_PRECONDITION.
    pub fn with_k8s_attestor(mut self, attestor: Arc<K8sTokenAttestor>) -> Self {
        self.k8s = Some(attestor);
        self
    }

    /// Works out the caller's identity: from its credential, or from its mTLS certificate.
    async fn attest(
        &self,
        req: &Request<pb::CertifyRequest>,
        expected: Option<&SpiffeId>,
    ) -> Result<(SpiffeId, &'static str), Refusal> {
        let credential = match &req.get_ref().credential {
            Some(pb::certify_request::Credential::JoinToken(t)) => {
                Some(Credential::JoinToken(t.clone()))
            }
            Some(pb::certify_request::Credential::K8sSaToken(t)) => {
                Some(Credential::K8sSaToken(t.clone()))
            }
            None => None,
        };
        if let Some(credential) = credential {
            let kind = credential.kind();
            let id = crate::attest::attest(
                &self.store,
                self.k8s.as_deref(),
                &credential,
                std::time::SystemTime::now(),
                expected,
            )
            .await
            .map_err(attest_status)?;
            return Ok((id, kind));
        }
        // Renewal: the caller proves its identity with its current certificate.
        let peer = req.extensions().get::<PeerInfo>().ok_or_else(|| {
            refuse(
                "internal",
                Status::internal("connection information missing"),
            )
        })?;
        let bundle = self.ca.trust_bundle();
        let tls_bundle = bundle.to_tls_bundle(self.ca.trust_domain()).map_err(|e| {
            tracing::error!(error = %e, "trust bundle unusable");
            refuse("internal", Status::internal("trust bundle unusable"))
        })?;
        match peer.verified_identity(&tls_bundle) {
            Ok(Some(id)) => Ok((id, "renewal")),
            Ok(None) => Err(refuse(
                "no_credential",
                Status::unauthenticated(
                    "no credential: send a join token, or renew over mTLS with your current certificate",
                ),
            )),
            Err(e) => Err(refuse(
                "renewal_certificate_rejected",
                Status::unauthenticated(format!(
                    "renewal refused: client certificate rejected ({}): {e}",
                    e.reason()
                )),
            )),
        }
    }
}

/// Client faults are INVALID_ARGUMENT; the CA's own faults are INTERNAL/UNAVAILABLE.
fn sign_status(e: crate::ca::SignError, id: &SpiffeId) -> Refusal {
    use crate::ca::SignError as E;
    match e {
        E::NoActiveAuthority | E::IssuerExpired { .. } => {
            tracing::error!(error = %e, spiffe_id = %id, "cannot sign: no usable issuer");
            refuse(
                "no_issuer",
                Status::unavailable(format!("the CA cannot sign right now: {e}")),
            )
        }
        E::Store(_) | E::Encoding(_) => {
            tracing::error!(error = %e, spiffe_id = %id, "signing failed");
            refuse("internal", Status::internal("signing failed"))
        }
        other => refuse("bad_csr", Status::invalid_argument(other.to_string())),
    }
}

fn attest_status(e: AttestError) -> Refusal {
    // Each message says what is wrong without echoing the credential itself.
    let reason = match &e {
        AttestError::Store(_) => {
            return refuse(
                "internal",
                Status::internal("attestation store unavailable"),
            );
        }
        AttestError::K8s(k) => return k8s_status(k),
        AttestError::Malformed => "malformed_token",
        AttestError::UnknownToken => "unknown_token",
        AttestError::Expired { .. } => "expired_token",
        AttestError::UsedUp { .. } => "used_up_token",
        AttestError::Revoked { .. } => "revoked_token",
        AttestError::IdentityMismatch { .. } => "identity_mismatch",
    };
    refuse(
        reason,
        Status::permission_denied(format!("attestation failed: {e}")),
    )
}

/// Service-account tokens: a bad token is UNAUTHENTICATED; attestation switched off is
/// FAILED_PRECONDITION; an API server (or JWKS) we cannot use is UNAVAILABLE.
fn k8s_status(e: &K8sTokenError) -> Refusal {
    let msg = format!("service-account attestation failed: {e}");
    let status = match e {
        K8sTokenError::Disabled => Status::failed_precondition(msg),
        K8sTokenError::Unavailable(_) | K8sTokenError::KeysUnavailable(_) => {
            tracing::warn!(error = %e, "cannot verify a service-account token right now");
            Status::unavailable(msg)
        }
        _ => Status::unauthenticated(msg),
    };
    refuse(e.reason(), status)
}

#[tonic::async_trait]
impl Identity for IdentityApi {
    async fn certify(
        &self,
        req: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let started = Instant::now();
        let remote = req
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.remote.to_string())
            .unwrap_or_default();
        match self.certify_inner(req).await {
            Ok((resp, how)) => {
                self.metrics
                    .issued
                    .get_or_create(&IssueLabels { attestation: how })
                    .inc();
                self.metrics
                    .issuance_duration
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    %remote,
                    spiffe_id = %resp.spiffe_id,
                    attestation = how,
                    expires_at = resp.expires_at_unix,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "certificate issued"
                );
                Ok(Response::new(resp))
            }
            Err(r) => {
                self.metrics.issuance_failure(r.reason);
                tracing::warn!(
                    %remote,
                    reason = r.reason,
                    code = ?r.status.code(),
                    detail = r.status.message(),
                    "certificate request refused"
                );
                Err(r.status)
            }
        }
    }

    type WatchBundleStream =
        Pin<Box<dyn Stream<Item = Result<pb::TrustBundle, Status>> + Send + 'static>>;

    async fn watch_bundle(
        &self,
        _req: Request<pb::WatchBundleRequest>,
    ) -> Result<Response<Self::WatchBundleStream>, Status> {
        use tokio_stream::StreamExt;
        let td = self.ca.trust_domain().to_string();
        let stream = tokio_stream::wrappers::WatchStream::new(self.ca.subscribe_bundle())
            .map(move |b| Ok(bundle_to_pb(&td, &b)));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Converts a bundle snapshot into its wire form.
pub fn bundle_to_pb(trust_domain: &str, b: &BundleSnapshot) -> pb::TrustBundle {
    pb::TrustBundle {
        trust_domain: trust_domain.to_string(),
        roots_der: b.roots.iter().map(|r| r.to_vec()).collect(),
        version: b.version,
    }
}

impl IdentityApi {
    async fn certify_inner(
        &self,
        req: Request<pb::CertifyRequest>,
    ) -> Result<(pb::CertifyResponse, &'static str), Refusal> {
        let csr = &req.get_ref().csr_der;
        if csr.is_empty() {
            return Err(refuse(
                "bad_csr",
                Status::invalid_argument("csr_der is empty"),
            ));
        }
        if csr.len() > MAX_CSR_BYTES {
            return Err(refuse(
                "bad_csr",
                Status::invalid_argument(format!(
                    "csr_der is {} bytes; the limit is {MAX_CSR_BYTES}",
                    csr.len()
                )),
            ));
        }
        // Validate the CSR before spending a credential, so a bad request loses nothing.
        crate::ca::check_csr(csr)
            .map_err(|e| refuse("bad_csr", Status::invalid_argument(e.to_string())))?;
        let expected = match req.get_ref().expected_spiffe_id.as_str() {
            "" => None,
            s => Some(SpiffeId::new(s).map_err(|e| {
                refuse(
                    "bad_request",
                    Status::invalid_argument(format!("expected_spiffe_id {s:?} is invalid: {e}")),
                )
            })?),
        };
        let (id, how) = self.attest(&req, expected.as_ref()).await?;
        if let Some(expected) = expected
            && expected != id
        {
            return Err(refuse(
                "identity_mismatch",
                Status::permission_denied(format!(
                    "attested identity {id} differs from the expected {expected}; nothing issued"
                )),
            ));
        }
        if !id.is_member_of(self.ca.trust_domain()) {
            return Err(refuse(
                "foreign_trust_domain",
                Status::permission_denied(format!(
                    "{id} is not in trust domain {}",
                    self.ca.trust_domain()
                )),
            ));
        }
        let ca = self.ca.clone();
        let csr = csr.clone();
        let ttl = self.svid_ttl;
        let id2 = id.clone();
        let issued = tokio::task::spawn_blocking(move || ca.sign_svid(&csr, &id2, ttl))
            .await
            .map_err(|_| refuse("internal", Status::internal("signing task failed")))?
            .map_err(|e| sign_status(e, &id))?;
        tracing::debug!(spiffe_id = %id, attestation = how, serial = %issued.serial_hex, "signed");
        let bundle = self.ca.trust_bundle();
        let resp = pb::CertifyResponse {
            leaf_der: issued.leaf_der.to_vec(),
            intermediates_der: issued.intermediates.iter().map(|c| c.to_vec()).collect(),
            bundle: Some(bundle_to_pb(self.ca.trust_domain().as_str(), &bundle)),
            expires_at_unix: issued.not_after_unix,
            spiffe_id: id.to_string(),
        };
        Ok((resp, how))
    }
}
