use std::net::IpAddr;

use super::*;
use crate::{PathError, parse_documents};

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One policy document from its name, selector ID, action and rules (YAML flow list).
fn policy(name: &str, selector: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\n\
         spec:\n  selector: {{spiffeId: \"{selector}\"}}\n  action: {action}\n  rules: {rules}\n---\n"
    )
}

fn compile(docs: &[String], default: MeshDefault) -> PolicySet {
    PolicySet::compile(parse_documents(&docs.concat()).unwrap(), default)
}

const API: &str = "spiffe://td/ns/prod/sa/api";
const WEB: &str = "spiffe://td/ns/web/sa/app";
const OPS: &str = "spiffe://td/ns/ops/sa/admin";

fn http(set: &PolicySet, source: Source<'_>, method: &str, path: &str) -> Decision {
    let destination = id(API);
    set.evaluate(&Request {
        source,
        destination: &destination,
        port: 8080,
        http: Some(HttpRequest { method, path }),
    })
}

fn opaque(set: &PolicySet, source: Source<'_>, port: u16) -> Decision {
    let destination = id(API);
    set.evaluate(&Request {
        source,
        destination: &destination,
        port,
        http: None,
    })
}

fn verdict(d: &Decision) -> (bool, &'static str, Option<&str>) {
    (d.allow, d.reason.as_str(), d.policy.as_deref())
}

#[test]
fn mesh_defaults_for_authenticated_and_unauthenticated_peers() {
    let web = id(WEB);
    let authenticated = Source::Authenticated(&web);
    let plaintext = Source::Unauthenticated(ip("10.1.2.3"));
    let cases = [
        (
            MeshDefault::Deny,
            authenticated,
            (false, "mesh_default_deny", None),
        ),
        (
            MeshDefault::Deny,
            plaintext,
            (false, "mesh_default_deny", None),
        ),
        (
            MeshDefault::AllowAuthenticated,
            authenticated,
            (true, "mesh_default_allow", None),
        ),
        (
            MeshDefault::AllowAuthenticated,
            plaintext,
            (false, "unauthenticated_by_default", None),
        ),
        (
            MeshDefault::AllowAll,
            authenticated,
            (true, "mesh_default_allow", None),
        ),
        (
            MeshDefault::AllowAll,
            plaintext,
            (true, "mesh_default_allow", None),
        ),
    ];
    // With no policy at all, and with a DENY policy selecting the destination whose
    // rule does not match: in both, step 3 decides.
    let deny_other = [policy(
        "deny-ops",
        API,
        "DENY",
        &format!("[{{from: [{{spiffeId: {OPS}}}]}}]"),
    )];
    for docs in [&[][..], &deny_other[..]] {
        for (default, source, want) in cases {
            let set = compile(docs, default);
            assert_eq!(
                verdict(&opaque(&set, source, 8080)),
                want,
                "{default} {source}"
            );
            assert_eq!(
                verdict(&http(&set, source, "GET", "/")),
                want,
                "{default} {source}"
            );
        }
    }
    assert_eq!(
        PolicySet::default().mesh_default(),
        MeshDefault::AllowAuthenticated
    );
}

#[test]
fn deny_wins_over_allow() {
    let set = compile(
        &[
            policy(
                "allow-all-mesh",
                API,
                "ALLOW",
                "[{from: [{authenticated: true}]}]",
            ),
            policy(
                "deny-web",
                API,
                "DENY",
                &format!("[{{from: [{{spiffeId: {WEB}}}]}}]"),
            ),
        ],
        MeshDefault::AllowAll,
    );
    let (web, ops) = (id(WEB), id(OPS));
    let d = opaque(&set, Source::Authenticated(&web), 8080);
    assert_eq!(verdict(&d), (false, "denied_by_rule", Some("deny-web")));
    assert_eq!(d.rule, Some(0));
    let d = opaque(&set, Source::Authenticated(&ops), 8080);
    assert_eq!(
        verdict(&d),
        (true, "allowed_by_rule", Some("allow-all-mesh"))
    );
}

#[test]
fn a_selecting_allow_policy_requires_a_matching_rule() {
    let set = compile(
        &[
            policy(
                "allow-web",
                API,
                "ALLOW",
                &format!("[{{from: [{{spiffeId: {WEB}}}]}}]"),
            ),
            policy(
                "allow-ops-get",
                API,
                "ALLOW",
                &format!("[{{from: [{{spiffeId: {OPS}}}], to: {{methods: [GET]}}}}]"),
            ),
        ],
        MeshDefault::AllowAll,
    );
    let (web, ops) = (id(WEB), id(OPS));
    assert!(http(&set, Source::Authenticated(&web), "DELETE", "/x").allow);
    assert!(http(&set, Source::Authenticated(&ops), "GET", "/x").allow);
    let d = http(&set, Source::Authenticated(&ops), "POST", "/x");
    assert_eq!(verdict(&d), (false, "no_allow_rule_matched", None));
    assert_eq!(
        d.reason,
        Reason::NoAllowRuleMatched {
            policies: vec!["allow-ops-get".into(), "allow-web".into()]
        }
    );
    // The mesh default (allow-all) no longer applies, even to plaintext peers.
    let d = http(&set, Source::Unauthenticated(ip("10.0.0.1")), "GET", "/");
    assert_eq!(verdict(&d), (false, "no_allow_rule_matched", None));
}

#[test]
fn empty_rules_match_nothing() {
    let web = id(WEB);
    let deny_all = compile(
        &[policy("lockdown", API, "ALLOW", "[]")],
        MeshDefault::AllowAll,
    );
    let d = opaque(&deny_all, Source::Authenticated(&web), 1);
    assert_eq!(verdict(&d), (false, "no_allow_rule_matched", None));

    let no_op = compile(
        &[policy("nothing", API, "DENY", "[]")],
        MeshDefault::AllowAuthenticated,
    );
    let d = opaque(&no_op, Source::Authenticated(&web), 1);
    assert_eq!(verdict(&d), (true, "mesh_default_allow", None));
}

#[test]
fn a_rule_without_from_matches_any_source_including_plaintext() {
    let set = compile(&[policy("open", API, "ALLOW", "[{}]")], MeshDefault::Deny);
    let d = opaque(&set, Source::Unauthenticated(ip("203.0.113.7")), 8080);
    assert_eq!(verdict(&d), (true, "allowed_by_rule", Some("open")));
    assert_eq!(
        d.explain(),
        "ALLOW rule 0 of policy 'open' matched: any source (the rule has no from); any \
         request (the rule has no to)"
    );
}

#[test]
fn ports_narrow_the_selector() {
    let yaml = policy("lockdown-admin-port", API, "ALLOW", "[]").replace(
        &format!("{{spiffeId: \"{API}\"}}"),
        &format!("{{spiffeId: \"{API}\", ports: [9000, 9001]}}"),
    );
    let set = compile(&[yaml], MeshDefault::AllowAuthenticated);
    let web = id(WEB);
    assert!(!opaque(&set, Source::Authenticated(&web), 9001).allow);
    assert!(opaque(&set, Source::Authenticated(&web), 8080).allow);
    assert_eq!(set.selects(&id(API), 9000), ["lockdown-admin-port"]);
    assert_eq!(set.selects(&id(API), 8080), Vec::<&str>::new());
    assert_eq!(set.policies_for(&id(API)).len(), 1);
}

#[test]
fn wildcard_selectors() {
    let set = compile(
        &[
            policy("td-wide", "spiffe://td/*", "DENY", "[]"),
            policy("prod", "spiffe://td/ns/prod/*", "DENY", "[]"),
            policy("prod-sa", "spiffe://td/ns/prod/sa/*", "DENY", "[]"),
            policy("exact-b", API, "DENY", "[]"),
            policy("exact-a", API, "DENY", "[]"),
            policy("other-td", "spiffe://other/ns/prod/*", "DENY", "[]"),
        ],
        MeshDefault::Deny,
    );
    // Exact first (by name), then the deepest prefix first.
    assert_eq!(
        set.selects(&id(API), 80),
        ["exact-a", "exact-b", "prod-sa", "prod", "td-wide"]
    );
    assert_eq!(
        set.selects(&id("spiffe://td/ns/prod/x"), 80),
        ["prod", "td-wide"]
    );
    // Whole-segment prefixes only: /ns/production is not under /ns/prod/.
    assert_eq!(
        set.selects(&id("spiffe://td/ns/production/sa/api"), 80),
        ["td-wide"]
    );
    assert_eq!(set.selects(&id("spiffe://td/ns/prod"), 80), ["td-wide"]);
    assert_eq!(
        set.selects(&id("spiffe://other/ns/prod/sa/api"), 80),
        ["other-td"]
    );
    assert!(
        set.selects(&id("spiffe://third/ns/prod/sa/api"), 80)
            .is_empty()
    );
    let names: Vec<&str> = set
        .policies_for(&id("spiffe://td/ns/prod/sa/x"))
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(names, ["prod-sa", "prod", "td-wide"]);
}

#[test]
fn wildcard_allow_policy_applies_to_every_workload_under_it() {
    let set = compile(
        &[policy(
            "prod-from-web",
            "spiffe://td/ns/prod/*",
            "ALLOW",
            "[{from: [{spiffeIdPrefix: spiffe://td/ns/web/}]}]",
        )],
        MeshDefault::AllowAuthenticated,
    );
    let (web, ops) = (id(WEB), id(OPS));
    assert!(opaque(&set, Source::Authenticated(&web), 1).allow);
    let d = opaque(&set, Source::Authenticated(&ops), 1);
    assert_eq!(verdict(&d), (false, "no_allow_rule_matched", None));
    // A destination outside the prefix falls back to the mesh default.
    let elsewhere = id("spiffe://td/ns/dev/sa/api");
    let d = set.evaluate(&Request {
        source: Source::Authenticated(&ops),
        destination: &elsewhere,
        port: 1,
        http: None,
    });
    assert_eq!(verdict(&d), (true, "mesh_default_allow", None));
}

#[test]
fn source_matchers() {
    let set = compile(
        &[policy(
            "sources",
            API,
            "ALLOW",
            "[{from: [{spiffeId: spiffe://td/ns/a/sa/exact}]},\
              {from: [{spiffeIdPrefix: \"spiffe://td/ns/b/*\"}]},\
              {from: [{trustDomain: partner.example}]},\
              {from: [{unauthenticated: true, cidrs: [10.0.0.0/8, \"fd00::/8\"]}]}]",
        )],
        MeshDefault::Deny,
    );
    let authenticated = [
        ("spiffe://td/ns/a/sa/exact", Some(0)),
        ("spiffe://td/ns/a/sa/exact2", None),
        ("spiffe://td/ns/b/sa/x", Some(1)),
        ("spiffe://td/ns/bb/sa/x", None),
        ("spiffe://partner.example/anything", Some(2)),
        ("spiffe://PARTNER.example/x", Some(2)),
        ("spiffe://partner.example.evil/x", None),
        ("spiffe://other/ns/a/sa/exact", None),
    ];
    for (peer, rule) in authenticated {
        let peer_id = id(peer);
        let d = opaque(&set, Source::Authenticated(&peer_id), 1);
        assert_eq!((d.allow, d.rule), (rule.is_some(), rule), "{peer}");
    }
    let plaintext = [
        ("10.9.8.7", Some(3)),
        ("::ffff:10.9.8.7", Some(3)),
        ("11.0.0.1", None),
        ("fd00::42", Some(3)),
        ("fe80::1", None),
    ];
    for (addr, rule) in plaintext {
        let d = opaque(&set, Source::Unauthenticated(ip(addr)), 1);
        assert_eq!((d.allow, d.rule), (rule.is_some(), rule), "{addr}");
    }

    let any = compile(
        &[policy(
            "any",
            API,
            "ALLOW",
            "[{from: [{authenticated: true}]}, {from: [{unauthenticated: true}]}]",
        )],
        MeshDefault::Deny,
    );
    let peer = id("spiffe://elsewhere/x");
    assert_eq!(opaque(&any, Source::Authenticated(&peer), 1).rule, Some(0));
    assert_eq!(
        opaque(&any, Source::Unauthenticated(ip("198.51.100.1")), 1).rule,
        Some(1)
    );
}

#[test]
fn opaque_connections_fail_closed_on_http_conditions() {
    let web = id(WEB);
    let ops = id(OPS);

    // ALLOW with `to` cannot match at L4.
    let allow_http_only = compile(
        &[policy(
            "allow-get",
            API,
            "ALLOW",
            "[{from: [{authenticated: true}], to: {methods: [GET]}}]",
        )],
        MeshDefault::AllowAll,
    );
    let d = opaque(&allow_http_only, Source::Authenticated(&web), 5432);
    assert_eq!(verdict(&d), (false, "no_allow_rule_matched", None));
    assert!(http(&allow_http_only, Source::Authenticated(&web), "GET", "/").allow);

    // ALLOW without `to` matches at L4.
    let allow_l4 = compile(
        &[policy(
            "allow-mesh",
            API,
            "ALLOW",
            "[{from: [{authenticated: true}]}]",
        )],
        MeshDefault::Deny,
    );
    assert!(opaque(&allow_l4, Source::Authenticated(&web), 5432).allow);

    // DENY with `to`: on its `from` alone, for the whole opaque connection.
    let deny_admin = compile(
        &[policy(
            "block-admin",
            API,
            "DENY",
            &format!("[{{from: [{{spiffeId: {WEB}}}], to: {{paths: [/admin]}}}}]"),
        )],
        MeshDefault::AllowAuthenticated,
    );
    let d = opaque(&deny_admin, Source::Authenticated(&web), 5432);
    assert_eq!(verdict(&d), (false, "denied_by_rule", Some("block-admin")));
    assert_eq!(
        d.explain(),
        format!(
            "DENY rule 0 of policy 'block-admin' matched: source {WEB} matches spiffeId {WEB}; \
             its HTTP conditions cannot be checked on an opaque connection, so the DENY \
             applies to the whole connection"
        )
    );
    // ...but not for a source its `from` does not match,
    assert!(opaque(&deny_admin, Source::Authenticated(&ops), 5432).allow);
    // ...and on HTTP only for the paths it names.
    assert!(http(&deny_admin, Source::Authenticated(&web), "GET", "/public").allow);
    assert!(!http(&deny_admin, Source::Authenticated(&web), "GET", "/admin").allow);
}

/// A DENY on `/admin` must hold against every way of spelling it, and paths that
/// cannot be read unambiguously are refused outright.
#[test]
fn bypass_table() {
    let set = compile(
        &[
            policy("open", API, "ALLOW", "[{}]"),
            policy("block-admin", API, "DENY", "[{to: {paths: [/admin]}}]"),
        ],
        MeshDefault::AllowAll,
    );
    let web = id(WEB);
    let peer = Source::Authenticated(&web);

    let caught = [
        "/admin",
        "//admin",
        "/admin/",
        "/./admin",
        "/public/../admin",
        "/%61dmin",
        "/admin?x=1",
        "/admin?",
        "///admin//",
        "/ADMIN",
        "/Admin/",
        "/%41dmin",
        "/public/./x/../../admin",
    ];
    for path in caught {
        let d = http(&set, peer, "GET", path);
        assert_eq!(
            verdict(&d),
            (false, "denied_by_rule", Some("block-admin")),
            "{path}"
        );
    }

    let refused = [
        ("/admin%2F", PathError::EncodedSlash),
        ("/admin%2f", PathError::EncodedSlash),
        ("/%2e%2e/admin", PathError::EncodedDotSegment),
        ("/public/%2e%2e/admin", PathError::EncodedDotSegment),
        ("/admin%00", PathError::EncodedControlCharacter),
        ("/admin#frag", PathError::Fragment),
        ("/admin;x", PathError::Semicolon),
        ("/admin%3Bx", PathError::Semicolon),
        ("\\admin", PathError::NotAbsolute),
        ("\\\\admin", PathError::NotAbsolute),
        ("/\\admin", PathError::Backslash),
        ("/../admin", PathError::AboveRoot),
        ("admin", PathError::NotAbsolute),
        ("/admin%", PathError::InvalidPercentEncoding),
    ];
    for (path, error) in refused {
        let d = http(&set, peer, "GET", path);
        assert_eq!(verdict(&d), (false, "invalid_path", None), "{path}");
        assert_eq!(d.reason, Reason::InvalidPath(error), "{path}");
    }

    for path in [
        "/",
        "/public",
        "/administrator",
        "/public/admin",
        "/admin%20",
    ] {
        assert!(http(&set, peer, "GET", path).allow, "{path}");
    }
}

#[test]
fn invalid_paths_are_denied_even_when_everything_is_allowed() {
    let set = PolicySet::compile(Vec::new(), MeshDefault::AllowAll);
    let d = http(
        &set,
        Source::Unauthenticated(ip("10.0.0.1")),
        "GET",
        "/a%2fb",
    );
    assert_eq!(verdict(&d), (false, "invalid_path", None));
    assert_eq!(
        d.explain(),
        "the request path was refused before any policy was consulted: path contains an \
         encoded slash or backslash (%2F or %5C)"
    );
    let d = http(&set, Source::Unauthenticated(ip("10.0.0.1")), "G ET", "/");
    assert_eq!(verdict(&d), (false, "invalid_method", None));
    let d = http(&set, Source::Unauthenticated(ip("10.0.0.1")), "", "/");
    assert_eq!(verdict(&d), (false, "invalid_method", None));
}

#[test]
fn allow_paths_match_exactly_deny_paths_ignore_case() {
    let set = compile(
        &[policy(
            "public",
            API,
            "ALLOW",
            "[{to: {paths: [\"/public/*\", \"/api/**/items\", \"/files/*.json\"]}}]",
        )],
        MeshDefault::AllowAll,
    );
    let web = id(WEB);
    let peer = Source::Authenticated(&web);
    for (path, allowed) in [
        ("/public", true),
        ("/public/a/b", true),
        ("//public//a", true),
        ("/public/../private", false),
        ("/publicity", false),
        ("/PUBLIC/a", false),
        ("/api/items", true),
        ("/api/v1/x/items/", true),
        ("/api/v1/items/1", false),
        ("/files/a.json", true),
        ("/files/a/b.json", false),
    ] {
        assert_eq!(http(&set, peer, "GET", path).allow, allowed, "{path}");
    }
}

#[test]
fn method_case() {
    let set = compile(
        &[
            policy("open", API, "ALLOW", "[{to: {methods: [GET, POST]}}]"),
            policy(
                "no-get",
                API,
                "DENY",
                &format!("[{{from: [{{spiffeId: {WEB}}}], to: {{methods: [GET]}}}}]"),
            ),
        ],
        MeshDefault::Deny,
    );
    let (web, ops) = (id(WEB), id(OPS));
    for method in ["GET", "get", "Get", "gEt"] {
        let d = http(&set, Source::Authenticated(&web), method, "/");
        assert_eq!(
            verdict(&d),
            (false, "denied_by_rule", Some("no-get")),
            "{method}"
        );
        // Upper-casing applies to ALLOW too: `get` is GET for every rule.
        let d = http(&set, Source::Authenticated(&ops), method, "/");
        assert_eq!(
            verdict(&d),
            (true, "allowed_by_rule", Some("open")),
            "{method}"
        );
    }
    assert!(http(&set, Source::Authenticated(&web), "post", "/").allow);
    let d = http(&set, Source::Authenticated(&ops), "DELETE", "/");
    assert_eq!(verdict(&d), (false, "no_allow_rule_matched", None));
}

#[test]
fn rules_are_evaluated_in_order_and_explained() {
    let set = compile(
        &[policy(
            "block-admin",
            API,
            "DENY",
            "[{from: [{unauthenticated: true}]},\
              {from: [{spiffeId: spiffe://td/x/y}, {spiffeIdPrefix: spiffe://td/ns/web/}], \
               to: {methods: [GET, HEAD], paths: [/metrics, \"/admin/*\"]}}]",
        )],
        MeshDefault::AllowAuthenticated,
    );
    let web = id(WEB);
    let d = http(
        &set,
        Source::Authenticated(&web),
        "head",
        "/admin/users?id=1",
    );
    assert_eq!((d.allow, d.rule), (false, Some(1)));
    assert_eq!(
        d.explain(),
        format!(
            "DENY rule 1 of policy 'block-admin' matched: source {WEB} matches spiffeIdPrefix \
             spiffe://td/ns/web/; method head is one of [GET, HEAD]; path /admin/users matches \
             /admin/*"
        )
    );
    let Reason::DeniedByRule(m) = &d.reason else {
        panic!("{:?}", d.reason)
    };
    assert_eq!(
        (m.policy.as_str(), m.rule, m.conditions.len()),
        ("block-admin", 1, 3)
    );

    let d = http(&set, Source::Unauthenticated(ip("10.0.0.1")), "GET", "/");
    assert_eq!((d.allow, d.rule), (false, Some(0)));
    assert_eq!(
        d.explain(),
        "DENY rule 0 of policy 'block-admin' matched: source unauthenticated peer 10.0.0.1 \
         matches unauthenticated; any request (the rule has no to)"
    );
}

#[test]
fn every_reason_has_a_label_and_a_sentence() {
    let rule_match = RuleMatch {
        policy: "p".into(),
        rule: 2,
        conditions: vec!["a".into(), "b".into()],
    };
    let reasons = [
        (
            Reason::DeniedByRule(rule_match.clone()),
            "denied_by_rule",
            "DENY rule 2 of policy 'p' matched: a; b",
        ),
        (
            Reason::AllowedByRule(rule_match),
            "allowed_by_rule",
            "ALLOW rule 2 of policy 'p' matched: a; b",
        ),
        (
            Reason::NoAllowRuleMatched {
                policies: vec!["x".into(), "y".into()],
            },
            "no_allow_rule_matched",
            "(policies: 'x', 'y')",
        ),
        (
            Reason::MeshDefaultAllow(MeshDefault::AllowAll),
            "mesh_default_allow",
            "mesh default allow-all allows",
        ),
        (
            Reason::MeshDefaultDeny,
            "mesh_default_deny",
            "mesh default deny refuses",
        ),
        (
            Reason::UnauthenticatedByDefault,
            "unauthenticated_by_default",
            "refuses unauthenticated",
        ),
        (
            Reason::InvalidPath(PathError::Fragment),
            "invalid_path",
            "fragment",
        ),
        (
            Reason::InvalidMethod,
            "invalid_method",
            "not a valid HTTP token",
        ),
    ];
    for (reason, label, sentence) in reasons {
        assert_eq!(reason.as_str(), label);
        assert!(reason.explain().contains(sentence), "{}", reason.explain());
    }
}

#[test]
fn duplicate_names_are_both_enforced_and_versions_kept() {
    let docs = [
        parse_documents(&policy("same", API, "ALLOW", "[{}]")).unwrap(),
        parse_documents(&policy("same", API, "DENY", "[{}]")).unwrap(),
    ]
    .concat();
    let set = PolicySet::compile(docs, MeshDefault::AllowAll).with_version(7);
    assert_eq!(set.version(), 7);
    assert_eq!(set.policies().len(), 2);
    let web = id(WEB);
    assert_eq!(
        verdict(&opaque(&set, Source::Authenticated(&web), 1)),
        (false, "denied_by_rule", Some("same"))
    );
}
