//! Credentials as PEM files, for TLS tools that are not ours (`openssl s_client`,
//! `gnutls-cli`): a certificate chain and its key obtained from a real control plane.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferrule_tls::Credentials;

use crate::ControlPlane;
use crate::pki::{certify_with_token, credentials, csr, handle_for, identity_client};

/// PEM-encodes `der` under `label` (e.g. `CERTIFICATE`).
pub fn encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An X.509-SVID from a control plane, as PEM files and as [`Credentials`].
pub struct PemIdentity {
    /// The same credentials, for Rust TLS servers and clients.
    pub creds: Credentials,
    /// Leaf then intermediates.
    pub cert_file: PathBuf,
    /// PKCS#8 private key.
    pub key_file: PathBuf,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

/// Obtains an SVID for `spiffe_id` through a fresh join token and writes
/// `<dir>/<name>.crt` and `<dir>/<name>.key`.
pub async fn obtain_pem(
    cp: &ControlPlane,
    spiffe_id: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<PemIdentity> {
    let token = cp.create_token(spiffe_id, 1, "5m")?;
    let handle = handle_for(cp, None)?;
    let mut client = identity_client(cp, &handle).await?;
    let (key, der) = csr(&[], false)?;
    let resp = certify_with_token(&mut client, der, &token, "").await?;
    let creds = credentials(&resp, &key)?;
    let mut chain = encode("CERTIFICATE", &resp.leaf_der);
    for i in &resp.intermediates_der {
        chain.push_str(&encode("CERTIFICATE", i));
    }
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, chain)?;
    std::fs::write(&key_file, key.serialize_pem())?;
    Ok(PemIdentity {
        not_after: creds.not_after(),
        creds,
        cert_file,
        key_file,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let pem = super::encode("X", input.as_bytes());
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            assert_eq!(body, b64, "{input:?}");
        }
    }
}
