//! External-issuer mode: sign with an intermediate managed elsewhere (an offline root,
//! cert-manager, Vault, ...), loaded from PEM files and reloaded when they change.
//!
//! Files:
//! - **chain**: the issuer certificate first, then any further intermediates, optionally
//!   ending with the root;
//! - **key**: the issuer's private key (PKCS#8, SEC1 or PKCS#1 PEM), mode `0600` or stricter;
//! - **bundle** (optional): the trust anchors (roots) to distribute. Default: the last
//!   certificate of the chain.
//!
//! Loading validates everything before anything is swapped in: the key matches the issuer
//! certificate, the issuer is a CA, every chain certificate is currently valid and signed by
//! the next, and the top of the chain is (or is signed by) a bundle root. A failed reload
//! keeps serving with the previous issuer.
//!
//! Change detection polls `(inode, mtime, size)` of the three paths, following symlinks, so
//! Kubernetes' atomic secret updates (a `..data` symlink swap) are seen.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::authority::fingerprint;
use super::sign::{Signer, SignerError};
use crate::store::{PermissionError, check_private_file};

/// Paths of an externally managed issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExternalIssuerPaths {
    /// PEM certificate chain: issuer first, then up towards the root.
    pub(crate) cert_chain: PathBuf,
    /// PEM private key of the issuer (mode `0600` or stricter).
    pub(crate) key: PathBuf,
    /// PEM trust anchors; `None` means "the last certificate of the chain".
    pub(crate) bundle: Option<PathBuf>,
}

/// Why external issuer files were rejected.
#[derive(Debug, thiserror::Error)]
pub enum ExternalIssuerError {
    /// The key file is readable or writable by group or others (or missing).
    #[error("issuer key file: {0}")]
    KeyPermission(#[from] PermissionError),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate in a file does not parse.
    #[error("{path}: certificate #{index} does not parse: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// 0-based position in the file.
        index: usize,
        /// Parser message.
        reason: String,
    },
    /// A certificate of the chain is expired or not yet valid.
    #[error("certificate {subject} is not valid now (valid {not_before} to {not_after})")]
    NotValidNow {
        /// Its subject.
        subject: String,
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity.
        not_after: OffsetDateTime,
    },
    /// Chain certificate `index` is not signed by certificate `index + 1`.
    #[error("chain certificate #{index} ({subject}) is not signed by the next certificate")]
    BrokenChain {
        /// 0-based position in the chain file.
        index: usize,
        /// Its subject.
        subject: String,
    },
    /// The top of the chain is neither a bundle root nor signed by one.
    #[error("the chain's top certificate ({subject}) does not chain to any root of the bundle")]
    NotAnchored {
        /// Subject of the chain's last certificate.
        subject: String,
    },
    /// The issuer certificate and key are unusable (key mismatch, not a CA, ...).
    #[error("issuer: {0}")]
    Issuer(#[from] SignerError),
}

/// `(device, inode, mtime seconds, mtime nanoseconds, size)` of one file.
type FileStamp = (u64, u64, i64, i64, u64);

/// Identity of the files' current versions; any difference means "reload".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilesStamp(Vec<Option<FileStamp>>);

/// Stamps the files of `paths` (a missing file stamps as `None`).
pub(crate) fn stamp(paths: &ExternalIssuerPaths) -> FilesStamp {
    let one = |p: &Path| {
        fs::metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    };
    let mut v = vec![one(&paths.cert_chain), one(&paths.key)];
    if let Some(b) = &paths.bundle {
        v.push(one(b));
    }
    FilesStamp(v)
}

/// A validated external issuer.
pub(crate) struct LoadedExternal {
    pub signer: Signer,
    /// The trust anchors to distribute.
    pub roots: Vec<CertificateDer<'static>>,
    /// The root the chain anchors to (for status).
    pub anchor: CertificateDer<'static>,
    /// Stamp of the files as they were before reading them.
    pub stamp: FilesStamp,
}

fn read(path: &Path) -> Result<Vec<u8>, ExternalIssuerError> {
    fs::read(path).map_err(|source| ExternalIssuerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ExternalIssuerError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ExternalIssuerError::Pem {
            path: path.to_path_buf(),
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ExternalIssuerError::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE blocks".into(),
        });
    }
    for (index, c) in certs.iter().enumerate() {
        X509Certificate::from_der(c).map_err(|e| ExternalIssuerError::Certificate {
            path: path.to_path_buf(),
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    // Only called on certificates `read_certs` already parsed.
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .expect("certificate parsed before")
}

/// Loads and validates the external issuer at `now`.
pub(crate) fn load(
    paths: &ExternalIssuerPaths,
    now: SystemTime,
) -> Result<LoadedExternal, ExternalIssuerError> {
    let stamp = stamp(paths);
    check_private_file(&paths.key)?;
    let chain = read_certs(&paths.cert_chain)?;
    let roots = match &paths.bundle {
        Some(b) => read_certs(b)?,
        None => vec![chain.last().expect("chain is non-empty").clone()],
    };
    let mut key_pem = read(&paths.key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem);
    key_pem.fill(0);
    let key_der = key_der.map_err(|e| ExternalIssuerError::Pem {
        path: paths.key.clone(),
        reason: format!("no usable private key: {e}"),
    })?;
    let key = KeyPair::try_from(&key_der).map_err(|e| ExternalIssuerError::Pem {
        path: paths.key.clone(),
        reason: format!("unsupported private key: {e}"),
    })?;

    let now = OffsetDateTime::from(now);
    let parsed: Vec<X509Certificate<'_>> = chain.iter().map(|c| parse(c)).collect();
    let mut chain_not_after = time::PrimitiveDateTime::MAX.assume_utc();
    for (index, cert) in parsed.iter().enumerate() {
        let validity = cert.validity();
        let (nb, na) = (
            validity.not_before.to_datetime(),
            validity.not_after.to_datetime(),
        );
        if now < nb || now >= na {
            return Err(ExternalIssuerError::NotValidNow {
                subject: cert.subject().to_string(),
                not_before: nb,
                not_after: na,
            });
        }
        chain_not_after = chain_not_after.min(na);
        if let Some(next) = parsed.get(index + 1)
            && cert.verify_signature(Some(next.public_key())).is_err()
        {
            return Err(ExternalIssuerError::BrokenChain {
                index,
                subject: cert.subject().to_string(),
            });
        }
    }

    let top_der = chain.last().expect("chain is non-empty");
    let top = parsed.last().expect("chain is non-empty");
    let anchor = roots
        .iter()
        .find(|r| r.as_ref() == top_der.as_ref())
        .or_else(|| {
            roots.iter().find(|r| {
                X509Certificate::from_der(r).is_ok_and(|(_, root)| {
                    root.subject().as_raw() == top.issuer().as_raw()
                        && top.verify_signature(Some(root.public_key())).is_ok()
                })
            })
        })
        .cloned()
        .ok_or_else(|| ExternalIssuerError::NotAnchored {
            subject: top.subject().to_string(),
        })?;
    chain_not_after = chain_not_after.min(parse(&anchor).validity().not_after.to_datetime());

    // Send everything above the issuer except trust anchors.
    let further: Vec<CertificateDer<'static>> = chain[1..]
        .iter()
        .filter(|c| !roots.iter().any(|r| r.as_ref() == c.as_ref()))
        .cloned()
        .collect();
    let authority_id = format!("ext-{}", &fingerprint(&chain[0])[..8]);
    let signer = Signer::new(
        authority_id,
        chain[0].clone(),
        key,
        further,
        chain_not_after,
    )?;
    Ok(LoadedExternal {
        signer,
        roots,
        anchor,
        stamp,
    })
}
