//! Policy evaluation (`ferrule_policy::PolicySet::evaluate`): what the inbound side pays
//! once per connection on an opaque port and once per request on an HTTP port, with the
//! policies of 1 and 1,000 workloads in force (3 and 3,000 policies, each selecting its
//! own workload, as a cluster-wide set streamed to every proxy is), plus path
//! normalisation alone and compiling 1,000 workloads' set (paid once per policy push).
//! Run: `cargo bench -p ferrule-benches --bench policy`.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferrule_policy::{
    HttpRequest, MeshDefault, Policy, PolicySet, Request, Source, normalize_path, parse_documents,
};
use spiffe::SpiffeId;

const TD: &str = "bench.local";

/// Three policies per workload `api-i`: on HTTP port 8080 an ALLOW for `web` on GET
/// /public/* and a DENY of /admin for the whole `ns/web` prefix (so evaluation visits both
/// kinds of rule); on opaque port 9000 an ALLOW for `web` (an L4 rule).
fn documents(n: usize) -> String {
    let mut y = String::new();
    for i in 0..n {
        write!(
            y,
            r#"---
apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: api-{i}-public}}
spec:
  selector: {{spiffeId: "spiffe://{TD}/ns/prod/sa/api-{i}", ports: [8080]}}
  action: ALLOW
  rules:
    - from: [{{spiffeId: "spiffe://{TD}/ns/web/sa/web"}}]
      to: {{methods: [GET, HEAD], paths: ["/public/*", /healthz]}}
---
apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: api-{i}-no-admin}}
spec:
  selector: {{spiffeId: "spiffe://{TD}/ns/prod/sa/api-{i}", ports: [8080]}}
  action: DENY
  rules:
    - from: [{{spiffeIdPrefix: "spiffe://{TD}/ns/web/"}}]
      to: {{paths: [/admin]}}
---
apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: api-{i}-grpc}}
spec:
  selector: {{spiffeId: "spiffe://{TD}/ns/prod/sa/api-{i}", ports: [9000]}}
  action: ALLOW
  rules:
    - from: [{{spiffeId: "spiffe://{TD}/ns/web/sa/web"}}]
"#
        )
        .expect("write to a String");
    }
    y
}

fn policies(n: usize) -> Vec<Policy> {
    parse_documents(&documents(n)).expect("the benchmark's documents are valid")
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).expect("valid SPIFFE ID")
}

fn evaluate(c: &mut Criterion) {
    let web = id(&format!("spiffe://{TD}/ns/web/sa/web"));
    let other = id(&format!("spiffe://{TD}/ns/batch/sa/job"));
    let mut g = c.benchmark_group("evaluate");
    for n in [1usize, 1000] {
        // Mesh default deny: every allow below comes from a rule, not the default.
        let set = PolicySet::compile(policies(n), MeshDefault::Deny);
        // The workload in the middle of the set, so an index miss would show.
        let api = id(&format!("spiffe://{TD}/ns/prod/sa/api-{}", n / 2));
        let cases: [(&str, &SpiffeId, u16, Option<HttpRequest<'_>>, bool); 4] = [
            ("l4_allow", &web, 9000, None, true),
            (
                "http_allow",
                &web,
                8080,
                Some(HttpRequest {
                    method: "GET",
                    path: "/public/css/site.css?v=3",
                }),
                true,
            ),
            (
                "http_deny",
                &web,
                8080,
                Some(HttpRequest {
                    method: "GET",
                    path: "//public/../ADMIN/",
                }),
                false,
            ),
            (
                "http_no_rule",
                &other,
                8080,
                Some(HttpRequest {
                    method: "GET",
                    path: "/public/x",
                }),
                false,
            ),
        ];
        for (name, source, port, http, allow) in cases {
            let request = Request {
                source: Source::Authenticated(source),
                destination: &api,
                port,
                http,
            };
            // Guard the benchmark's meaning: it measures the decision it claims to.
            assert_eq!(
                set.evaluate(&request).allow,
                allow,
                "{name} with {n} policies"
            );
            g.bench_with_input(BenchmarkId::new(name, n), &request, |b, r| {
                b.iter(|| black_box(set.evaluate(black_box(r))).allow)
            });
        }
    }
    g.finish();
}

fn normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_path");
    let path = "//api/./v1/../v1/users/42/?q=1";
    g.bench_function("dots_and_query", |b| {
        b.iter(|| normalize_path(black_box(path)).is_ok())
    });
    g.finish();
}

fn compile(c: &mut Criterion) {
    let ps = policies(1000);
    c.bench_function("compile/1000", |b| {
        b.iter(|| PolicySet::compile(ps.clone(), MeshDefault::AllowAuthenticated))
    });
}

criterion_group!(benches, evaluate, normalize, compile);
criterion_main!(benches);
