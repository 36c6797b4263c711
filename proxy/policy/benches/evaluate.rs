//! Evaluation cost against the size of the policy set.
//!
//! The mesh has one policy per workload (exact-identity selectors, the common case),
//! plus a handful of namespace-wide wildcard DENY policies. Because policies are indexed
//! by destination, evaluating a request should cost the same with 10 policies as with
//! 10,000: a hash lookup for the exact ID, one lookup per path segment for wildcards,
//! then only the rules of the few policies that select the destination.
//!
//! Run: `cargo bench -p ferrule-policy -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferrule_policy::{
    HttpRequest, MeshDefault, PolicySet, Request, Source, normalize_path, parse_documents,
};
use spiffe::SpiffeId;

const SIZES: [usize; 2] = [10, 10_000];

fn workload(i: usize) -> String {
    format!("spiffe://td/ns/ns{}/sa/svc{i}", i % 10)
}

/// `n` ALLOW policies, one per workload, plus 10 wildcard DENY policies.
fn policy_set(n: usize) -> PolicySet {
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&format!(
            "apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: allow-svc{i}}}
spec:
  selector: {{spiffeId: \"{}\", ports: [8080]}}
  action: ALLOW
  rules:
    - from: [{{spiffeId: spiffe://td/ns/ops/sa/admin}}]
    - from: [{{spiffeIdPrefix: spiffe://td/ns/web/}}]
      to: {{methods: [GET, HEAD], paths: [/healthz, \"/api/*\"]}}
---
",
            workload(i)
        ));
    }
    for ns in 0..10 {
        yaml.push_str(&format!(
            "apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: deny-ns{ns}-admin}}
spec:
  selector: {{spiffeId: \"spiffe://td/ns/ns{ns}/*\"}}
  action: DENY
  rules:
    - from: [{{unauthenticated: true}}]
    - to: {{paths: [\"/admin/*\"]}}
---
"
        ));
    }
    PolicySet::compile(parse_documents(&yaml).unwrap(), MeshDefault::Deny)
}

fn evaluate(c: &mut Criterion) {
    let web = SpiffeId::new("spiffe://td/ns/web/sa/frontend").unwrap();
    let mut group = c.benchmark_group("evaluate");
    for n in SIZES {
        let set = policy_set(n);
        let destination = SpiffeId::new(workload(n / 2)).unwrap();
        let unselected = SpiffeId::new("spiffe://td/ns/other/sa/x").unwrap();

        let allowed = Request {
            source: Source::Authenticated(&web),
            destination: &destination,
            port: 8080,
            http: Some(HttpRequest {
                method: "GET",
                path: "/api/items?page=2",
            }),
        };
        assert!(set.evaluate(&allowed).allow);
        group.bench_with_input(BenchmarkId::new("http_allowed", n), &allowed, |b, r| {
            b.iter(|| set.evaluate(black_box(r)))
        });

        let denied = Request {
            http: Some(HttpRequest {
                method: "GET",
                path: "/admin/users",
            }),
            ..allowed
        };
        assert!(!set.evaluate(&denied).allow);
        group.bench_with_input(
            BenchmarkId::new("http_denied_by_rule", n),
            &denied,
            |b, r| b.iter(|| set.evaluate(black_box(r))),
        );

        let opaque = Request {
            source: Source::Unauthenticated(IpAddr::from([10, 0, 0, 1])),
            http: None,
            ..allowed
        };
        assert!(!set.evaluate(&opaque).allow);
        group.bench_with_input(BenchmarkId::new("opaque_denied", n), &opaque, |b, r| {
            b.iter(|| set.evaluate(black_box(r)))
        });

        let default = Request {
            destination: &unselected,
            http: None,
            ..allowed
        };
        assert!(!set.evaluate(&default).allow);
        group.bench_with_input(BenchmarkId::new("mesh_default", n), &default, |b, r| {
            b.iter(|| set.evaluate(black_box(r)))
        });
    }
    group.finish();
}

fn normalise(c: &mut Criterion) {
    c.bench_function("normalize_path/typical", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/items/42?expand=owner")))
    });
    c.bench_function("normalize_path/messy", |b| {
        b.iter(|| normalize_path(black_box("//api/./v1/../v2/%7Eitems//%41?x=1")))
    });
}

criterion_group!(benches, evaluate, normalise);
criterion_main!(benches);
