//! Request-path normalisation: the one canonical form that every path rule is matched
//! against, on the proxy and in the control plane's Explain alike.
//!
//! Path rules are only as strong as the agreement between the authorizer and the
//! application about *which resource a path names*. Every mesh has shipped bypasses
//! where the two disagreed: Envoy CVE-2019-9901 (`/public/../admin` matched as
//! `/public/*`), Istio CVE-2021-31920 (`//admin` escaped a rule on `/admin`), Istio
//! CVE-2021-39156 (a `#fragment` hid the real path), Istio CVE-2020-8595 (an exact
//! rule compared against the path *with* its query), Consul CVE-2021-36213 (`%2F`
//! decoded differently by proxy and application) and Consul CVE-2024-10005 (URL-path
//! rules bypassed through encodings). The rule here is therefore: **normalise what is
//! unambiguous, refuse what is not.** A refused path never reaches the matcher; the
//! request is denied with reason `invalid_path` whatever the policies say.
//!
//! [`normalize_path`] takes the request-target path as received (origin form,
//! `/path?query`) and, in this order:
//!
//! 1. **Refuses a fragment**: `#` anywhere (clients never send one; a proxy or
//!    application that sees one may cut the path there).
//! 2. **Strips the query**: everything from the first `?`. Path rules never see it.
//! 3. **Refuses a non-absolute path**: it must start with `/` (the authority form,
//!    absolute form and `*` of `OPTIONS *` are the caller's to reduce to a path).
//! 4. **Refuses ambiguous bytes**: a raw backslash (some servers read it as `/`), a
//!    `;` (matrix parameters: servers such as Tomcat drop `;...` from a segment, so
//!    `/admin;x` reaches `/admin` while matching neither `/admin` nor a DENY on it;
//!    refused rather than interpreted), control characters and NUL, and anything
//!    outside RFC 3986 `pchar` (space, `"`, `<`, `{`, raw non-ASCII, ...).
//! 5. **Checks and canonicalises percent-encoding** (RFC 3986 §6.2.2): every `%` must
//!    start two hex digits; `%2F`/`%5C` (encoded slash and backslash), encoded control
//!    characters (`%00`..`%1F`, `%7F`) and `%3B` (encoded `;`) are refused, because
//!    applications disagree on whether they separate segments or end the string;
//!    encoded *unreserved* characters are decoded (`%61` → `a`, `%7E` → `~`); every
//!    other escape is kept, with its hex upper-cased (`%3f` → `%3F`). Decoding happens
//!    once: `%252F` stays `%252F`.
//! 6. **Refuses encoded dot segments**: a segment that decodes to `.` or `..` but was
//!    written with an escape (`%2E%2E`, `.%2e`) is refused: some applications resolve
//!    it after decoding, some never do.
//! 7. **Merges duplicate slashes** (`//admin` → `/admin`) and **resolves `.` and `..`**
//!    (RFC 3986 §5.2.4); a `..` that would climb above the root is refused.
//!
//! A trailing slash is kept (`/admin/` stays `/admin/`: it can name a different
//! resource, and the proxy should forward exactly the normalised path). Path *rules*
//! treat it as insignificant instead, see [`crate::PathPattern`]. Case is kept too:
//! RFC 3986 paths are case-sensitive; how rules handle `/ADMIN` is described in
//! [`crate::PathPattern`].
//!
//! The output is ASCII, starts with `/`, and is a fixed point:
//! `normalize_path(&normalize_path(p)?) == normalize_path(p)`.

/// Why a request path was refused. Every variant is a reason to deny the request with
/// reason `invalid_path`; none is ever "fixed up" into something that may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/` (this includes the empty path).
    #[error("path does not start with '/'")]
    NotAbsolute,
    /// The request target contains `#`: a fragment is never sent by a correct client.
    #[error("path contains a fragment ('#')")]
    Fragment,
    /// A raw backslash: some servers treat it as a path separator.
    #[error("path contains a backslash")]
    Backslash,
    /// A raw `;` or an encoded one (`%3B`): matrix parameters are refused.
    #[error("path contains ';' (matrix parameters are refused)")]
    Semicolon,
    /// A raw control character (including NUL and DEL).
    #[error("path contains control character 0x{0:02X}")]
    ControlCharacter(u8),
    /// A raw byte that RFC 3986 does not allow in a path (space, `"`, `<`, raw
    /// non-ASCII, ...).
    #[error("path contains byte 0x{0:02X}, which is not allowed in a URI path")]
    InvalidCharacter(u8),
    /// A `%` not followed by two hex digits.
    #[error("path contains an invalid percent-encoding")]
    InvalidPercentEncoding,
    /// `%2F` or `%5C`: an encoded slash or backslash.
    #[error("path contains an encoded slash or backslash (%2F or %5C)")]
    EncodedSlash,
    /// An encoded control character such as `%00`.
    #[error("path contains an encoded control character (%00-%1F or %7F)")]
    EncodedControlCharacter,
    /// A `.` or `..` segment written with percent-encoding, such as `%2E%2E`.
    #[error("path contains a percent-encoded '.' or '..' segment")]
    EncodedDotSegment,
    /// A `..` segment that would climb above the root.
    #[error("path climbs above the root with '..'")]
    AboveRoot,
}

/// Normalises a request-target path for matching, or refuses it.
///
/// See the [module documentation](self) for the exact rule. The caller passes the
/// request-target as received (query included); the result has no query.
///
/// ```
/// use ferrule_policy::{PathError, normalize_path};
///
/// assert_eq!(normalize_path("//public/./a/../%7Euser?x=1").unwrap(), "/public/~user");
/// assert_eq!(normalize_path("/admin%2Fx"), Err(PathError::EncodedSlash));
/// ```
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if raw.contains('#') {
        return Err(PathError::Fragment);
    }
    let path = raw.split_once('?').map_or(raw, |(path, _query)| path);
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };

    // `out` holds "/seg1/seg2" (no trailing slash). Each segment is decoded straight
    // into it, then dropped again if it is empty, `.` or `..`. Segments contain no `/`,
    // so the last one starts at the last `/`. One allocation per call.
    let mut out = String::with_capacity(path.len() + 1);
    let mut trailing_slash = false;
    let mut segments = rest.split('/').peekable();
    while let Some(raw_segment) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push('/');
        let encoded_dot = decode_segment(raw_segment, &mut out)?;
        let kind = match &out[start + 1..] {
            // Empty segments come from `//` (merged) or a trailing `/` (kept).
            "" | "." if !encoded_dot => Segment::Drop,
            ".." if !encoded_dot => Segment::Parent,
            "." | ".." => return Err(PathError::EncodedDotSegment),
            _ => Segment::Keep,
        };
        trailing_slash = false;
        match kind {
            Segment::Keep => {}
            Segment::Drop => {
                out.truncate(start);
                trailing_slash = last;
            }
            Segment::Parent => {
                out.truncate(start);
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
                trailing_slash = last;
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

enum Segment {
    Keep,
    /// Empty or `.`.
    Drop,
    /// `..`.
    Parent,
}

/// Decodes one raw segment onto the end of `out` following steps 4 and 5 of the module
/// rule. Returns whether an encoded `.` was decoded.
fn decode_segment(raw: &str, out: &mut String) -> Result<bool, PathError> {
    let bytes = raw.as_bytes();
    let mut encoded_dot = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            let decoded = hi << 4 | lo;
            match decoded {
                b'/' | b'\\' => return Err(PathError::EncodedSlash),
                b';' => return Err(PathError::Semicolon),
                0x00..=0x1F | 0x7F => return Err(PathError::EncodedControlCharacter),
                _ if is_unreserved(decoded) => {
                    encoded_dot |= decoded == b'.';
                    out.push(char::from(decoded));
                }
                _ => {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(hi)]));
                    out.push(char::from(HEX_UPPER[usize::from(lo)]));
                }
            }
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter(b)),
            _ if is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@' => {
                out.push(char::from(b));
            }
            _ => return Err(PathError::InvalidCharacter(b)),
        }
        i += 1;
    }
    Ok(encoded_dot)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 `unreserved`: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`, less `;` which is refused before this is asked.
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'='
    )
}

#[cfg(test)]
mod tests;
