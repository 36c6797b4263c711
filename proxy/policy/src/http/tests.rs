use super::*;

#[test]
fn methods_validate() {
    for ok in [
        "GET",
        "POST",
        "M-SEARCH",
        "PROPFIND",
        "X_1",
        "!#$%&'*+-.^_`|~",
    ] {
        assert_eq!(Method::parse(ok).unwrap().as_str(), ok);
    }
    let err = Method::parse("get").unwrap_err();
    assert!(
        err.contains("upper-case") && err.contains("\"GET\""),
        "{err}"
    );
    assert!(Method::parse("Get").is_err());
    for bad in ["", "GE T", "GET\n", "GET/", "GÉT", "(GET)", "GET:"] {
        let err = Method::parse(bad).unwrap_err();
        assert!(!err.is_empty(), "{bad:?}");
    }
}

#[test]
fn request_methods_compare_as_upper_case() {
    let get = Method::parse("GET").unwrap();
    assert!(get.matches("GET"));
    assert!(get.matches("get"));
    assert!(get.matches("gEt"));
    assert!(!get.matches("GETX"));
    assert!(!get.matches("POST"));
    assert!(is_token("get") && is_token("M-SEARCH"));
    assert!(!is_token("") && !is_token("G ET") && !is_token("GET\r\n"));
}

/// (pattern, path, matches case-sensitively, matches ignoring case).
const MATCHES: &[(&str, &str, bool, bool)] = &[
    // Exact, with the trailing slash ignored on the request side.
    ("/admin", "/admin", true, true),
    ("/admin", "/admin/", true, true),
    ("/admin", "/ADMIN", false, true),
    ("/admin", "/Admin/", false, true),
    ("/admin", "/admin/x", false, false),
    ("/admin", "/adminx", false, false),
    ("/admin", "/", false, false),
    ("/", "/", true, true),
    ("/", "/a", false, false),
    // Prefix.
    ("/public/*", "/public", true, true),
    ("/public/*", "/public/", true, true),
    ("/public/*", "/public/a", true, true),
    ("/public/*", "/public/a/b/", true, true),
    ("/public/*", "/publicity", false, false),
    ("/public/*", "/pub", false, false),
    ("/public/*", "/PUBLIC/a", false, true),
    ("/public/*", "/", false, false),
    ("/*", "/", true, true),
    ("/*", "/anything/at/all", true, true),
    ("/a/b/*", "/a/b", true, true),
    ("/a/b/*", "/a/bc", false, false),
    // Glob: `*` inside one segment.
    ("/api/v*/users", "/api/v1/users", true, true),
    ("/api/v*/users", "/api/v/users", true, true),
    ("/api/v*/users", "/api/v1/x/users", false, false),
    ("/api/v*/users", "/api/V1/USERS", false, true),
    ("/files/*.json", "/files/a.json", true, true),
    ("/files/*.json", "/files/a.json/", true, true),
    ("/files/*.json", "/files/a.jsonx", false, false),
    ("/files/*.json", "/files/a/b.json", false, false),
    ("/files/*.*", "/files/a.b.c", true, true),
    ("/a/*/c", "/a/b/c", true, true),
    ("/a/*/c", "/a/c", false, false),
    ("/a/*/*", "/a/b/c", true, true),
    ("/a/*/*", "/a/b/c/d", false, false),
    ("/a/*/*", "/a/b", false, false),
    ("/*/x", "/y/x", true, true),
    ("/a*b*c", "/aXXbYYc", true, true),
    ("/a*b*c", "/abcbc", true, true),
    ("/a*b*c", "/acb", false, false),
    // Glob: `**` over segments.
    ("/api/**/debug", "/api/debug", true, true),
    ("/api/**/debug", "/api/x/debug", true, true),
    ("/api/**/debug", "/api/x/y/z/debug", true, true),
    ("/api/**/debug", "/api/x/debug/y", false, false),
    ("/api/**/debug", "/api/debugger", false, false),
    ("/api/**", "/api", true, true),
    ("/api/**", "/api/a/b", true, true),
    ("/api/**", "/apix", false, false),
    ("/**", "/", true, true),
    ("/**", "/a/b", true, true),
    ("/**/admin", "/admin", true, true),
    ("/**/admin", "/x/y/admin", true, true),
    ("/**/admin", "/x/y/admin/z", false, false),
    ("/**/a/**/b", "/x/a/y/a/z/b", true, true),
    ("/**/a/**/b", "/x/a/y/b/c", false, false),
    ("/**/*.php", "/a/b/index.php", true, true),
    ("/**/*.php", "/a/b/index.PHP", false, true),
];

#[test]
fn path_patterns_match() {
    let mut failures = Vec::new();
    for &(pattern, path, sensitive, insensitive) in MATCHES {
        let p = PathPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        if p.matches(path) != sensitive || p.matches_ignore_case(path) != insensitive {
            failures.push(format!(
                "{pattern} vs {path}: got ({}, {}), want ({sensitive}, {insensitive})",
                p.matches(path),
                p.matches_ignore_case(path)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn path_patterns_validate() {
    // (pattern, substring of the reason)
    let bad = [
        ("admin", "must start with '/'"),
        ("", "must start with '/'"),
        ("/admin?x=1", "queries are stripped"),
        ("/admin/", "write \"/admin\""),
        ("/admin//", "write \"/admin\""),
        ("//admin", "write \"/admin\""),
        ("/a/../admin", "write \"/admin\""),
        ("/./admin", "write \"/admin\""),
        ("/%61dmin", "write \"/admin\""),
        ("/a%3f", "write \"/a%3F\""),
        ("/admin;x", "';'"),
        ("/admin#x", "fragment"),
        ("/admin%2F", "encoded slash"),
        ("/..", "above the root"),
        ("/a b", "not allowed"),
        ("/a/**b", "'**' must be a whole segment"),
        ("/a/***", "'**' must be a whole segment"),
    ];
    for (pattern, want) in bad {
        let err = PathPattern::parse(pattern).unwrap_err();
        assert!(err.contains(want), "{pattern:?}: {err}");
    }
    for good in [
        "/", "/admin", "/*", "/**", "/a/*", "/a/**", "/a%20b", "/a*/b", "/~u",
    ] {
        assert_eq!(PathPattern::parse(good).unwrap().as_str(), good);
    }
}

#[test]
fn pattern_forms() {
    assert_eq!(PathPattern::parse("/admin").unwrap().kind, Kind::Exact);
    assert_eq!(
        PathPattern::parse("/public/*").unwrap().kind,
        Kind::Prefix("/public".into())
    );
    assert_eq!(
        PathPattern::parse("/*").unwrap().kind,
        Kind::Prefix("".into())
    );
    assert!(matches!(
        PathPattern::parse("/a/*/b/*").unwrap().kind,
        Kind::Glob(_)
    ));
}
