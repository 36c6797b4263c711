//! HTTP path normalisation (`ferrule_policy::normalize_path`) and the path rules built
//! on it: every L7 authorization decision matches the normalised path, and the
//! application receives exactly that path.
//!
//! Invariants, for a path that normalises to `n`:
//! * `n` is a fixed point (`normalize_path(n) == n`), starts with `/`, is ASCII, and
//!   has no query, fragment, `;`, backslash, control character, empty / `.` / `..`
//!   segment, encoded slash, backslash, `;` or control character, encoded unreserved
//!   character, or lower-case escape;
//! * a query never changes the result;
//! * a rule naming `n` (or any whole-segment prefix of it, `/a/*`) matches it, and DENY
//!   rules (matched ignoring case) also match it upper-cased;
//! * end to end through `PolicySet::evaluate`: with `DENY /admin, /admin/*` in force, a
//!   request is denied exactly when its path is refused or normalises to `/admin` or
//!   below it (in any case), and allowed otherwise.
#![no_main]

use std::sync::OnceLock;

use ferrule_policy::{
    HttpRequest, MeshDefault, PathPattern, PolicySet, Request, Source, normalize_path,
    parse_documents,
};
use libfuzzer_sys::fuzz_target;
use spiffe::SpiffeId;

const DENY_ADMIN: &str = "
apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  selector: {spiffeId: 'spiffe://fuzz.test/*'}
  action: DENY
  rules:
    - to: {paths: [/admin, /admin/*]}
";

fn set() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        PolicySet::compile(
            parse_documents(DENY_ADMIN).expect("policy"),
            MeshDefault::AllowAll,
        )
    })
}

fn check_normal_form(n: &str) {
    assert!(n.starts_with('/') && n.is_ascii(), "{n:?}");
    for bad in ["?", "#", ";", "\\", "//"] {
        assert!(!n.contains(bad), "{n:?} contains {bad:?}");
    }
    assert!(!n.bytes().any(|b| b.is_ascii_control()), "{n:?}");
    let body = n.strip_suffix('/').filter(|b| !b.is_empty()).unwrap_or(n);
    if body != "/" {
        for seg in body[1..].split('/') {
            assert!(
                !seg.is_empty() && seg != "." && seg != "..",
                "segment {seg:?} in {n:?}"
            );
        }
    }
    let b = n.as_bytes();
    for (i, _) in n.match_indices('%') {
        let hex = b.get(i + 1..i + 3).expect("two hex digits after %");
        assert!(
            hex.iter()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
            "escape {:?} in {n:?}",
            String::from_utf8_lossy(hex)
        );
        let v = u8::from_str_radix(std::str::from_utf8(hex).expect("ascii"), 16).expect("hex");
        assert!(
            !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
            "encoded unreserved {v:#x} in {n:?}"
        );
        assert!(
            !(v < 0x20 || v == 0x7f || v == b'/' || v == b'\\' || v == b';'),
            "escape {v:#x} kept in {n:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let result = normalize_path(raw);
    if !raw.contains('#') {
        let (path, _) = raw.split_once('?').unwrap_or((raw, ""));
        assert_eq!(
            normalize_path(&format!("{path}?q=%2F/../x")),
            result,
            "query changed it"
        );
    }

    let web = SpiffeId::new("spiffe://fuzz.test/ns/web/sa/web").expect("id");
    let api = SpiffeId::new("spiffe://fuzz.test/ns/prod/sa/api").expect("id");
    let decision = set().evaluate(&Request {
        source: Source::Authenticated(&web),
        destination: &api,
        port: 8080,
        http: Some(HttpRequest {
            method: "GET",
            path: raw,
        }),
    });
    let _ = decision.explain();

    let Ok(n) = result else {
        assert!(!decision.allow, "refused path {raw:?} allowed");
        assert_eq!(decision.reason.as_str(), "invalid_path");
        return;
    };
    check_normal_form(&n);
    assert_eq!(
        normalize_path(&n).as_deref(),
        Ok(n.as_str()),
        "not idempotent"
    );

    let lower = n.to_ascii_lowercase();
    let admin = lower == "/admin" || lower.starts_with("/admin/");
    assert_eq!(
        decision.allow,
        !admin,
        "{raw:?} -> {n:?}: {}",
        decision.explain()
    );

    // Rules written as the path itself, or as a whole-segment prefix of it, match it.
    let trimmed = if n.len() > 1 {
        n.trim_end_matches('/')
    } else {
        n.as_str()
    };
    if !trimmed.contains('*') {
        let exact = PathPattern::parse(trimmed).expect("a normal path is a valid rule");
        assert!(exact.matches(&n), "{trimmed} does not match {n}");
        assert!(exact.matches_ignore_case(&n.to_ascii_uppercase()));
        for (i, _) in trimmed.match_indices('/') {
            let prefix = format!("{}/*", &trimmed[..i]);
            let p = PathPattern::parse(&prefix).expect("prefix rule");
            assert!(p.matches(&n), "{prefix} does not match {n}");
        }
    }
});
