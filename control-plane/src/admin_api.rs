//! The admin API (`ferrule.admin.v1.Admin`), served only on the local admin socket.
//!
//! Every mutating call is logged with the caller (`uid:N` from the socket's peer
//! credentials). Invalid requests get `INVALID_ARGUMENT` naming the field.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferrule_proto::admin::v1 as pb;
use ferrule_proto::admin::v1::admin_server::Admin;
use spiffe::SpiffeId;
use tonic::{Request, Response, Status};

use crate::attest::join_token;
use crate::ca::{AuthorityStatus, CaError, CertificateAuthority};
use crate::discovery::Registry;
use crate::policy::{PolicyError, PolicyService};
use crate::server::admin_socket::caller;
use crate::store::Store;

/// Longest join-token lifetime accepted (30 days).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Most uses a single join token may carry.
const MAX_TOKEN_USES: u32 = 10_000;

/// Implementation of the admin gRPC service.
pub struct AdminApi {
    ca: Arc<CertificateAuthority>,
    store: Arc<Store>,
    registry: Arc<Registry>,
    policies: Arc<PolicyService>,
    /// Notified after the active authority changes (the control plane then re-issues
    /// its own serving certificate from the new authority).
    authority_changed: Arc<tokio::sync::Notify>,
}

impl AdminApi {
    /// Creates the service.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        store: Arc<Store>,
        registry: Arc<Registry>,
        policies: Arc<PolicyService>,
        authority_changed: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            ca,
            store,
            registry,
            policies,
            authority_changed,
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn ca_status(e: CaError) -> Status {
    match &e {
        CaError::NotFound(_) => Status::not_found(e.to_string()),
        CaError::InvalidState(_) | CaError::StillInUse { .. } => {
            Status::failed_precondition(e.to_string())
        }
        CaError::ExternalMode => Status::failed_precondition(e.to_string()),
        _ => {
            tracing::error!(error = %e, "CA operation failed");
            Status::internal(e.to_string())
        }
    }
}

fn authority_pb(a: &AuthorityStatus) -> pb::AuthorityInfo {
    pb::AuthorityInfo {
        id: a.id.clone(),
        state: a.state.as_str().to_string(),
        root_subject: a.root_subject.clone(),
        root_not_after_unix: unix(a.root_not_after),
        issuer_subject: a.issuer_subject.clone(),
        issuer_not_after_unix: unix(a.issuer_not_after),
        root_fingerprint: a.root_fingerprint.clone(),
        live_certificates: a.live_certificates,
    }
}

fn store_status(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "store operation failed");
    Status::internal("store unavailable")
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let id = SpiffeId::new(&r.spiffe_id).map_err(|e| {
            Status::invalid_argument(format!("spiffe_id {:?} is invalid: {e}", r.spiffe_id))
        })?;
        if !id.is_member_of(self.ca.trust_domain()) {
            return Err(Status::invalid_argument(format!(
                "spiffe_id {id} is not in this mesh's trust domain {}",
                self.ca.trust_domain()
            )));
        }
        if id.path().is_empty() || id.path() == "/ferrule" || id.path().starts_with("/ferrule/") {
            return Err(Status::invalid_argument(format!(
                "spiffe_id {id}: the trust domain itself and paths under /ferrule/ are reserved"
            )));
        }
        if r.ttl_seconds == 0 || Duration::from_secs(r.ttl_seconds) > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument(format!(
                "ttl_seconds must be between 1 and {}",
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        if r.uses == 0 || r.uses > MAX_TOKEN_USES {
            return Err(Status::invalid_argument(format!(
                "uses must be between 1 and {MAX_TOKEN_USES}"
            )));
        }
        let (token, info) = join_token::create(
            &self.store,
            &id,
            Duration::from_secs(r.ttl_seconds),
            r.uses,
            SystemTime::now(),
        )
        .map_err(|e| match e {
            join_token::JoinTokenError::Store(e) => store_status(e),
            other => Status::invalid_argument(other.to_string()),
        })?;
        tracing::info!(%who, token_id = %info.id, spiffe_id = %id, uses = r.uses, ttl_s = r.ttl_seconds, "join token created");
        self.audit(
            &who,
            "token.create",
            &info.id,
            &format!("{id} uses={} ttl={}s", r.uses, r.ttl_seconds),
        );
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token: token.expose().to_string(),
            info: Some(token_pb(&info)),
        }))
    }

    async fn list_join_tokens(
        &self,
        _req: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        let tokens = join_token::list(&self.store).map_err(store_status)?;
        Ok(Response::new(pb::ListJoinTokensResponse {
            tokens: tokens.iter().map(token_pb).collect(),
        }))
    }

    async fn revoke_join_token(
        &self,
        req: Request<pb::RevokeJoinTokenRequest>,
    ) -> Result<Response<pb::RevokeJoinTokenResponse>, Status> {
        let who = caller(&req);
        let id = req.into_inner().id;
        if !join_token::revoke(&self.store, &id).map_err(store_status)? {
            return Err(Status::not_found(format!("no join token with id {id:?}")));
        }
        tracing::info!(%who, token_id = %id, "join token revoked");
        self.audit(&who, "token.revoke", &id, "");
        Ok(Response::new(pb::RevokeJoinTokenResponse {}))
    }

    async fn ca_status(
        &self,
        _req: Request<pb::CaStatusRequest>,
    ) -> Result<Response<pb::CaStatusResponse>, Status> {
        let authorities = self.ca.status().map_err(ca_status)?;
        Ok(Response::new(pb::CaStatusResponse {
            trust_domain: self.ca.trust_domain().to_string(),
            authorities: authorities.iter().map(authority_pb).collect(),
            bundle_version: self.ca.trust_bundle().version,
            mode: self.ca.mode_name().to_string(),
        }))
    }

    async fn prepare_authority(
        &self,
        req: Request<pb::PrepareAuthorityRequest>,
    ) -> Result<Response<pb::AuthorityInfo>, Status> {
        let who = caller(&req);
        let ca = self.ca.clone();
        let a = tokio::task::spawn_blocking(move || ca.prepare())
            .await
            .map_err(|_| Status::internal("task failed"))?
            .map_err(ca_status)?;
        tracing::info!(%who, authority = %a.id, "CA rotation: authority prepared");
        self.audit(&who, "ca.prepare", &a.id, "");
        Ok(Response::new(authority_pb(&a)))
    }

    async fn activate_authority(
        &self,
        req: Request<pb::ActivateAuthorityRequest>,
    ) -> Result<Response<pb::AuthorityInfo>, Status> {
        let who = caller(&req);
        let id = req.into_inner().id;
        let a = self.ca.activate(&id).map_err(ca_status)?;
        self.authority_changed.notify_one();
        tracing::info!(%who, authority = %a.id, "CA rotation: authority activated");
        self.audit(&who, "ca.activate", &a.id, "");
        Ok(Response::new(authority_pb(&a)))
    }

    async fn retire_authority(
        &self,
        req: Request<pb::RetireAuthorityRequest>,
    ) -> Result<Response<pb::AuthorityInfo>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let a = self
            .ca
            .retire(&r.id, r.force, SystemTime::now())
            .map_err(ca_status)?;
        tracing::info!(%who, authority = %a.id, force = r.force, "CA rotation: authority retired");
        self.audit(&who, "ca.retire", &a.id, if r.force { "force" } else { "" });
        Ok(Response::new(authority_pb(&a)))
    }

    async fn list_workloads(
        &self,
        _req: Request<pb::ListWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        Ok(Response::new(self.workloads().await?))
    }

    async fn check(
        &self,
        _req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        Ok(Response::new(self.checks().await?))
    }

    async fn apply_policies(
        &self,
        req: Request<pb::PolicyDocumentsRequest>,
    ) -> Result<Response<pb::ApplyPoliciesResponse>, Status> {
        let who = caller(&req);
        let yaml = req.into_inner().yaml;
        let out = self.policies.apply(&yaml, &who).map_err(policy_status)?;
        tracing::info!(%who, version = out.version, created = ?out.created, updated = ?out.updated, "policies applied");
        Ok(Response::new(pb::ApplyPoliciesResponse {
            version: out.version,
            created: out.created,
            updated: out.updated,
            unchanged: out.unchanged,
        }))
    }

    async fn validate_policies(
        &self,
        req: Request<pb::PolicyDocumentsRequest>,
    ) -> Result<Response<pb::ValidatePoliciesResponse>, Status> {
        let policies = PolicyService::validate(&req.into_inner().yaml).map_err(policy_status)?;
        Ok(Response::new(pb::ValidatePoliciesResponse {
            names: policies.iter().map(|p| p.name().to_string()).collect(),
        }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let name = req.into_inner().name;
        let state = self.policies.current();
        policy_infos(&state)
            .into_iter()
            .find(|p| p.name == name)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no policy named {name:?}")))
    }

    async fn list_policies(
        &self,
        _req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let state = self.policies.current();
        Ok(Response::new(pb::ListPoliciesResponse {
            version: state.set.version(),
            mesh_default: self.policies.mesh_default().as_str().to_string(),
            policies: policy_infos(&state),
        }))
    }

    async fn delete_policies(
        &self,
        req: Request<pb::DeletePoliciesRequest>,
    ) -> Result<Response<pb::DeletePoliciesResponse>, Status> {
        let who = caller(&req);
        let names = req.into_inner().names;
        if names.is_empty() {
            return Err(Status::invalid_argument(
                "names: give at least one policy name",
            ));
        }
        let version = self.policies.delete(&names, &who).map_err(policy_status)?;
        tracing::info!(%who, version, ?names, "policies deleted");
        Ok(Response::new(pb::DeletePoliciesResponse { version }))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = req.into_inner();
        let to = SpiffeId::new(&r.to)
            .map_err(|e| Status::invalid_argument(format!("to {:?}: {e}", r.to)))?;
        let port = u16::try_from(r.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Status::invalid_argument(format!("port {}: not a port", r.port)))?;
        let from;
        let source = if r.unauthenticated {
            let ip: std::net::IpAddr = if r.source_ip.is_empty() {
                std::net::IpAddr::from([0, 0, 0, 0])
            } else {
                r.source_ip.parse().map_err(|e| {
                    Status::invalid_argument(format!("source_ip {:?}: {e}", r.source_ip))
                })?
            };
            ferrule_policy::Source::Unauthenticated(ip)
        } else {
            from = SpiffeId::new(&r.from)
                .map_err(|e| Status::invalid_argument(format!("from {:?}: {e}", r.from)))?;
            ferrule_policy::Source::Authenticated(&from)
        };
        let http = match (r.method.is_empty(), r.path.is_empty()) {
            (true, true) => None,
            (false, false) => Some(ferrule_policy::HttpRequest {
                method: &r.method,
                path: &r.path,
            }),
            _ => {
                return Err(Status::invalid_argument(
                    "method and path: give both (HTTP port) or neither (opaque port)",
                ));
            }
        };
        let state = self.policies.current();
        let d = state.set.evaluate(&ferrule_policy::Request {
            source,
            destination: &to,
            port,
            http,
        });
        Ok(Response::new(pb::ExplainResponse {
            allow: d.allow,
            policy: d.policy.clone().unwrap_or_else(|| "mesh-default".into()),
            rule: d.rule.map(|r| r as i32).unwrap_or(-1),
            reason: d.reason.as_str().to_string(),
            explanation: d.explain(),
            version: state.set.version(),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => 100,
            n => n.min(10_000),
        };
        let entries = self.store.list_audit(limit).map_err(store_status)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    at_unix: unix(e.at),
                    who: e.who,
                    action: e.action,
                    target: e.target,
                    detail: e.detail,
                })
                .collect(),
        }))
    }

    async fn list_certificates(
        &self,
        _req: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let certs = self
            .store
            .list_latest_per_identity()
            .map_err(store_status)?;
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: certs
                .iter()
                .map(|c| pb::CertificateInfo {
                    spiffe_id: c.spiffe_id.to_string(),
                    serial_hex: c.serial_hex.clone(),
                    authority_id: c.authority_id.clone(),
                    not_before_unix: unix(c.not_before),
                    not_after_unix: unix(c.not_after),
                })
                .collect(),
        }))
    }
}

impl AdminApi {
    /// The policy-set version proxies should run.
    fn policy_version(&self) -> u64 {
        self.policies.current().set.version()
    }

    fn audit(&self, who: &str, action: &str, target: &str, detail: &str) {
        if let Err(e) = self.store.audit(who, action, target, detail) {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }
}

#[tonic::async_trait]
trait WorkloadsAndChecks {
    async fn workloads(&self) -> Result<pb::ListWorkloadsResponse, Status>;
    async fn checks(&self) -> Result<pb::CheckResponse, Status>;
}

#[tonic::async_trait]
impl WorkloadsAndChecks for AdminApi {
    async fn workloads(&self) -> Result<pb::ListWorkloadsResponse, Status> {
        let opt_unix = |t: Option<SystemTime>| t.map(unix).unwrap_or(0);
        Ok(pb::ListWorkloadsResponse {
            workloads: self
                .registry
                .entries()
                .into_iter()
                .map(|e| pb::WorkloadInfo {
                    spiffe_id: e.reg.spiffe_id.to_string(),
                    service: e.reg.service.clone(),
                    address: e.reg.address.to_string(),
                    inbound_port: u32::from(e.reg.inbound_port),
                    app_ports: e.reg.app_ports.iter().map(|p| u32::from(*p)).collect(),
                    connected: e.session.is_some(),
                    since_unix: unix(e.since),
                    cert_not_after_unix: opt_unix(e.cert_not_after),
                    acked_discovery_version: e.acked_discovery,
                    acked_policy_version: e.acked_policy,
                    proxy_version: e.reg.proxy_version.clone(),
                    kubernetes_pod: String::new(),
                })
                .chain(self.registry.kubernetes_pods().into_iter().flat_map(|pod| {
                    pod.addresses
                        .clone()
                        .into_iter()
                        .map(move |ip| pb::WorkloadInfo {
                            spiffe_id: pod.spiffe_id.to_string(),
                            service: pod.service.clone(),
                            address: ip.to_string(),
                            inbound_port: u32::from(pod.inbound_port),
                            kubernetes_pod: format!("{}/{}", pod.namespace, pod.name),
                            ..Default::default()
                        })
                }))
                .collect(),
        })
    }

    async fn checks(&self) -> Result<pb::CheckResponse, Status> {
        let now = SystemTime::now();
        let authorities = self.ca.status().map_err(ca_status)?;
        let chains = self.ca.verify_chains(now).map_err(ca_status)?;
        let latest = self
            .store
            .list_latest_per_identity()
            .map_err(store_status)?;
        let workloads = self.registry.entries();
        let results = crate::health::run(&crate::health::Inputs {
            now,
            authorities: &authorities,
            chains: &chains,
            workloads: &workloads,
            latest_certs: &latest,
            policy_version: self.policy_version(),
        });
        Ok(pb::CheckResponse {
            results: results
                .into_iter()
                .map(|r| pb::CheckResult {
                    name: r.name.to_string(),
                    ok: r.ok,
                    detail: r.detail,
                })
                .collect(),
        })
    }
}

/// Maps policy errors to statuses; invalid documents list document, field and reason.
fn policy_status(e: PolicyError) -> Status {
    match e {
        PolicyError::Invalid(errors) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|d| {
                    let name = d.name.as_deref().unwrap_or("-");
                    let at = match (d.line, d.column) {
                        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                        _ => String::new(),
                    };
                    format!(
                        "document {} ({name}): {}: {}{at}",
                        d.document,
                        if d.field.is_empty() { "-" } else { &d.field },
                        d.reason
                    )
                })
                .collect();
            Status::invalid_argument(format!(
                "invalid policy documents, nothing applied:\n{}",
                lines.join("\n")
            ))
        }
        PolicyError::NotFound(e) => Status::not_found(e.to_string()),
        PolicyError::Managed(_) => Status::failed_precondition(e.to_string()),
        PolicyError::Store(e) => store_status(e),
        PolicyError::Corrupt { .. } => {
            tracing::error!(error = %e, "policy store unreadable");
            Status::internal(e.to_string())
        }
    }
}

fn policy_infos(state: &crate::policy::PolicyState) -> Vec<pb::PolicyInfo> {
    state
        .set
        .policies()
        .iter()
        .map(|p| {
            let meta = state.meta.iter().find(|m| m.name == p.name());
            pb::PolicyInfo {
                name: p.name().to_string(),
                yaml: serde_yaml_ng::to_string(p).unwrap_or_default(),
                version: meta.map(|m| m.version).unwrap_or(0),
                updated_at_unix: meta.map(|m| unix(m.updated_at)).unwrap_or(0),
                updated_by: meta.map(|m| m.updated_by.clone()).unwrap_or_default(),
                action: p.action().as_str().to_string(),
                selector: p.selector().workloads.to_string(),
            }
        })
        .collect()
}

fn token_pb(t: &join_token::JoinTokenInfo) -> pb::JoinTokenInfo {
    pb::JoinTokenInfo {
        id: t.id.clone(),
        spiffe_id: t.spiffe_id.to_string(),
        expires_at_unix: unix(t.expires_at),
        uses_left: t.uses_left,
        created_at_unix: unix(t.created_at),
    }
}
