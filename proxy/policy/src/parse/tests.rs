use super::*;

use crate::{Action, IdSelector, SourceMatcher};

/// A document with the given name and `spec` body (indented by the caller, 2 spaces).
fn doc(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ferrule.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const SELECTOR: &str = "  selector:\n    spiffeId: spiffe://td/ns/prod/sa/api\n";

/// A document whose only rule is `rule` (a YAML flow mapping).
fn with_rule(rule: &str) -> String {
    doc(
        "p",
        &format!("{SELECTOR}  action: ALLOW\n  rules:\n    - {rule}\n"),
    )
}

const FULL: &str = r#"
# Leading comment and empty document.
---
apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: api-allow
  namespace: prod
spec:
  selector:
    spiffeId: spiffe://TD/ns/prod/sa/api
    ports: [8080, 9090]
  action: ALLOW
  rules:
    - from:
        - spiffeId: spiffe://td/ns/web/sa/app
        - spiffeIdPrefix: spiffe://td/ns/ops/*
        - trustDomain: partner.example
        - authenticated: true
        - unauthenticated: true
          cidrs: [10.0.0.0/8, "fd00::/8", 192.168.1.7]
      to:
        methods: [GET, POST]
        paths: [/admin, "/public/*", "/api/**/debug", "/files/*.json"]
    - {}
---
apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: prod-deny}
spec:
  selector: {spiffeId: "spiffe://td/ns/prod/*"}
  action: DENY
  rules: []
---
"#;

#[test]
fn parses_every_field() {
    let policies = parse_documents(FULL).unwrap();
    assert_eq!(policies.len(), 2);
    let p = &policies[0];
    assert_eq!(p.name(), "api-allow");
    assert_eq!(p.namespace(), Some("prod"));
    assert_eq!(p.action(), Action::Allow);
    assert_eq!(p.selector().ports, [8080, 9090]);
    assert_eq!(
        p.selector().workloads.to_string(),
        "spiffe://td/ns/prod/sa/api"
    );
    assert_eq!(p.rules().len(), 2);
    let from: Vec<String> = p.rules()[0].from.iter().map(ToString::to_string).collect();
    assert_eq!(
        from,
        [
            "spiffeId spiffe://td/ns/web/sa/app",
            "spiffeIdPrefix spiffe://td/ns/ops/",
            "trustDomain partner.example",
            "authenticated",
            "unauthenticated from [10.0.0.0/8, fd00::/8, 192.168.1.7/32]",
        ]
    );
    let to = p.rules()[0].to.as_ref().unwrap();
    assert_eq!(to.methods.len(), 2);
    assert_eq!(to.paths.len(), 4);
    assert_eq!(p.rules()[1].from, []);
    assert_eq!(p.rules()[1].to, None);

    let deny = &policies[1];
    assert_eq!(deny.action(), Action::Deny);
    assert!(matches!(deny.selector().workloads, IdSelector::Prefix(_)));
    assert_eq!(deny.rules(), []);
    assert_eq!(deny.namespace(), None);
}

#[test]
fn round_trips_through_json_in_document_form() {
    for policy in parse_documents(FULL).unwrap() {
        let json = serde_json::to_string(&policy).unwrap();
        let back: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, policy);
        // Same field names as the YAML, canonical values.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["apiVersion"], "ferrule.dev/v1alpha1");
        assert_eq!(value["kind"], "AuthorizationPolicy");
        assert!(value["spec"]["selector"]["spiffeId"].is_string());
        assert!(value["spec"]["rules"].is_array());
    }
    let json = serde_json::to_value(&parse_documents(FULL).unwrap()[0]).unwrap();
    let from = &json["spec"]["rules"][0]["from"];
    assert_eq!(from[1]["spiffeIdPrefix"], "spiffe://td/ns/ops/");
    assert_eq!(from[4]["unauthenticated"], true);
    assert_eq!(from[4]["cidrs"][2], "192.168.1.7/32");
    assert_eq!(
        json["spec"]["selector"]["spiffeId"],
        "spiffe://td/ns/prod/sa/api"
    );
    assert_eq!(json["spec"]["rules"][1], serde_json::json!({}));
    assert_eq!(json["metadata"]["namespace"], "prod");
}

#[test]
fn json_is_validated_too() {
    let json = r#"{"apiVersion":"ferrule.dev/v1alpha1","kind":"AuthorizationPolicy",
        "metadata":{"name":"Bad"},"spec":{"selector":{"spiffeId":"spiffe://td/a"},
        "action":"ALLOW","rules":[{"to":{"paths":["/a/../b"]}}]}}"#;
    let err = serde_json::from_str::<Policy>(json)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata.name: name \"Bad\" is not a DNS-1123 label"),
        "{err}"
    );
    assert!(
        err.contains("spec.rules[0].to.paths[0]: path \"/a/../b\""),
        "{err}"
    );
    let unknown = json.replace("\"kind\"", "\"kinds\"");
    assert!(serde_json::from_str::<Policy>(&unknown).is_err());
}

/// Policies read from Kubernetes resources are named `k8s/<namespace>/<name>`, a form
/// no operator's name (a DNS-1123 label) can take; it survives the JSON round trip the
/// control plane and the proxy make.
#[test]
fn kubernetes_names_are_accepted_and_round_trip() {
    let yaml = doc(
        "k8s/prod/allow-web",
        &format!("{SELECTOR}  action: ALLOW\n"),
    );
    let policies = parse_documents(&yaml).unwrap();
    assert_eq!(policies[0].name(), "k8s/prod/allow-web");
    let json = serde_json::to_string(&policies[0]).unwrap();
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, policies[0]);
}

#[test]
fn empty_streams_and_documents() {
    assert_eq!(parse_documents("").unwrap(), []);
    assert_eq!(parse_documents("---\n---\n# nothing\n").unwrap(), []);
}

/// Every invalid-document error names its document, field and reason:
/// (document, field, substring of the reason).
fn invalid_cases() -> Vec<(String, &'static str, &'static str)> {
    let rule = |r: &str| with_rule(r);
    vec![
        // Header and metadata.
        (
            doc("p", &format!("{SELECTOR}  action: ALLOW\n")).replace("v1alpha1", "v1"),
            "apiVersion",
            "must be \"ferrule.dev/v1alpha1\"",
        ),
        (
            doc("p", &format!("{SELECTOR}  action: ALLOW\n"))
                .replace("kind: AuthorizationPolicy", "kind: Policy"),
            "kind",
            "must be \"AuthorizationPolicy\"",
        ),
        (
            doc("\"\"", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "name is empty",
        ),
        (
            doc("Api", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "not a DNS-1123 label",
        ),
        (
            doc("a.b", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "not a DNS-1123 label",
        ),
        (
            doc("-a", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "not a DNS-1123 label",
        ),
        (
            doc("a_b", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "not a DNS-1123 label",
        ),
        (
            doc(&"a".repeat(64), &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "at most 63",
        ),
        (
            doc("k8s/prod", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "k8s/<namespace>/<name>",
        ),
        (
            doc("k8s/prod/a/b", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "not a DNS-1123 label",
        ),
        (
            doc("k8s/Prod/a", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "namespace in name \"Prod\" is not a DNS-1123 label",
        ),
        (
            doc("k8s//a", &format!("{SELECTOR}  action: ALLOW\n")),
            "metadata.name",
            "namespace in name is empty",
        ),
        (
            doc("p", &format!("{SELECTOR}  action: ALLOW\n"))
                .replace("name: p", "name: p\n  namespace: Prod"),
            "metadata.namespace",
            "not a DNS-1123 label",
        ),
        (
            doc("p", &format!("{SELECTOR}  action: ALLOW\n")).replace("name: p", "labels: {}"),
            "metadata.labels",
            "unknown field `labels`",
        ),
        (
            doc("p", &format!("{SELECTOR}  action: ALLOW\n"))
                .replace("  name: p\n", "  namespace: x\n"),
            "metadata.name",
            "missing field `name`",
        ),
        (
            format!(
                "{}status: {{}}\n",
                doc("p", &format!("{SELECTOR}  action: ALLOW\n"))
            ),
            "status",
            "unknown field `status`",
        ),
        (
            "just a string".into(),
            "",
            "an AuthorizationPolicy document",
        ),
        // Selector and action.
        (
            doc("p", "  selector:\n    spiffeId: td/ns/a\n  action: ALLOW\n"),
            "spec.selector.spiffeId",
            "not a valid SPIFFE ID",
        ),
        (
            doc(
                "p",
                "  selector:\n    spiffeId: spiffe://td/ns/*/sa/api\n  action: ALLOW\n",
            ),
            "spec.selector.spiffeId",
            "whole last segment",
        ),
        (
            doc(
                "p",
                "  selector:\n    spiffeId: spiffe://td/ns/prod*\n  action: ALLOW\n",
            ),
            "spec.selector.spiffeId",
            "whole last segment",
        ),
        (
            doc(
                "p",
                "  selector:\n    spiffeId: spiffe://td/ns/prod/\n  action: ALLOW\n",
            ),
            "spec.selector.spiffeId",
            "end it with '/*'",
        ),
        (
            doc("p", "  selector:\n    ports: [80]\n  action: ALLOW\n"),
            "spec.selector.spiffeId",
            "missing field `spiffeId`",
        ),
        (
            doc(
                "p",
                "  selector:\n    spiffeId: spiffe://td/a\n    ports: [80, 0]\n  action: ALLOW\n",
            ),
            "spec.selector.ports[1]",
            "port 0",
        ),
        (
            doc(
                "p",
                "  selector:\n    spiffeId: spiffe://td/a\n    ports: [70000]\n  action: ALLOW\n",
            ),
            "spec.selector.ports[0]",
            "expected u16",
        ),
        (
            doc(
                "p",
                "  selector:\n    spiffeId: spiffe://td/a\n    labels: {}\n  action: ALLOW\n",
            ),
            "spec.selector.labels",
            "unknown field",
        ),
        (
            doc("p", &format!("{SELECTOR}  action: PERMIT\n")),
            "spec.action",
            "unknown action \"PERMIT\": expected ALLOW or DENY",
        ),
        (
            doc("p", &format!("{SELECTOR}  action: allow\n")),
            "spec.action",
            "write \"ALLOW\"",
        ),
        (doc("p", SELECTOR), "spec.action", "missing field `action`"),
        (
            doc("p", &format!("{SELECTOR}  action: ALLOW\n  mode: audit\n")),
            "spec.mode",
            "unknown field `mode`",
        ),
        // Sources.
        (
            rule("{from: [{unauthenticated: true, spiffeId: spiffe://td/a}]}"),
            "spec.rules[0].from[0]",
            "exactly one of",
        ),
        (
            rule("{from: [{authenticated: true, trustDomain: td}]}"),
            "spec.rules[0].from[0]",
            "found trustDomain and authenticated",
        ),
        (
            rule("{from: [{}]}"),
            "spec.rules[0].from[0]",
            "empty source entry",
        ),
        (
            rule("{from: [{authenticated: true}, {spiffeId: \"spiffe://td/ns/*\"}]}"),
            "spec.rules[0].from[1].spiffeId",
            "use spiffeIdPrefix",
        ),
        (
            rule("{from: [{spiffeId: spiffe://td/ns/a/}]}"),
            "spec.rules[0].from[0].spiffeId",
            "use spiffeIdPrefix",
        ),
        (
            rule("{from: [{spiffeId: \"http://td/a\"}]}"),
            "spec.rules[0].from[0].spiffeId",
            "not a valid SPIFFE ID",
        ),
        (
            rule("{from: [{spiffeIdPrefix: spiffe://td/ns/prod}]}"),
            "spec.rules[0].from[0].spiffeIdPrefix",
            "must end with '/' or '/*'",
        ),
        (
            rule("{from: [{spiffeIdPrefix: \"spiffe://td/*/prod/\"}]}"),
            "spec.rules[0].from[0].spiffeIdPrefix",
            "whole last segment",
        ),
        (
            rule("{from: [{trustDomain: \"spiffe://td\"}]}"),
            "spec.rules[0].from[0].trustDomain",
            "bare trust-domain name",
        ),
        (
            rule("{from: [{trustDomain: \"bad domain\"}]}"),
            "spec.rules[0].from[0].trustDomain",
            "not a valid trust domain",
        ),
        (
            rule("{from: [{authenticated: false}]}"),
            "spec.rules[0].from[0].authenticated",
            "`authenticated: false` is not a source",
        ),
        (
            rule("{from: [{unauthenticated: false}]}"),
            "spec.rules[0].from[0].unauthenticated",
            "`unauthenticated: false` is not a source",
        ),
        (
            rule("{from: [{spiffeId: spiffe://td/a, cidrs: [10.0.0.0/8]}]}"),
            "spec.rules[0].from[0].cidrs",
            "only to `unauthenticated: true`",
        ),
        (
            rule("{from: [{cidrs: [10.0.0.0/8]}]}"),
            "spec.rules[0].from[0].cidrs",
            "only to `unauthenticated: true`",
        ),
        (
            rule("{from: [{unauthenticated: true, cidrs: []}]}"),
            "spec.rules[0].from[0].cidrs",
            "cidrs is empty",
        ),
        (
            rule("{from: [{unauthenticated: true, cidrs: [10.0.0.0/8, 10.0.0/8]}]}"),
            "spec.rules[0].from[0].cidrs[1]",
            "not an IP address",
        ),
        (
            rule("{from: [{unauthenticated: true, cidrs: [10.0.0.1/8]}]}"),
            "spec.rules[0].from[0].cidrs[0]",
            "host bits set",
        ),
        (
            rule("{from: [{namespace: prod}]}"),
            "spec.rules[0].from[0].namespace",
            "unknown field `namespace`",
        ),
        (
            rule("{from: {authenticated: true}}"),
            "spec.rules[0].from",
            "expected a sequence",
        ),
        // Requests.
        (
            rule("{to: {}}"),
            "spec.rules[0].to",
            "needs methods or paths",
        ),
        (
            rule("{to: {methods: [get]}}"),
            "spec.rules[0].to.methods[0]",
            "must be upper-case: write \"GET\"",
        ),
        (
            rule("{to: {methods: [GET, \"GE T\"]}}"),
            "spec.rules[0].to.methods[1]",
            "not an HTTP method token",
        ),
        (
            rule("{to: {methods: GET}}"),
            "spec.rules[0].to.methods",
            "expected a sequence",
        ),
        (
            rule("{to: {paths: [admin]}}"),
            "spec.rules[0].to.paths[0]",
            "must start with '/'",
        ),
        (
            rule("{to: {paths: [/a, /public/../admin]}}"),
            "spec.rules[0].to.paths[1]",
            "not in normal form",
        ),
        (
            rule("{to: {paths: [\"/admin?x=1\"]}}"),
            "spec.rules[0].to.paths[0]",
            "queries are stripped",
        ),
        (
            rule("{to: {paths: [\"/admin;x\"]}}"),
            "spec.rules[0].to.paths[0]",
            "';'",
        ),
        (
            rule("{to: {paths: [\"/admin/\"]}}"),
            "spec.rules[0].to.paths[0]",
            "write \"/admin\"",
        ),
        (
            rule("{to: {paths: [\"/a/**b\"]}}"),
            "spec.rules[0].to.paths[0]",
            "'**' must be a whole segment",
        ),
        (
            rule("{to: {hosts: [a]}}"),
            "spec.rules[0].to.hosts",
            "unknown field `hosts`",
        ),
        (
            rule("{when: [{key: x}]}"),
            "spec.rules[0].when",
            "unknown field `when`",
        ),
    ]
}

#[test]
fn every_invalid_document_names_document_field_and_reason() {
    let mut failures = Vec::new();
    for (yaml, field, reason) in invalid_cases() {
        let errors = match parse_documents(&yaml) {
            Ok(_) => {
                failures.push(format!("accepted:\n{yaml}"));
                continue;
            }
            Err(errors) => errors,
        };
        let ok = errors.len() == 1
            && errors[0].document == 0
            && errors[0].field == field
            && errors[0].reason.contains(reason);
        if !ok {
            failures.push(format!("want {field} / {reason:?}, got {errors:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_carry_the_name_when_there_is_one() {
    let errors = parse_documents(&with_rule("{to: {methods: [get]}}")).unwrap_err();
    assert_eq!(errors[0].name.as_deref(), Some("p"));
    let errors = parse_documents("just a string").unwrap_err();
    assert_eq!(errors[0].name, None);
}

#[test]
fn every_problem_of_a_document_is_reported_in_order() {
    let yaml = doc(
        "Bad_Name",
        "  selector:\n    spiffeId: spiffe://td/ns/*/x\n    ports: [0]\n  action: allow\n  rules:\n    \
         - from: [{spiffeId: spiffe://td/a, unauthenticated: true}]\n      to: {methods: [get], paths: [x]}\n",
    );
    let errors = parse_documents(&yaml).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "metadata.name",
            "spec.selector.spiffeId",
            "spec.selector.ports[0]",
            "spec.action",
            "spec.rules[0].from[0]",
            "spec.rules[0].to.methods[0]",
            "spec.rules[0].to.paths[0]",
        ]
    );
    assert!(
        errors
            .iter()
            .all(|e| e.document == 0 && e.name.as_deref() == Some("Bad_Name"))
    );
}

#[test]
fn errors_across_documents_and_duplicate_names() {
    let good = doc("a", &format!("{SELECTOR}  action: ALLOW\n"));
    let bad_action = doc("b", &format!("{SELECTOR}  action: NOPE\n"));
    let unknown = doc("c", &format!("{SELECTOR}  action: ALLOW\n  extra: 1\n"));
    let yaml = format!("{good}---\n{bad_action}---\n---\n{unknown}---\n{good}");
    let errors = parse_documents(&yaml).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");

    assert_eq!(
        (errors[0].document, errors[0].field.as_str()),
        (1, "spec.action")
    );
    assert_eq!(errors[0].name.as_deref(), Some("b"));

    // Serde errors carry the line and column in the whole stream.
    assert_eq!(
        (errors[1].document, errors[1].field.as_str()),
        (3, "spec.extra")
    );
    let line = yaml.lines().position(|l| l == "  extra: 1").unwrap() + 1;
    assert_eq!((errors[1].line, errors[1].column), (Some(line), Some(3)));

    assert_eq!(
        (errors[2].document, errors[2].field.as_str()),
        (4, "metadata.name")
    );
    assert!(
        errors[2]
            .reason
            .contains("duplicate name \"a\": document 0"),
        "{}",
        errors[2].reason
    );

    assert_eq!(
        errors[1].to_string(),
        format!(
            "document 3 ('c'), spec.extra: unknown field `extra`, expected one of `selector`, \
             `action`, `rules` (line {line}, column 3)"
        )
    );
    assert_eq!(
        errors[0].to_string(),
        "document 1 ('b'), spec.action: unknown action \"NOPE\": expected ALLOW or DENY"
    );
}

#[test]
fn a_syntax_error_stops_the_stream_once() {
    let good = doc("a", &format!("{SELECTOR}  action: ALLOW\n"));
    let yaml = format!("{good}---\nspec: [oops\n---\n{good}---\n{good}");
    let errors = parse_documents(&yaml).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].document, 1);
    assert_eq!(errors[0].field, "");
    assert!(errors[0].line.is_some());
    assert!(
        errors[0].to_string().starts_with("document 1: "),
        "{}",
        errors[0]
    );
}

#[test]
fn per_document_yaml_errors_do_not_stop_the_stream() {
    let good = doc("a", &format!("{SELECTOR}  action: ALLOW\n"));
    let yaml = format!(
        "kind: x\nkind: y\n---\n{good}---\nk: 1\nk: 2\n---\n{}",
        good.replace("name: a", "name: Z")
    );
    let errors = parse_documents(&yaml).unwrap_err();
    let docs: Vec<usize> = errors.iter().map(|e| e.document).collect();
    assert_eq!(docs, [0, 2, 3], "{errors:#?}");
    assert!(
        errors[0].reason.contains("duplicate entry"),
        "{}",
        errors[0]
    );
}

#[test]
fn rules_default_to_empty_and_sources_are_exclusive() {
    let policies = parse_documents(&doc("p", &format!("{SELECTOR}  action: ALLOW\n"))).unwrap();
    assert_eq!(policies[0].rules(), []);
    let policies = parse_documents(&with_rule(
        "{from: [{unauthenticated: true}], to: {paths: [/healthz]}}",
    ))
    .unwrap();
    assert_eq!(
        policies[0].rules()[0].from,
        [SourceMatcher::Unauthenticated { cidrs: vec![] }]
    );
}

#[test]
fn yaml_that_makes_the_parser_panic_is_refused_not_a_crash() {
    // serde_yaml_ng panics on an alias to an undefined anchor inside a sequence
    // (found by fuzz/fuzz_targets/policy_yaml.rs).
    for yaml in ["[\n\n*4]", "[*nope]", "- a\n- *nope\n"] {
        let errors = parse_documents(yaml).unwrap_err();
        assert!(!errors.is_empty(), "{yaml:?}");
    }
    // Valid documents still parse after a refused one.
    assert!(parse_documents(&doc("p", &format!("{SELECTOR}  action: ALLOW\n"))).is_ok());
}
