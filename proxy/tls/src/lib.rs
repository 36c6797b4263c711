//! Ferrule's TLS policy and SPIFFE peer verification, in one place.
//!
//! The proxy (inbound server, outbound client, control-plane client) and the control
//! plane (identity API server) build every rustls configuration through this crate:
//!
//! * [`provider()`]: the one crypto provider (aws-lc-rs, restricted suites and groups);
//! * [`IdentityHandle`]: the swappable slot for our [`Credentials`] and [`TrustBundle`];
//! * [`server_config`] / [`client_config`]: configurations that read the handle at
//!   each handshake and verify peers by SPIFFE ID;
//! * [`verify_svid`]: the verification rule itself, also usable outside a handshake;
//! * [`classify`] / [`VerifyError::reason`]: stable labels for handshake failures.
//!
//! # Policy, and why
//!
//! **Suites.** TLS 1.3 is preferred and TLS 1.2 is the floor ([`TlsOptions::tls13_only`]
//! drops 1.2). TLS 1.3 offers AES-256-GCM and ChaCha20-Poly1305 only; TLS 1.2 offers the
//! same two AEADs with ECDHE_ECDSA only, because every Ferrule certificate is ECDSA, so
//! RSA suites could never be selected by our servers and would only widen what our
//! clients accept. TLS 1.2 additionally requires the extended master secret.
//!
//! **Groups.** X25519MLKEM768 first, so two Ferrule endpoints agree on a hybrid
//! post-quantum key exchange (recorded traffic stays safe against a future quantum
//! attacker); X25519 and P-256 remain for peers without ML-KEM. Only aws-lc-rs offers
//! the hybrid group, hence the single provider, always passed explicitly through
//! `builder_with_provider` and never installed as the process default.
//!
//! **Resumption.** Disabled on both sides: servers keep no session cache and issue no
//! tickets, clients keep no sessions, and there is no 0-RTT. A resumed session skips
//! certificate verification, so after a trust-bundle change (CA rotation or removal)
//! it could admit a peer the new bundle rejects; this is what Envoy CVE-2022-21654 was.
//! Resumption tied to the bundle version may be added later; a full handshake is cheap
//! next to a sidecar connection's lifetime.
//!
//! **SPIFFE, not DNS.** Peers prove a SPIFFE ID (the single URI SAN of an X.509-SVID)
//! chained to the current trust bundle. Service names, IPs and SNI are not identities
//! in a mesh: the same workload answers many names, and a name is not what authorization
//! policy is written against. Client configurations therefore ignore the `ServerName`
//! passed to `connect` (any placeholder works) and pin the expected SPIFFE ID instead.

mod config;
mod identity;
mod provider;
mod svid;
mod verify;

pub use config::{
    ClientAuth, ConfigError, TlsOptions, client_config, server_config, server_config_with_verifier,
};
pub use identity::{BundleError, Credentials, CredentialsError, IdentityHandle, TrustBundle};
pub use provider::provider;
pub use spiffe::{SpiffeId, TrustDomain};
pub use verify::{
    SpiffeClientVerifier, SpiffeServerVerifier, Usage, VerifiedPeer, VerifyError, classify,
    classify_io, peer_spiffe_id, verify_error_of, verify_svid,
};
