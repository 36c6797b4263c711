//! Reading the SPIFFE-specific fields of an X.509-SVID leaf.
//!
//! webpki validates the chain but cannot match URI SANs, so the SPIFFE ID (exactly one
//! URI SAN, in canonical form), the leaf's key usage and its validity/serial for
//! display are read here with x509-parser. Both [`crate::Credentials::new`] (our own
//! certificate) and [`crate::verify_svid`] (a peer's) go through these functions, so a
//! certificate we would refuse from a peer is also refused as our own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spiffe::SpiffeId;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::verify::VerifyError;

/// Longest URI we copy into an error message; longer ones are truncated.
const MAX_URI_IN_ERROR: usize = 128;

/// Parses a DER certificate, rejecting trailing bytes.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, VerifyError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(VerifyError::Malformed(
            "trailing data after certificate".into(),
        )),
        Err(e) => Err(VerifyError::Malformed(format!("certificate: {e}"))),
    }
}

/// The SPIFFE ID of an SVID leaf: its one and only URI SAN, which must be a valid
/// SPIFFE ID written in canonical form (lowercase scheme and trust domain).
pub(crate) fn spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, VerifyError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| VerifyError::Malformed(format!("subjectAltName: {e}")))?;
    let mut uris = Vec::new();
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::URI(uri) => uris.push(*uri),
            // An entry x509-parser could not decode might be a URI we cannot see:
            // refuse rather than risk counting "exactly one" wrongly.
            GeneralName::Invalid(..) => {
                return Err(VerifyError::Malformed(
                    "undecodable subjectAltName entry".into(),
                ));
            }
            _ => {}
        }
    }
    let uri = match uris.as_slice() {
        [] => return Err(VerifyError::NoUriSan),
        [one] => *one,
        many => return Err(VerifyError::MultipleUriSans { count: many.len() }),
    };
    let invalid = |reason: String| VerifyError::InvalidSpiffeId {
        uri: printable(uri),
        reason,
    };
    let id = SpiffeId::new(uri).map_err(|e| invalid(e.to_string()))?;
    // `SpiffeId::new` accepts an upper-case scheme or trust domain and lowercases them.
    // Two spellings of one identity invite authorization mistakes, so insist on one.
    if id.to_string() != uri {
        return Err(invalid("not in canonical form".into()));
    }
    Ok(id)
}

/// Checks the leaf's keyUsage per the X.509-SVID spec: when present it must include
/// digitalSignature and must not include keyCertSign or cRLSign. (An absent extension
/// is tolerated; CA:TRUE leaves are rejected by webpki.)
pub(crate) fn check_leaf_key_usage(cert: &X509Certificate<'_>) -> Result<(), VerifyError> {
    let ku = cert
        .key_usage()
        .map_err(|e| VerifyError::Malformed(format!("keyUsage: {e}")))?;
    let Some(ku) = ku else {
        return Ok(());
    };
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(VerifyError::BadKeyUsage(
            "leaf may sign certificates or CRLs",
        ));
    }
    if !ku.value.digital_signature() {
        return Err(VerifyError::BadKeyUsage("leaf lacks digitalSignature"));
    }
    Ok(())
}

/// The certificate's serial number as lowercase hex, without separators or leading
/// zero bytes (so it matches the CA's unsigned serial however DER padded it).
pub(crate) fn serial_hex(cert: &X509Certificate<'_>) -> String {
    let raw = cert.raw_serial();
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Converts an ASN.1 time to `SystemTime` (times before 1970 are supported).
pub(crate) fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    // Unrepresentable only for absurd dates; the epoch reads as long expired, which
    // fails safe for a `not_after`.
    t.unwrap_or(UNIX_EPOCH)
}

/// A bounded, escaped copy of untrusted text for error messages and logs.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_URI_IN_ERROR).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("spiffe://a/b\0c"), "spiffe://a/b\\0c");
        let long = "x".repeat(500);
        assert_eq!(printable(&long).chars().count(), MAX_URI_IN_ERROR + 1);
    }
}
