//! The one crypto provider every Ferrule TLS configuration is built from.
//!
//! rustls can fall back to a process-wide default provider; Ferrule never relies on it.
//! Every `ServerConfig` / `ClientConfig` in the workspace is built with
//! `builder_with_provider(ferrule_tls::provider())`, so the suites and groups below are
//! the complete list of what a Ferrule endpoint will negotiate, whatever else is linked in.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite, kx_group};

/// Ferrule's crypto provider: aws-lc-rs restricted to Ferrule's suites and groups.
///
/// * TLS 1.3 suites: `TLS13_AES_256_GCM_SHA384`, `TLS13_CHACHA20_POLY1305_SHA256`
///   (AES-128 is left out: both remaining AEADs have 256-bit keys, and ChaCha20 covers
///   CPUs without AES instructions).
/// * TLS 1.2 suites: `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`,
///   `TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256`. Ferrule's certificates are ECDSA,
///   so the `ECDHE_RSA` suites could never be used by a Ferrule server and would only
///   widen what a client accepts.
/// * Key exchange groups, in preference order: `X25519MLKEM768` (hybrid post-quantum),
///   `X25519`, `SECP256R1`.
/// * Signature verification and key loading: aws-lc-rs defaults.
///
/// Built once and shared; cloning the returned `Arc` is cheap.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                ],
                kx_groups: vec![
                    kx_group::X25519MLKEM768,
                    kx_group::X25519,
                    kx_group::SECP256R1,
                ],
                ..aws_lc_rs::default_provider()
            })
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use rustls::{CipherSuite, NamedGroup};

    use super::*;

    #[test]
    fn suites_and_groups_are_exactly_the_policy() {
        let p = provider();
        let suites: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
        let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                NamedGroup::X25519MLKEM768,
                NamedGroup::X25519,
                NamedGroup::secp256r1
            ]
        );
        assert!(Arc::ptr_eq(&p, &provider()), "built once");
    }
}
