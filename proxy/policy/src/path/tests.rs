use super::*;

use PathError::*;

/// Every case of the module rule, plus the tricky ones from past mesh CVEs.
/// `Ok(expected)` is the normalised form; `Err(e)` is the refusal.
const CASES: &[(&str, Result<&str, PathError>)] = &[
    // Plain paths are unchanged.
    ("/", Ok("/")),
    ("/admin", Ok("/admin")),
    ("/a/b/c", Ok("/a/b/c")),
    ("/ADMIN", Ok("/ADMIN")),
    ("/admin/", Ok("/admin/")),
    ("/a:b@c!$&'()*+,=", Ok("/a:b@c!$&'()*+,=")),
    ("/-._~", Ok("/-._~")),
    ("/a.b/c..d/...", Ok("/a.b/c..d/...")),
    // Query: stripped (CVE-2020-8595).
    ("/admin?x", Ok("/admin")),
    ("/admin?x=1&y=/..", Ok("/admin")),
    ("/admin?", Ok("/admin")),
    ("/?x", Ok("/")),
    ("/admin?x%00;\\", Ok("/admin")),
    // Fragment: refused anywhere (CVE-2021-39156).
    ("/admin#x", Err(Fragment)),
    ("/admin#", Err(Fragment)),
    ("/admin?x#y", Err(Fragment)),
    ("#/admin", Err(Fragment)),
    // Not absolute.
    ("", Err(NotAbsolute)),
    ("admin", Err(NotAbsolute)),
    ("*", Err(NotAbsolute)),
    ("http://host/admin", Err(NotAbsolute)),
    ("?x", Err(NotAbsolute)),
    ("%2Fadmin", Err(NotAbsolute)),
    // Duplicate slashes: merged (CVE-2021-31920).
    ("//admin", Ok("/admin")),
    ("///admin//x", Ok("/admin/x")),
    ("/admin//", Ok("/admin/")),
    ("//", Ok("/")),
    // Dot segments: resolved (CVE-2019-9901); above root: refused.
    ("/./admin", Ok("/admin")),
    ("/public/../admin", Ok("/admin")),
    ("/public/./../admin/.", Ok("/admin/")),
    ("/a/b/..", Ok("/a/")),
    ("/a/..", Ok("/")),
    ("/a/.", Ok("/a/")),
    ("/.", Ok("/")),
    ("/..", Err(AboveRoot)),
    ("/../admin", Err(AboveRoot)),
    ("/a/../../admin", Err(AboveRoot)),
    ("//..//admin", Err(AboveRoot)),
    // Encoded dot segments: refused; encoded dots elsewhere: decoded.
    ("/public/%2e%2e/admin", Err(EncodedDotSegment)),
    ("/%2E%2E/admin", Err(EncodedDotSegment)),
    ("/%2e%2e/admin", Err(EncodedDotSegment)),
    ("/.%2e/admin", Err(EncodedDotSegment)),
    ("/%2E/admin", Err(EncodedDotSegment)),
    ("/a%2Ejson", Ok("/a.json")),
    ("/%2E%2E%2E", Ok("/...")),
    // Encoded unreserved: decoded (RFC 3986 §6.2.2.2).
    ("/%61dmin", Ok("/admin")),
    ("/%41DMIN", Ok("/ADMIN")),
    ("/%7Euser", Ok("/~user")),
    ("/%7euser", Ok("/~user")),
    ("/%2D%5F%30", Ok("/-_0")),
    // Other escapes: kept, hex upper-cased (RFC 3986 §6.2.2.1); decoded once only.
    ("/a%20b", Ok("/a%20b")),
    ("/a%3fb", Ok("/a%3Fb")),
    ("/a%23b", Ok("/a%23b")),
    ("/caf%c3%a9", Ok("/caf%C3%A9")),
    ("/a%25", Ok("/a%25")),
    ("/a%252F", Ok("/a%252F")),
    ("/a%2a", Ok("/a%2A")),
    // Encoded slash and backslash: refused (Consul CVE-2021-36213).
    ("/admin%2F", Err(EncodedSlash)),
    ("/admin%2f", Err(EncodedSlash)),
    ("/admin%5C", Err(EncodedSlash)),
    ("/admin%5cx", Err(EncodedSlash)),
    ("/public%2F..%2Fadmin", Err(EncodedSlash)),
    // Invalid percent-encoding.
    ("/admin%", Err(InvalidPercentEncoding)),
    ("/admin%2", Err(InvalidPercentEncoding)),
    ("/admin%zz", Err(InvalidPercentEncoding)),
    ("/admin%g1", Err(InvalidPercentEncoding)),
    ("/%%41", Err(InvalidPercentEncoding)),
    // Control characters, raw and encoded.
    ("/admin%00", Err(EncodedControlCharacter)),
    ("/admin%0a", Err(EncodedControlCharacter)),
    ("/admin%1F", Err(EncodedControlCharacter)),
    ("/admin%7f", Err(EncodedControlCharacter)),
    ("/admin\0", Err(ControlCharacter(0))),
    ("/admin\n", Err(ControlCharacter(b'\n'))),
    ("/admin\t", Err(ControlCharacter(b'\t'))),
    ("/admin\x7f", Err(ControlCharacter(0x7f))),
    // Backslash.
    ("\\admin", Err(NotAbsolute)),
    ("\\\\admin", Err(NotAbsolute)),
    ("/\\admin", Err(Backslash)),
    ("/public\\..\\admin", Err(Backslash)),
    // Semicolons (matrix parameters), raw and encoded.
    ("/admin;x=1", Err(Semicolon)),
    ("/admin;", Err(Semicolon)),
    ("/public/..;/admin", Err(Semicolon)),
    ("/admin%3Bx", Err(Semicolon)),
    ("/admin%3b", Err(Semicolon)),
    // Bytes outside pchar.
    ("/a b", Err(InvalidCharacter(b' '))),
    ("/a\"b", Err(InvalidCharacter(b'"'))),
    ("/a<b>", Err(InvalidCharacter(b'<'))),
    ("/a{b}", Err(InvalidCharacter(b'{'))),
    ("/a|b", Err(InvalidCharacter(b'|'))),
    ("/a^b", Err(InvalidCharacter(b'^'))),
    ("/a`b", Err(InvalidCharacter(b'`'))),
    ("/a[b]", Err(InvalidCharacter(b'['))),
    ("/café", Err(InvalidCharacter(0xC3))),
];

#[test]
fn normalisation_table() {
    let mut failures = Vec::new();
    for (input, expected) in CASES {
        let got = normalize_path(input);
        let expected = expected.map(str::to_owned);
        if got != expected {
            failures.push(format!("{input:?}: got {got:?}, want {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn output_is_a_fixed_point() {
    for (input, _) in CASES {
        if let Ok(once) = normalize_path(input) {
            assert_eq!(normalize_path(&once).as_ref(), Ok(&once), "{input:?}");
            assert!(once.starts_with('/') && once.is_ascii(), "{input:?}");
        }
    }
}

#[test]
fn every_single_escape_is_decoded_kept_or_refused() {
    // Exhaustive over all 256 escapes in both hex cases: each is decoded to an
    // unreserved char, kept upper-cased, or refused, never anything else.
    for b in 0..=255u8 {
        for hex in [format!("{b:02X}"), format!("{b:02x}")] {
            let input = format!("/x%{hex}y");
            let got = normalize_path(&input);
            let want = match b {
                b'/' | b'\\' => Err(EncodedSlash),
                b';' => Err(Semicolon),
                0x00..=0x1F | 0x7F => Err(EncodedControlCharacter),
                _ if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                    Ok(format!("/x{}y", char::from(b)))
                }
                _ => Ok(format!("/x%{b:02X}y")),
            };
            assert_eq!(got, want, "{input}");
        }
    }
}

#[test]
fn every_raw_ascii_byte_is_kept_or_refused() {
    for b in 0..=127u8 {
        let input = format!("/x{}y", char::from(b));
        let got = normalize_path(&input);
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b);
        match b {
            b'/' => assert_eq!(got, Ok("/x/y".into())),
            b'?' => assert_eq!(got, Ok("/x".into())),
            b'#' => assert_eq!(got, Err(Fragment)),
            b'%' => assert_eq!(got, Err(InvalidPercentEncoding)),
            b'\\' => assert_eq!(got, Err(Backslash)),
            b';' => assert_eq!(got, Err(Semicolon)),
            0x00..=0x1F | 0x7F => assert_eq!(got, Err(ControlCharacter(b))),
            _ if ok => assert_eq!(got, Ok(input.clone())),
            _ => assert_eq!(got, Err(InvalidCharacter(b)), "{input:?}"),
        }
    }
}

/// A deterministic fuzz pass: paths assembled from the tokens that caused past bypasses
/// never panic, and every accepted one comes out canonical.
#[test]
fn generated_paths_come_out_canonical_or_refused() {
    const TOKENS: &[&str] = &[
        "/", "/", "/", ".", "..", "a", "B", "%2e", "%2E", "%2F", "%2f", "%5C", "%41", "%7e", "%25",
        "%00", "%3B", "%3f", "%", "%g", ";", "?", "#", "\\", "*", " ", "é", "~", ":", "@",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // xorshift64*: fixed seed, so failures reproduce.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for _ in 0..50_000 {
        let len = 1 + (next() % 10) as usize;
        let mut input = String::new();
        for _ in 0..len {
            input.push_str(TOKENS[(next() % TOKENS.len() as u64) as usize]);
        }
        let Ok(out) = normalize_path(&input) else {
            continue;
        };
        assert!(
            out.starts_with('/') && out.is_ascii(),
            "{input:?} -> {out:?}"
        );
        assert!(!out.contains("//"), "{input:?} -> {out:?}");
        for bad in [
            "/./", "/../", "?", "#", ";", "\\", "%2F", "%5C", "%2E", "%3B", "%00",
        ] {
            assert!(!format!("{out}/").contains(bad), "{input:?} -> {out:?}");
        }
        assert!(
            !out.ends_with("/.") && !out.ends_with("/.."),
            "{input:?} -> {out:?}"
        );
        assert_eq!(normalize_path(&out), Ok(out.clone()), "{input:?}");
    }
}
