//! Fixtures shared by Ferrule's fuzz targets (`fuzz_targets/`): a fixed test PKI for the
//! certificate targets, a control plane's CA, store and services in a temporary
//! directory for the control-plane targets, and small independent checks the targets
//! use to state their invariants without trusting the code under test.
//!
//! Every target is its own process, so each fixture is built lazily, once per process.

pub mod cp;
pub mod pki;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The trust domain of every fixture.
pub const TRUST_DOMAIN: &str = "fuzz.test";

/// What an X.509 certificate says about itself, read with x509-parser directly: the
/// oracle the certificate targets compare Ferrule's verdicts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Every URI SAN, in order.
    pub uris: Vec<String>,
    /// Number of SAN entries that are not URIs.
    pub other_sans: usize,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// The raw subjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// notBefore and notAfter, Unix seconds.
    pub validity: (i64, i64),
    /// Whether the subject name is empty.
    pub empty_subject: bool,
}

/// Reads [`CertFacts`] from DER; `None` when x509-parser cannot parse it.
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut uris = Vec::new();
    let mut other_sans = 0;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_string()),
                _ => other_sans += 1,
            }
        }
    }
    Some(CertFacts {
        uris,
        other_sans,
        is_ca: cert.is_ca(),
        spki: cert.public_key().raw.to_vec(),
        validity: (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        ),
        empty_subject: cert.subject().iter().next().is_none(),
    })
}

/// A current-thread tokio runtime with time enabled (and a blocking pool, which the
/// control plane's `spawn_blocking` needs).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Deterministic chunk sizes (1..=max) from `seed`, for targets that split input into
/// reads: the same input always splits the same way, so a crash reproduces.
pub fn chunk_sizes(seed: u8, max: usize) -> impl Iterator<Item = usize> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        1 + (x as usize % max)
    })
}

/// For targets whose code under test catches panics on purpose (`parse_documents` turns
/// a panic inside serde_yaml_ng into an error): libfuzzer-sys's panic hook aborts on any
/// panic, caught or not, so replace it with one that only reports. A panic that escapes
/// the target still fails the run: libfuzzer-sys aborts when its `catch_unwind` sees it.
pub fn allow_caught_panics() {
    std::panic::set_hook(Box::new(|info| eprintln!("panic (caught or not): {info}")));
}
