//! Policy documents from YAML to enforcement: `parse_documents` (what `ferrulectl apply`
//! and the admin API run), `PolicySet::compile` and `evaluate`, and the path each policy
//! takes to a proxy (the control plane's `documents_for` JSON, the proxy's
//! `policy_from_pb`).
//!
//! Invariants, for a stream that validates:
//! * names are unique;
//! * each policy survives the trips it makes: JSON (store, mesh stream) and YAML
//!   (`ferrulectl get` output re-applied) give back the same policy;
//! * a proxy decides exactly as the control plane: for each destination the documents
//!   name, the set a proxy compiles from the documents the control plane sends it
//!   (`documents_for`, only the policies selecting it) returns the same decision as the
//!   control plane's whole set, for requests built from the documents' own identities,
//!   ports, methods and paths.
#![no_main]

use std::net::IpAddr;

use ferrule_control_plane::policy::{PolicyService, PolicyState};
use ferrule_policy::{HttpRequest, MeshDefault, PolicySet, Request, Source, parse_documents};
use ferrule_proto::mesh::v1 as pb;
use ferrule_proxy::control::sync::policy_from_pb;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use spiffe::SpiffeId;

/// Every string value under `key` anywhere in `v`.
fn strings<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == key => out.push(s),
                    Value::Array(a) if k == key => {
                        out.extend(a.iter().filter_map(Value::as_str));
                    }
                    _ => strings(x, key, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings(x, key, out)),
        _ => {}
    }
}

/// An ID under a selector or prefix written `spiffe://td/p/` or `spiffe://td/p/*`.
fn id_from(s: &str) -> Option<SpiffeId> {
    let base = s.trim_end_matches('*');
    SpiffeId::new(base)
        .ok()
        .or_else(|| SpiffeId::new(format!("{base}x")).ok())
}

fuzz_target!(init: ferrule_fuzz::allow_caught_panics(), |data: &[u8]| run(data));

fn run(data: &[u8]) {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policies) = parse_documents(yaml) else {
        return;
    };
    let mut names: Vec<&str> = policies.iter().map(|p| p.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), policies.len(), "duplicate names accepted");

    let mut json_docs = Vec::new();
    for p in &policies {
        let json = serde_json::to_string(p).expect("serialise");
        let back: ferrule_policy::Policy = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("JSON round trip of {}: {e}\n{json}", p.name()));
        assert_eq!(&back, p, "JSON round trip changed {}", p.name());
        let y = serde_yaml_ng::to_string(p).expect("yaml");
        let again = parse_documents(&y).unwrap_or_else(|e| panic!("YAML round trip: {e:?}\n{y}"));
        assert_eq!(
            again,
            vec![p.clone()],
            "YAML round trip changed {}",
            p.name()
        );
        json_docs.push(serde_json::from_str::<Value>(&json).expect("json value"));
    }

    // Requests built from what the documents mention.
    let (mut ids, mut prefixes, mut paths, mut methods, mut ports) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in &json_docs {
        strings(d, "spiffeId", &mut ids);
        strings(d, "spiffeIdPrefix", &mut prefixes);
        strings(d, "paths", &mut paths);
        strings(d, "methods", &mut methods);
        let mut p = Vec::new();
        collect_ports(d, &mut p);
        ports.extend(p);
    }
    let mut who: Vec<SpiffeId> = ids
        .iter()
        .chain(&prefixes)
        .filter_map(|s| id_from(s))
        .collect();
    who.push(SpiffeId::new("spiffe://fuzz.test/ns/web/sa/web").expect("id"));
    who.truncate(4);
    let paths: Vec<String> = paths
        .iter()
        .map(|p| p.replace('*', "x"))
        .chain(["/".to_string(), "/admin/".to_string()])
        .take(4)
        .collect();
    methods.extend(["GET", "post"]);
    methods.truncate(2);
    ports.extend([8080, 1]);
    ports.truncate(2);

    let cp_set =
        PolicySet::compile(policies.clone(), MeshDefault::AllowAuthenticated).with_version(3);
    let state = PolicyState {
        set: cp_set.clone(),
        meta: vec![],
    };
    let ips: [IpAddr; 2] = [[10, 0, 0, 1].into(), [0u16, 0, 0, 0, 0, 0, 0, 1].into()];
    for dest in &who {
        let documents_json = PolicyService::documents_for(&state, dest);
        let proxy_set = policy_from_pb(pb::Policy {
            version: 3,
            mesh_default: "allow-authenticated".into(),
            documents_json,
        })
        .unwrap_or_else(|e| panic!("a proxy refuses what the control plane sends: {e}"));
        assert_eq!(proxy_set.version(), 3);
        let mut sources: Vec<Source<'_>> = who.iter().map(Source::Authenticated).collect();
        sources.extend(ips.iter().map(|ip| Source::Unauthenticated(*ip)));
        for source in &sources {
            for &port in &ports {
                let mut https: Vec<Option<HttpRequest<'_>>> = vec![None];
                for m in &methods {
                    for p in &paths {
                        https.push(Some(HttpRequest { method: m, path: p }));
                    }
                }
                for http in https {
                    let req = Request {
                        source: *source,
                        destination: dest,
                        port,
                        http,
                    };
                    let cp = cp_set.evaluate(&req);
                    let px = proxy_set.evaluate(&req);
                    assert_eq!(cp, px, "control plane and proxy disagree on {req:?}");
                    let _ = cp.explain();
                }
            }
        }
    }
}

fn collect_ports(v: &Value, out: &mut Vec<u16>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "ports"
                    && let Value::Array(a) = x
                {
                    out.extend(
                        a.iter()
                            .filter_map(|p| p.as_u64())
                            .filter_map(|p| u16::try_from(p).ok()),
                    );
                } else {
                    collect_ports(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_ports(x, out)),
        _ => {}
    }
}
