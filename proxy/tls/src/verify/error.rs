//! Why a peer certificate was refused, as a value callers can match and label.
//!
//! [`VerifyError::reason`] and [`classify`] give stable snake_case labels for metrics
//! and logs (`handshake_failures_total{reason="unknown_ca"}`). The verifiers turn a
//! [`VerifyError`] into a `rustls::Error` with [`From`], choosing the standard
//! `CertificateError` where one exists so the peer receives a precise TLS alert.

use std::fmt;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError, OtherError};
use spiffe::{SpiffeId, TrustDomain};

/// Which side of a connection a certificate authenticates; selects the required
/// extended key usage (id-kp-clientAuth or id-kp-serverAuth, when the leaf has EKUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// The certificate authenticates a TLS client (a server verifying its peer).
    Client,
    /// The certificate authenticates a TLS server (a client verifying its peer).
    Server,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Client => "client",
            Self::Server => "server",
        })
    }
}

/// A peer certificate was refused. Each variant maps to one stable [`reason`] label.
///
/// [`reason`]: VerifyError::reason
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The chain does not lead to any root of the current trust bundle. This includes
    /// a certificate from another CA carrying one of our SPIFFE IDs, and a chain whose
    /// issuer *names* match a trusted CA but whose signatures do not (a CA regenerated
    /// under the same name, or a tampered certificate). Label `unknown_ca`.
    #[error("certificate is not issued by a CA in the trust bundle")]
    UnknownCa,
    /// A certificate in the chain is past its notAfter. Label `expired`.
    #[error("certificate expired (notAfter {not_after}, now {now}; unix seconds)")]
    Expired {
        /// The certificate's notAfter, in seconds since the Unix epoch.
        not_after: u64,
        /// The verification time, in seconds since the Unix epoch.
        now: u64,
    },
    /// A certificate in the chain is before its notBefore. Label `not_yet_valid`.
    #[error("certificate not valid yet (notBefore {not_before}, now {now}; unix seconds)")]
    NotYetValid {
        /// The certificate's notBefore, in seconds since the Unix epoch.
        not_before: u64,
        /// The verification time, in seconds since the Unix epoch.
        now: u64,
    },
    /// The extended key usage does not allow this use (e.g. a server-only certificate
    /// presented by a client). Label `bad_eku`.
    #[error("extended key usage does not permit {usage} authentication")]
    BadEku {
        /// The use that was required.
        usage: Usage,
    },
    /// The leaf's keyUsage violates the X.509-SVID rules (signs certificates or CRLs,
    /// or lacks digitalSignature). Label `bad_key_usage`.
    #[error("bad key usage: {0}")]
    BadKeyUsage(&'static str),
    /// The leaf is a CA certificate (basicConstraints CA:TRUE). Label
    /// `ca_used_as_end_entity`.
    #[error("a CA certificate was presented as the leaf")]
    CaUsedAsEndEntity,
    /// A chain was found but breaks a path constraint (pathLen, name constraints, an
    /// end-entity used as issuer, path too long). Label `bad_chain`.
    #[error("invalid certificate chain: {0}")]
    BadChain(String),
    /// A signature or key algorithm in the chain is not supported. Label
    /// `unsupported_algorithm`.
    #[error("unsupported signature algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The leaf has no URI SAN, so no SPIFFE ID (e.g. a DNS-only certificate).
    /// Label `no_uri_san`.
    #[error("certificate has no URI SAN (no SPIFFE ID)")]
    NoUriSan,
    /// The leaf has several URI SANs; an SVID has exactly one. Label
    /// `multiple_uri_sans`.
    #[error("certificate has {count} URI SANs; an SVID has exactly one")]
    MultipleUriSans {
        /// How many URI SANs were found.
        count: usize,
    },
    /// The URI SAN is not a valid, canonical SPIFFE ID. Label `invalid_spiffe_id`.
    #[error("URI SAN \"{uri}\" is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI as presented, escaped and truncated for logging.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SPIFFE ID belongs to another trust domain than the bundle's. Label
    /// `foreign_trust_domain`.
    #[error("{id} is not in trust domain {expected}")]
    ForeignTrustDomain {
        /// The peer's SPIFFE ID.
        id: SpiffeId,
        /// The bundle's trust domain.
        expected: TrustDomain,
    },
    /// The certificate is valid but names another workload than the one expected.
    /// Label `identity_mismatch`.
    #[error("peer is {got}, expected {}", ids(.expected))]
    IdentityMismatch {
        /// The acceptable identities.
        expected: Vec<SpiffeId>,
        /// The identity the peer proved.
        got: SpiffeId,
    },
    /// No trust bundle is loaded yet, so nothing can be verified (fail closed).
    /// Label `no_bundle`.
    #[error("no trust bundle loaded")]
    NoBundle,
    /// The peer presented no certificate. Label `no_certificate`.
    #[error("no certificate presented")]
    NoCertificate,
    /// A certificate could not be parsed or is structurally invalid. Label `malformed`.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// Any other webpki failure (revocation and CRL errors, future variants).
    /// Label `other`.
    #[error("certificate verification failed: {0}")]
    Other(String),
}

fn ids(ids: &[SpiffeId]) -> String {
    match ids {
        [one] => one.to_string(),
        many => {
            let list: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("one of [{}]", list.join(", "))
        }
    }
}

impl VerifyError {
    /// A stable snake_case label for metrics and logs (see each variant).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::BadEku { .. } => "bad_eku",
            Self::BadKeyUsage(_) => "bad_key_usage",
            Self::CaUsedAsEndEntity => "ca_used_as_end_entity",
            Self::BadChain(_) => "bad_chain",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::NoUriSan => "no_uri_san",
            Self::MultipleUriSans { .. } => "multiple_uri_sans",
            Self::InvalidSpiffeId { .. } => "invalid_spiffe_id",
            Self::ForeignTrustDomain { .. } => "foreign_trust_domain",
            Self::IdentityMismatch { .. } => "identity_mismatch",
            Self::NoBundle => "no_bundle",
            Self::NoCertificate => "no_certificate",
            Self::Malformed(_) => "malformed",
            Self::Other(_) => "other",
        }
    }

    /// Maps a webpki chain-validation error; `usage` is what the chain was checked for.
    pub(crate) fn from_webpki(e: webpki::Error, usage: Usage) -> Self {
        use webpki::Error as W;
        #[allow(deprecated)] // the context-free variants are still produced by some paths
        match e {
            W::UnknownIssuer => Self::UnknownCa,
            W::CertExpired { time, not_after } => Self::Expired {
                not_after: not_after.as_secs(),
                now: time.as_secs(),
            },
            W::CertNotValidYet { time, not_before } => Self::NotYetValid {
                not_before: not_before.as_secs(),
                now: time.as_secs(),
            },
            W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) | W::EmptyEkuExtension => {
                Self::BadEku { usage }
            }
            W::CaUsedAsEndEntity => Self::CaUsedAsEndEntity,
            W::EndEntityUsedAsCa
            | W::PathLenConstraintViolated
            | W::NameConstraintViolation
            | W::UnsupportedNameType
            | W::MaximumPathDepthExceeded
            | W::MaximumPathBuildCallsExceeded
            | W::MaximumSignatureChecksExceeded
            | W::MaximumNameConstraintComparisonsExceeded
            | W::CertDistrusted => Self::BadChain(e.to_string()),
            // webpki finds issuers by name, then checks the signature. A failure means
            // the certificate was not signed by the trusted CA of that name: most often
            // a different CA reusing the name (e.g. after a CA was regenerated).
            W::InvalidSignatureForPublicKey => Self::UnknownCa,
            W::UnsupportedSignatureAlgorithm
            | W::UnsupportedSignatureAlgorithmContext(_)
            | W::UnsupportedSignatureAlgorithmForPublicKey
            | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                Self::UnsupportedAlgorithm(e.to_string())
            }
            W::BadDer
            | W::BadDerTime
            | W::TrailingData(_)
            | W::InvalidCertValidity
            | W::ExtensionValueInvalid
            | W::MalformedExtensions
            | W::MalformedDnsIdentifier
            | W::MalformedNameConstraint
            | W::InvalidNetworkMaskConstraint
            | W::InvalidSerialNumber
            | W::SignatureAlgorithmMismatch
            | W::UnsupportedCertVersion
            | W::UnsupportedCriticalExtension => Self::Malformed(e.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<VerifyError> for rustls::Error {
    /// Uses the standard `CertificateError` where one fits (so the peer gets the
    /// matching alert: unknown_ca, certificate_expired, unsupported_certificate); SPIFFE-specific failures travel as
    /// `CertificateError::Other` carrying the [`VerifyError`] (alert
    /// certificate_unknown), recoverable with [`verify_error_of`].
    fn from(e: VerifyError) -> Self {
        let ce = match e {
            VerifyError::UnknownCa => CertificateError::UnknownIssuer,
            VerifyError::Expired { not_after, now } => CertificateError::ExpiredContext {
                time: unix(now),
                not_after: unix(not_after),
            },
            VerifyError::NotYetValid { not_before, now } => CertificateError::NotValidYetContext {
                time: unix(now),
                not_before: unix(not_before),
            },
            VerifyError::BadEku { .. } => CertificateError::InvalidPurpose,
            other => CertificateError::Other(OtherError(Arc::new(other))),
        };
        rustls::Error::InvalidCertificate(ce)
    }
}

fn unix(secs: u64) -> rustls::pki_types::UnixTime {
    rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

/// The [`VerifyError`] inside a handshake error, when a Ferrule verifier produced it
/// as `CertificateError::Other`. Failures with a standard rustls equivalent
/// (unknown CA, expiry, bad EKU) are not wrapped: use [`classify`] for
/// a label that covers every case.
pub fn verify_error_of(err: &rustls::Error) -> Option<&VerifyError> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<VerifyError>()
        }
        _ => None,
    }
}

/// A stable snake_case label for a failed handshake, for metrics and logs.
///
/// * Our verifier refused the peer: the [`VerifyError::reason`] label
///   (`unknown_ca`, `expired`, `identity_mismatch`, ...).
/// * The peer's handshake signature (CertificateVerify) is wrong: `bad_signature`.
/// * The peer refused us and told us why with an alert: `remote_unknown_ca`,
///   `remote_expired`, `remote_certificate_required`, `remote_bad_certificate`,
///   `remote_access_denied` (e.g. a server that has no certificate yet), or
///   `remote_protocol` for any other alert.
/// * The peer presented no certificate where one is required: `no_certificate`.
/// * We have no certificate to present as a server: `no_local_certificate`.
/// * Version, suite, group or message-level incompatibility: `protocol`.
/// * Anything else: `other`.
pub fn classify(err: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(ce) => match ce {
            CertificateError::Other(OtherError(inner)) => inner
                .downcast_ref::<VerifyError>()
                .map_or("bad_certificate", VerifyError::reason),
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::BadSignature => "bad_signature",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "bad_eku"
            }
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "unsupported_algorithm"
            }
            CertificateError::BadEncoding => "malformed",
            _ => "bad_certificate",
        },
        E::NoCertificatesPresented => "no_certificate",
        E::AlertReceived(alert) => match alert {
            AlertDescription::UnknownCA => "remote_unknown_ca",
            AlertDescription::CertificateExpired => "remote_expired",
            AlertDescription::CertificateRequired => "remote_certificate_required",
            AlertDescription::AccessDenied => "remote_access_denied",
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::DecryptError => "remote_bad_certificate",
            _ => "remote_protocol",
        },
        // rustls reports "our resolver returned no certificate" only as this message.
        E::General(msg) if msg == "no server certificate chain resolved" => "no_local_certificate",
        E::PeerIncompatible(_)
        | E::PeerMisbehaved(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::InvalidMessage(_)
        | E::NoApplicationProtocol
        | E::DecryptError
        | E::PeerSentOversizedRecord => "protocol",
        _ => "other",
    }
}

/// [`classify`] for the `io::Error` that tokio-rustls (and `rustls::Stream`) return:
/// `"io"` when no rustls error is inside (connection reset, timeout, ...).
pub fn classify_io(err: &std::io::Error) -> &'static str {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or("io", classify)
}

#[cfg(test)]
mod tests {
    use rustls::{Error, PeerIncompatible};

    use super::*;

    #[test]
    fn classify_non_certificate_errors() {
        assert_eq!(classify(&Error::NoCertificatesPresented), "no_certificate");
        assert_eq!(
            classify(&Error::PeerIncompatible(
                PeerIncompatible::Tls13RequiredForQuic
            )),
            "protocol"
        );
        assert_eq!(
            classify(&Error::AlertReceived(AlertDescription::HandshakeFailure)),
            "remote_protocol"
        );
        assert_eq!(
            classify(&Error::InvalidCertificate(CertificateError::BadSignature)),
            "bad_signature"
        );
        assert_eq!(classify(&Error::FailedToGetRandomBytes), "other");
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, Error::DecryptError);
        assert_eq!(classify_io(&io), "protocol");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify_io(&reset), "io");
    }

    #[test]
    fn spiffe_errors_round_trip_through_rustls() {
        let e = VerifyError::NoUriSan;
        let rustls_err = rustls::Error::from(e.clone());
        assert_eq!(verify_error_of(&rustls_err), Some(&e));
        assert_eq!(classify(&rustls_err), "no_uri_san");
        // Standard failures become standard rustls errors (precise alerts).
        let unknown = rustls::Error::from(VerifyError::UnknownCa);
        assert_eq!(
            unknown,
            Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
        assert_eq!(classify(&unknown), "unknown_ca");
    }
}
