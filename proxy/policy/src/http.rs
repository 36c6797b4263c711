//! HTTP request matchers of a rule's `to`: [`Method`] and [`PathPattern`].
//!
//! Both are validated when a document is parsed and compared, at evaluation, against a
//! request whose path went through [`normalize_path`](crate::normalize_path) and whose
//! method was checked to be an HTTP token.

use std::fmt;

use crate::path::normalize_path;

/// An HTTP method in a rule: an RFC 9110 token written in upper case (`GET`, `POST`,
/// `M-SEARCH`).
///
/// Documents must spell methods in upper case: `get` is refused at validation, so a
/// policy never silently contains a rule that cannot match what its author meant.
/// At evaluation the *request* method is compared ASCII case-insensitively (as if
/// upper-cased first), so a DENY on `GET` also catches a request sent as `get`; see
/// the crate documentation for why this is the fail-closed reading.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Method(String);

impl Method {
    /// Validates a method as written in a document.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("method is empty".into());
        }
        if !s.bytes().all(is_tchar) {
            return Err(format!("{s:?} is not an HTTP method token"));
        }
        if s.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(format!(
                "method {s:?} must be upper-case: write {:?}",
                s.to_ascii_uppercase()
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The method as written (upper case).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a request method matches, ignoring ASCII case in the request (it is
    /// compared as if upper-cased). The caller checks the request method is a token.
    pub fn matches(&self, request_method: &str) -> bool {
        self.0.eq_ignore_ascii_case(request_method)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is a valid HTTP method token (RFC 9110 §5.6.2), in any case.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A path rule in a rule's `to.paths`.
///
/// Three forms, decided by where `*` appears:
///
/// * **Exact**, no `*`: `/admin` matches the path `/admin`.
/// * **Prefix**, a single trailing `/*` and no other `*`: `/public/*` matches `/public`
///   itself and anything under `/public/` (Istio's and Linkerd's reading), but not
///   `/publicity`. `/*` matches every path.
/// * **Glob**, any other use of `*`: within one segment `*` matches any run of
///   characters except `/` (`/api/v*/users`, `/files/*.json`); a whole segment `**`
///   matches any number of segments, zero included (`/api/**/debug`). In a glob a
///   trailing `/*` is one segment, like everywhere else in it.
///
/// Patterns are compared with the *normalised* request path (see
/// [`normalize_path`](crate::normalize_path)), so they must themselves be in normal
/// form: no query, no `;`, no `//`, no `.`/`..` segments, and escapes only where needed,
/// in upper case (`/a` rather than `/%61`, `/a%3F` rather than `/a%3f`); validation says
/// what to write instead.
///
/// **Trailing slash.** `/admin/` and `/admin` usually name the same resource (servers
/// redirect one to the other), so a trailing slash on the request path is ignored when
/// matching: `/admin` matches `/admin/`. Patterns must not end in `/` (except `/`
/// itself, which matches only the root).
///
/// **Case.** Paths are case-sensitive (RFC 3986), but many applications are not. Rules
/// therefore compare in the direction that fails closed: DENY rules match paths ASCII
/// case-insensitively (a DENY on `/admin` also refuses `/ADMIN`), ALLOW rules match
/// case-sensitively (an ALLOW on `/public/*` does not admit `/PUBLIC/x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exact,
    /// The pattern less its trailing `/*` (empty for `/*`).
    Prefix(String),
    Glob(Vec<GlobSegment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobSegment {
    /// `**`: any number of segments.
    Any,
    /// One segment, possibly with `*` wildcards.
    One(String),
}

impl PathPattern {
    /// Validates a path pattern as written in a document.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("path {s:?} must start with '/'"));
        }
        if s.contains('?') {
            return Err(format!(
                "path {s:?} contains '?': queries are stripped before matching, so a \
                 pattern cannot match one"
            ));
        }
        match normalize_path(s) {
            Err(e) => return Err(format!("path {s:?} can never match: {e}")),
            Ok(normal) if normal != s => {
                let hint = if normal.len() > 1 {
                    normal.trim_end_matches('/')
                } else {
                    &normal
                };
                return Err(format!(
                    "path {s:?} is not in normal form and could never match; write {hint:?}"
                ));
            }
            Ok(_) => {}
        }
        if s.len() > 1 && s.ends_with('/') {
            return Err(format!(
                "path {s:?} ends with '/': a trailing slash is ignored when matching, write {:?}",
                s.trim_end_matches('/')
            ));
        }

        let kind = if !s.contains('*') {
            Kind::Exact
        } else if let Some(base) = s.strip_suffix("/*").filter(|base| !base.contains('*')) {
            Kind::Prefix(base.to_owned())
        } else {
            let mut segments = Vec::new();
            for segment in s[1..].split('/') {
                if segment == "**" {
                    segments.push(GlobSegment::Any);
                } else if segment.contains("**") {
                    return Err(format!(
                        "path {s:?}: '**' must be a whole segment (like /a/**/b)"
                    ));
                } else {
                    segments.push(GlobSegment::One(segment.to_owned()));
                }
            }
            Kind::Glob(segments)
        };
        Ok(Self {
            text: s.to_owned(),
            kind,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a *normalised* path matches, case-sensitively (the ALLOW reading).
    pub fn matches(&self, path: &str) -> bool {
        self.matches_with(path, false)
    }

    /// Whether a *normalised* path matches, ignoring ASCII case (the DENY reading).
    pub fn matches_ignore_case(&self, path: &str) -> bool {
        self.matches_with(path, true)
    }

    fn matches_with(&self, path: &str, ignore_case: bool) -> bool {
        // A trailing slash is insignificant: `/admin/` is matched as `/admin`.
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        let path = path.as_bytes();
        match &self.kind {
            Kind::Exact => bytes_eq(path, self.text.as_bytes(), ignore_case),
            Kind::Prefix(base) => {
                let base = base.as_bytes();
                match path.get(..base.len()) {
                    Some(head) if bytes_eq(head, base, ignore_case) => {
                        path.len() == base.len() || path[base.len()] == b'/'
                    }
                    _ => false,
                }
            }
            Kind::Glob(pattern) => {
                let Some(rest) = path.strip_prefix(b"/") else {
                    return false;
                };
                let segments: Vec<&[u8]> = if rest.is_empty() {
                    Vec::new()
                } else {
                    rest.split(|&b| b == b'/').collect()
                };
                glob_segments(pattern, &segments, ignore_case)
            }
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn bytes_eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Matches path segments against glob segments; `**` backtracks (the classic
/// last-star algorithm, linear in practice).
fn glob_segments(pattern: &[GlobSegment], path: &[&[u8]], ignore_case: bool) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while s < path.len() {
        match pattern.get(p) {
            Some(GlobSegment::Any) => {
                backtrack = Some((p, s));
                p += 1;
                continue;
            }
            Some(GlobSegment::One(one)) if wildcard(one.as_bytes(), path[s], ignore_case) => {
                p += 1;
                s += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((star_p, star_s)) => {
                p = star_p + 1;
                s = star_s + 1;
                backtrack = Some((star_p, star_s + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|g| *g == GlobSegment::Any)
}

/// Matches one segment against a pattern where `*` is any run of bytes.
fn wildcard(pattern: &[u8], text: &[u8], ignore_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            Some(&c) if eq(c, text[t]) => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                backtrack = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests;
