//! Ferrule's authorization-policy engine: which peers may reach which workloads, ports,
//! methods and paths.
//!
//! One crate, pure logic (no I/O, no async runtime), so the control plane (validation
//! of what operators apply, Explain) and the proxy (enforcement on every inbound
//! connection and HTTP request) run exactly the same code:
//!
//! * [`parse_documents`]: YAML documents → validated [`Policy`] values, or every
//!   problem with its document, field and reason ([`DocumentError`]);
//! * [`PolicySet::compile`]: policies + [`MeshDefault`] → an indexed, immutable set;
//! * [`PolicySet::evaluate`]: a [`Request`] → a [`Decision`] with a stable
//!   [`Reason`] label and a human explanation;
//! * [`normalize_path`]: the request-path canonicalisation all path rules rely on;
//! * [`PolicySet::policies_for`] / [`PolicySet::selects`]: which policies apply to a
//!   workload, so the control plane sends each proxy exactly those.
//!
//! # Documents
//!
//! Operators keep policies in git as YAML, several per file separated by `---`. The
//! model is close to Istio's `AuthorizationPolicy` and Linkerd's `AuthorizationPolicy`,
//! keyed by SPIFFE ID rather than labels. Unknown fields are errors at every level.
//!
//! ```yaml
//! apiVersion: ferrule.dev/v1alpha1
//! kind: AuthorizationPolicy
//! metadata:
//!   name: api-allow-web        # DNS-1123 label, unique: the document's key
//!                              # (k8s/<namespace>/<name>: read from a Kubernetes resource)
//!   namespace: prod            # optional label for humans; not a scope
//! spec:
//!   selector:
//!     spiffeId: spiffe://td/ns/prod/sa/api   # or spiffe://td/ns/prod/* (prefix)
//!     ports: [8080]                          # optional; empty or absent = all ports
//!   action: ALLOW                            # ALLOW or DENY
//!   rules:
//!     - from:
//!         - spiffeIdPrefix: spiffe://td/ns/web/    # or spiffe://td/ns/web/*
//!         - spiffeId: spiffe://td/ns/ops/sa/admin
//!       to:
//!         methods: [GET, HEAD]
//!         paths: ["/public/*", /healthz, "/api/v*/items/**"]
//!     - from:
//!         - unauthenticated: true
//!           cidrs: [10.0.0.0/8]
//!       to:
//!         paths: [/healthz]
//! ```
//!
//! **Selector.** `spiffeId` is one exact SPIFFE ID, or a prefix wildcard
//! `spiffe://td/ns/prod/*`: any ID in trust domain `td` whose path starts with
//! `/ns/prod/` (`*` only as the whole last segment). `ports` narrows it to destination
//! ports.
//!
//! **Rules.** A rule matches when *all* its given fields match; a policy matches when
//! *any* of its rules does.
//!
//! * `from` lists sources, any of which may match; each entry holds exactly one of
//!   `spiffeId` (exact), `spiffeIdPrefix` (`spiffe://td/ns/prod/` or
//!   `spiffe://td/ns/prod/*`; a prefix without the trailing `/` is refused, since it
//!   would also match `/ns/production`), `trustDomain: td`, `authenticated: true` (any
//!   peer that proved an identity in mTLS) or `unauthenticated: true` (a plaintext peer
//!   on a permissive port), the latter optionally narrowed by `cidrs` (IPv4/IPv6
//!   blocks; IPv4-mapped IPv6 peers count as IPv4). A rule **without `from` matches any
//!   source, plaintext peers included**: write `authenticated: true` to exclude them.
//! * `to` holds HTTP conditions: `methods` (RFC 9110 tokens, upper-case in documents)
//!   and `paths` (exact `/admin`, prefix `/public/*`, glob with `*` inside a segment and
//!   `**` across segments; see [`PathPattern`]). A rule **without `to` matches any
//!   request** and any opaque connection. `to: {}` is refused as meaningless.
//! * `rules: []` (or no `rules`) **matches nothing**. On an ALLOW policy that is an
//!   explicit deny-all for the selected destinations (they are selected, so only a rule
//!   could admit a request); on a DENY policy it has no effect.
//!
//! # Evaluation
//!
//! The same order everywhere ([`PolicySet::evaluate`]):
//!
//! 0. An HTTP request whose path [`normalize_path`] refuses, or whose method is not an
//!    HTTP token, is denied: `invalid_path` / `invalid_method`, whatever the policies.
//! 1. If any rule of a DENY policy selecting the destination and port matches: deny
//!    (`denied_by_rule`).
//! 2. If any ALLOW policy selects the destination and port, one of their rules must
//!    match: allow (`allowed_by_rule`), else deny (`no_allow_rule_matched`).
//! 3. Otherwise the [`MeshDefault`] decides: `deny` (`mesh_default_deny`),
//!    `allow-authenticated`, the default (`mesh_default_allow` for mTLS peers,
//!    `unauthenticated_by_default` for plaintext ones), or `allow-all`
//!    (`mesh_default_allow`).
//!
//! **L4 and L7.** Whether a port speaks HTTP is not part of a policy; the proxy knows
//! and says so by passing `http: Some(..)` for each request on an HTTP port, or
//! `http: None` for the single connection-level decision on an opaque port. On an
//! opaque connection a rule's `to` cannot be checked, and both actions fail closed:
//!
//! * an **ALLOW rule with `to` never matches** at L4 (it cannot admit what it cannot
//!   see; an ALLOW policy whose every rule has `to` therefore denies opaque traffic);
//! * a **DENY rule with `to` matches on its `from` alone** and refuses the whole
//!   connection (`DENY from X to /admin` on an opaque port refuses X entirely, since
//!   X could otherwise reach `/admin` through it).
//!
//! **HTTP matching, fail closed.** Paths are matched after [`normalize_path`] (module
//! [`path`] lists the rule and the CVEs behind it): the query is ignored, fragments,
//! `;`, backslashes, encoded slashes, encoded dot segments and control characters are
//! refused, dot segments and duplicate slashes resolved, a trailing slash ignored. Path
//! case: DENY rules match ignoring ASCII case (`DENY /admin` refuses `/ADMIN`, in case
//! the application is case-insensitive), ALLOW rules match exactly (`ALLOW /public/*`
//! does not admit `/PUBLIC/x`). Methods: documents must write them upper-case; a
//! request method is compared as if upper-cased, so `DENY GET` refuses `get` (some
//! servers treat methods case-insensitively; for those that do not, `get` is an
//! unknown method, so `ALLOW GET` admitting it grants nothing more).
//!
//! **Not matched, on purpose.** Hosts and headers: Istio CVE-2021-39155 (host case),
//! Envoy CVE-2021-32777 (multiple header values) and Consul CVE-2024-10006 (header
//! rules) show how easily those disagree with the application; identity comes from
//! mTLS instead.
//!
//! # Example
//!
//! ```
//! use ferrule_policy::{HttpRequest, MeshDefault, PolicySet, Request, Source, parse_documents};
//! use spiffe::SpiffeId;
//!
//! let policies = parse_documents(r#"
//! apiVersion: ferrule.dev/v1alpha1
//! kind: AuthorizationPolicy
//! metadata: {name: block-admin}
//! spec:
//!   selector: {spiffeId: "spiffe://td/ns/prod/*"}
//!   action: DENY
//!   rules:
//!     - from: [{spiffeIdPrefix: spiffe://td/ns/web/}]
//!       to: {paths: [/admin]}
//! "#).unwrap();
//! let set = PolicySet::compile(policies, MeshDefault::AllowAuthenticated);
//!
//! let web = SpiffeId::new("spiffe://td/ns/web/sa/app").unwrap();
//! let api = SpiffeId::new("spiffe://td/ns/prod/sa/api").unwrap();
//! let decision = set.evaluate(&Request {
//!     source: Source::Authenticated(&web),
//!     destination: &api,
//!     port: 8080,
//!     http: Some(HttpRequest { method: "GET", path: "//public/../admin/" }),
//! });
//! assert!(!decision.allow);
//! assert_eq!(decision.reason.as_str(), "denied_by_rule");
//! assert_eq!(
//!     decision.explain(),
//!     "DENY rule 0 of policy 'block-admin' matched: source spiffe://td/ns/web/sa/app \
//!      matches spiffeIdPrefix spiffe://td/ns/web/; path /admin/ matches /admin"
//! );
//! ```

mod cidr;
mod decision;
mod evaluate;
mod http;
mod identity;
mod mesh_default;
mod parse;
pub mod path;
mod policy;
mod policy_set;

pub use cidr::Cidr;
pub use decision::{Decision, Reason, RuleMatch};
pub use evaluate::{HttpRequest, Request, Source};
pub use http::{Method, PathPattern};
pub use identity::{IdPrefix, IdSelector};
pub use mesh_default::{MeshDefault, ParseMeshDefaultError};
pub use parse::{DocumentError, parse_documents};
pub use path::{PathError, normalize_path};
pub use policy::{
    API_VERSION, Action, KIND, KUBERNETES_NAME_PREFIX, Policy, RequestMatcher, Rule, Selector,
    SourceMatcher,
};
pub use policy_set::PolicySet;
