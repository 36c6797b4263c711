//! The admin API's request handling (`control-plane/src/admin_api.rs`): prost decodes a
//! request, then the real `AdminApi` validates and executes it against the real store,
//! CA and policy service. The API is only reachable through a 0600 Unix socket, but an
//! operator's malformed request must still be refused cleanly, and state must stay
//! consistent whatever is asked.
//!
//! Input: byte 0 selects the RPC, the rest is its protobuf request.
//!
//! Invariants:
//! * a join token is only created for an identity in the trust domain outside
//!   `/ferrule/`, with 1..=30 days and 1..=10,000 uses, and it attests that identity;
//! * exactly one CA authority stays active, whatever is activated or retired;
//! * policy applies and deletes are atomic: a refused one changes neither the version
//!   nor the policies; an accepted apply leaves every named policy readable;
//! * Explain refuses port 0 and answers what the policy engine decides.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use ferrule_control_plane::admin_api::AdminApi;
use ferrule_control_plane::attest::join_token;
use ferrule_control_plane::ca::AuthorityState;
use ferrule_fuzz::cp::control_plane;
use ferrule_proto::admin::v1 as pb;
use ferrule_proto::admin::v1::admin_server::Admin;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use spiffe::SpiffeId;
use tonic::Request;

struct Fixture {
    api: AdminApi,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let cp = control_plane();
        let api = AdminApi::new(
            cp.ca.clone(),
            cp.store.clone(),
            cp.registry.clone(),
            cp.policies.clone(),
            Arc::new(tokio::sync::Notify::new()),
        );
        Fixture {
            api,
            rt: ferrule_fuzz::runtime(),
        }
    })
}

fn active_authorities() -> usize {
    let status = control_plane().ca.status().expect("CA status");
    status
        .iter()
        .filter(|a| a.state == AuthorityState::Active)
        .count()
}

fn policy_snapshot() -> (u64, Vec<ferrule_policy::Policy>) {
    let state = control_plane().policies.current();
    (state.set.version(), state.set.policies().to_vec())
}

fuzz_target!(init: ferrule_fuzz::allow_caught_panics(), |data: &[u8]| run(data));

fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let cp = control_plane();
    let api = &f.api;
    f.rt.block_on(async {
        match which % 10 {
            0 => {
                let Ok(r) = pb::CreateJoinTokenRequest::decode(body) else {
                    return;
                };
                let Ok(resp) = api.create_join_token(Request::new(r.clone())).await else {
                    return;
                };
                let id = SpiffeId::new(&r.spiffe_id).expect("created for a valid ID");
                assert!(id.is_member_of(cp.ca.trust_domain()));
                assert!(!id.path().is_empty() && !id.path().starts_with("/ferrule"));
                assert!((1..=30 * 86_400).contains(&r.ttl_seconds));
                assert!((1..=10_000).contains(&r.uses));
                let token = resp.into_inner().token;
                let got = join_token::redeem(&cp.store, &token, SystemTime::now())
                    .expect("a new token redeems");
                assert_eq!(got, id);
            }
            1 => {
                let Ok(r) = pb::RevokeJoinTokenRequest::decode(body) else {
                    return;
                };
                let _ = api.revoke_join_token(Request::new(r)).await;
            }
            2 => {
                let Ok(r) = pb::ActivateAuthorityRequest::decode(body) else {
                    return;
                };
                let _ = api.activate_authority(Request::new(r)).await;
                assert_eq!(active_authorities(), 1);
            }
            3 => {
                let Ok(r) = pb::RetireAuthorityRequest::decode(body) else {
                    return;
                };
                let _ = api.retire_authority(Request::new(r)).await;
                assert_eq!(active_authorities(), 1);
            }
            4 => {
                let Ok(r) = pb::PolicyDocumentsRequest::decode(body) else {
                    return;
                };
                let valid = api.validate_policies(Request::new(r)).await;
                if let Ok(v) = valid {
                    let names = v.into_inner().names;
                    let mut unique = names.clone();
                    unique.sort();
                    unique.dedup();
                    assert_eq!(unique.len(), names.len());
                }
            }
            5 => {
                let Ok(r) = pb::PolicyDocumentsRequest::decode(body) else {
                    return;
                };
                let before = policy_snapshot();
                match api.apply_policies(Request::new(r.clone())).await {
                    Err(_) => assert_eq!(policy_snapshot(), before, "refused apply changed state"),
                    Ok(out) => {
                        let out = out.into_inner();
                        for name in out.created.iter().chain(&out.updated).chain(&out.unchanged) {
                            let got = api
                                .get_policy(Request::new(pb::GetPolicyRequest {
                                    name: name.clone(),
                                }))
                                .await
                                .unwrap_or_else(|e| panic!("applied {name} is not readable: {e}"));
                            // What `ferrulectl get` shows can be applied again.
                            let yaml = got.into_inner().yaml;
                            ferrule_policy::parse_documents(&yaml)
                                .unwrap_or_else(|e| panic!("{name}: {e:?}\n{yaml}"));
                        }
                    }
                }
            }
            6 => {
                let Ok(r) = pb::GetPolicyRequest::decode(body) else {
                    return;
                };
                let _ = api.get_policy(Request::new(r)).await;
            }
            7 => {
                let Ok(r) = pb::DeletePoliciesRequest::decode(body) else {
                    return;
                };
                let before = policy_snapshot();
                if api.delete_policies(Request::new(r)).await.is_err() {
                    assert_eq!(policy_snapshot(), before, "refused delete changed state");
                }
            }
            8 => {
                let Ok(r) = pb::ExplainRequest::decode(body) else {
                    return;
                };
                if let Ok(resp) = api.explain(Request::new(r.clone())).await {
                    assert!((1..=65_535).contains(&r.port));
                    let resp = resp.into_inner();
                    assert!(!resp.reason.is_empty() && !resp.explanation.is_empty());
                }
            }
            _ => {
                let Ok(r) = pb::ListAuditRequest::decode(body) else {
                    return;
                };
                if let Ok(resp) = api.list_audit(Request::new(r)).await {
                    let limit = if r.limit == 0 {
                        100
                    } else {
                        r.limit.min(10_000)
                    };
                    assert!(resp.into_inner().entries.len() <= limit as usize);
                }
            }
        }
    });
}
