//! The key-encryption key (KEK) that seals CA private keys in the store.
//!
//! # What it protects, and what it does not
//!
//! With a KEK configured, the root and issuer private keys are stored sealed with
//! AES-256-GCM; without one they are stored as plaintext PKCS#8 in the database (still in a
//! `0600` file inside a `0700` directory).
//!
//! Keep the KEK **apart from the data directory** — a file on another volume (e.g. a
//! Kubernetes secret mounted read-only with `defaultMode: 0400`) or an environment variable.
//! Then a stolen database file, disk snapshot or backup does not reveal the CA keys. It does
//! **not** protect against an attacker who controls the running host or process: they can
//! read the KEK as easily as the control plane does, or simply ask the CA to sign. For that,
//! keep the CA keys in an HSM/KMS and use the external-issuer mode with a short-lived
//! intermediate.
//!
//! # Format at rest
//!
//! `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with a fresh random nonce per seal
//! and the authority id and key role (`root` / `issuer`) as associated data, so a sealed key
//! cannot be moved to another row or role without failing to open.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::store::{PermissionError, check_private_file};

/// Length of a KEK in bytes.
pub const KEK_LEN: usize = 32;

/// Name of the `key_encryption` column value for keys sealed with a [`Kek`].
pub(crate) const SCHEME_AES_256_GCM: &str = "aes-256-gcm";
/// Name of the `key_encryption` column value for plaintext keys.
pub(crate) const SCHEME_NONE: &str = "none";

/// A 256-bit key-encryption key. `Debug` is redacted; the bytes are zeroed on drop.
pub struct Kek {
    key: [u8; KEK_LEN],
}

/// Errors loading a KEK.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    /// The KEK file is readable or writable by group or others (or missing).
    #[error("key-encryption key file: {0}")]
    Permission(#[from] PermissionError),
    /// The KEK file could not be read.
    #[error("cannot read key-encryption key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The environment variable is unset or not valid UTF-8.
    #[error("environment variable {0} is not set (or not UTF-8)")]
    MissingEnv(String),
    /// The content is none of the accepted encodings. The message describes the accepted
    /// forms, never the content.
    #[error(
        "{source_name}: a key-encryption key must be exactly 32 raw bytes, 64 hex characters, \
         or base64 of 32 bytes"
    )]
    BadFormat {
        /// Where the content came from (file path or variable name).
        source_name: String,
    },
}

impl Kek {
    /// Wraps 32 key bytes.
    pub fn from_bytes(key: [u8; KEK_LEN]) -> Self {
        Self { key }
    }

    /// Generates a random KEK (for tests and for `ferrulectl` to print one).
    pub fn generate() -> Self {
        let mut key = [0u8; KEK_LEN];
        aws_lc_rs::rand::fill(&mut key).expect("system random number generator failed");
        Self { key }
    }

    /// Parses KEK content: 32 raw bytes, 64 hex characters, or standard/url-safe base64
    /// (padded or not) of 32 bytes. Surrounding whitespace is ignored for the text forms.
    /// `source_name` only labels errors.
    pub fn parse(content: &[u8], source_name: &str) -> Result<Self, KekError> {
        let bad = || KekError::BadFormat {
            source_name: source_name.to_string(),
        };
        if content.len() == KEK_LEN {
            let mut key = [0u8; KEK_LEN];
            key.copy_from_slice(content);
            return Ok(Self { key });
        }
        let text = std::str::from_utf8(content).map_err(|_| bad())?.trim();
        let mut decoded =
            if text.len() == 2 * KEK_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(text).map_err(|_| bad())?
            } else {
                [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(text).ok())
                    .ok_or_else(bad)?
            };
        let result = <[u8; KEK_LEN]>::try_from(decoded.as_slice())
            .map(|key| Self { key })
            .map_err(|_| bad());
        decoded.fill(0);
        result
    }

    /// Reads a KEK file, which must be `0600` or stricter (see [`Kek::parse`] for formats).
    pub fn from_file(path: &Path) -> Result<Self, KekError> {
        check_private_file(path)?;
        let mut content = std::fs::read(path).map_err(|source| KekError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let result = Self::parse(&content, &path.display().to_string());
        content.fill(0);
        result
    }

    /// Reads a KEK from the environment variable `name` (see [`Kek::parse`] for formats).
    pub fn from_env(name: &str) -> Result<Self, KekError> {
        let value = std::env::var(name).map_err(|_| KekError::MissingEnv(name.to_string()))?;
        Self::parse(value.as_bytes(), name)
    }

    fn aead_key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.key).expect("32-byte AES-256 key"))
    }

    /// Seals `plaintext`, binding it to `aad`.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("system random number generator failed");
        let mut in_out = plaintext.to_vec();
        self.aead_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .expect("AES-GCM sealing of a small buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        out
    }

    /// Opens a blob made by [`Kek::seal`] with the same `aad`. `None` if the KEK is wrong
    /// or the blob was altered.
    pub(crate) fn open(&self, sealed: &[u8], aad: &str) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let len = self
            .aead_key()
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
            .ok()?
            .len();
        in_out.truncate(len);
        Some(in_out)
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        self.key.fill(0);
        // Keep the wipe from being optimised away as a dead store.
        std::hint::black_box(&self.key);
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([redacted])")
    }
}
