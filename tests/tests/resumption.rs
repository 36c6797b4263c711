//! TLS session resumption never outlives the trust bundle it was verified under (Envoy
//! CVE-2022-21654: a resumed session skipped certificate validation after the trust
//! configuration changed, so a revoked peer got back in).
//!
//! A rustls client that caches sessions (TLS 1.3 tickets; TLS 1.2 session IDs and
//! tickets) talks to api's real inbound listener with web's SVID, then the control plane
//! rotates its root and retires the old one (`ca retire --force`): web's certificate no
//! longer chains to the bundle. Whatever resumption the proxy supports (none today, see
//! `proxy/tls/src/lib.rs`), the next attempt with the cached session must get a full
//! handshake that refuses the old certificate, and a client with a new certificate must
//! not resume a session from the old bundle generation either. The client trusts both
//! roots throughout, so every refusal here comes from the proxy re-validating.
//!
//! The same guard runs through the proxy pair: after the rotation neither proxy's
//! certificate chains to the bundle, so a mesh connection (pooled or not) that was
//! verified before it must not carry new application connections.

use std::sync::Arc;
use std::time::Duration;

use ferrule_tests::apps::{Behaviour, echo_roundtrip};
use ferrule_tests::explicit::{API, Mesh, WEB, mesh};
use ferrule_tests::mtls::{ClientCert, attempt, client_config, inbound_refusals};
use ferrule_tests::pki::{handle_for, obtain};
use ferrule_tests::process::wait_for;
use ferrule_tests::{ControlPlane, Proxy};
use ferrule_tls::{Credentials, IdentityHandle, TrustBundle, TrustDomain};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::{ClientConfig, HandshakeKind, SupportedProtocolVersion};

fn unknown_ca_refusals(p: &Proxy) -> f64 {
    inbound_refusals(p, "unknown_ca")
}

fn bundle_roots(p: &Proxy) -> Option<u64> {
    p.identity().ok()?["bundle_roots"].as_u64()
}

/// Prepares and activates a new authority, then force-retires the old one: every
/// certificate issued so far stops chaining to the bundle. Waits until both proxies
/// hold the one-root bundle.
fn rotate_and_retire(cp: &ControlPlane, proxies: [&Proxy; 2]) {
    let status: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["ca", "status", "-o", "json"]).unwrap()).unwrap();
    let old = status["authorities"][0]["id"].as_str().unwrap().to_string();
    let prepared: serde_json::Value =
        serde_json::from_str(&cp.ctl_ok(&["ca", "prepare", "-o", "json"]).unwrap()).unwrap();
    let new = prepared["id"].as_str().unwrap().to_string();
    for p in proxies {
        wait_for(Duration::from_secs(15), || {
            (bundle_roots(p)? == 2).then_some(())
        })
        .unwrap_or_else(|| panic!("new root did not reach a proxy: {}", p.log()));
    }
    cp.ctl_ok(&["ca", "activate", &new]).unwrap();
    cp.ctl_ok(&["ca", "retire", &old, "--force"]).unwrap();
    for p in proxies {
        wait_for(Duration::from_secs(15), || {
            (bundle_roots(p)? == 1).then_some(())
        })
        .unwrap_or_else(|| panic!("old root not withdrawn from a proxy: {}", p.log()));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One caching client: its configuration (kept for the whole test, since rustls only
/// offers a session to the configuration that made it) and its swappable certificate.
struct CachingClient {
    name: String,
    cfg: Arc<ClientConfig>,
    cert: Arc<ClientCert>,
}

fn caching_client(
    name: &str,
    handle: &IdentityHandle,
    creds: &Credentials,
    version: &'static SupportedProtocolVersion,
) -> CachingClient {
    let cert = ClientCert::new(creds);
    let store: Arc<dyn ClientSessionStore> = Arc::new(ClientSessionMemoryCache::new(64));
    let cfg = client_config(handle, API, cert.clone(), version, Resumption::store(store));
    CachingClient {
        name: name.to_string(),
        cfg,
        cert,
    }
}

#[test]
fn resumption_never_skips_validation_after_the_trust_bundle_changes() {
    let m: Mesh = mesh(Behaviour::Echo, "");
    let rt = rt();
    let td = TrustDomain::new(&m.cp.opts.trust_domain).unwrap();
    let old_bundle_pem = std::fs::read(m.cp.bundle_file()).unwrap();
    let handle = handle_for(&m.cp, None).unwrap();
    let old_creds = rt.block_on(obtain(&m.cp, WEB)).unwrap();
    // Per protocol version: one client to come back with its old certificate, one to
    // come back with a new one. Each has its own session cache.
    let mut stale = Vec::new();
    let mut renewed = Vec::new();
    for (name, v) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        stale.push(caching_client(name, &handle, &old_creds, v));
        renewed.push(caching_client(name, &handle, &old_creds, v));
    }

    // Before: full handshakes, and whatever resumption the proxy offers, all working.
    for c in stale.iter().chain(&renewed) {
        let first = rt.block_on(attempt(c.cfg.clone(), m.api_inbound, b"first"));
        assert_eq!(
            first.echoed,
            b"first",
            "{}: {first:?}\n{}",
            c.name,
            m.api.log()
        );
        assert_eq!(first.kind, Some(HandshakeKind::Full), "{}", c.name);
        let second = rt.block_on(attempt(c.cfg.clone(), m.api_inbound, b"second"));
        assert_eq!(second.echoed, b"second", "{}: {second:?}", c.name);
        eprintln!(
            "{}: second connection before the rotation: {:?}",
            c.name, second.kind
        );
    }
    assert_eq!(
        echo_roundtrip(m.upstream, b"through the pair").unwrap(),
        b"through the pair"
    );

    rotate_and_retire(&m.cp, [&m.api, &m.web]);
    // The client keeps trusting the old root too, so api's (old) certificate still
    // verifies on our side: any refusal below is the proxy's.
    let new_bundle_pem = std::fs::read(m.cp.bundle_file()).unwrap();
    let both = [old_bundle_pem, new_bundle_pem].concat();
    handle.set_bundle(TrustBundle::from_pem(td, &both, u64::MAX).unwrap());
    // (The control plane re-issues its own serving certificate after the activation.)
    let new_creds = wait_for(Duration::from_secs(15), || {
        rt.block_on(obtain(&m.cp, WEB)).ok()
    })
    .expect("a certificate from the new authority");

    for c in &stale {
        // The old credential with its cached sessions: refused, never resumed.
        let before = (m.app.accepted(), unknown_ca_refusals(&m.api));
        let got = rt.block_on(attempt(c.cfg.clone(), m.api_inbound, b"stale"));
        let name = &c.name;
        assert_ne!(
            got.kind,
            Some(HandshakeKind::Resumed),
            "{name}: resumed across a bundle change"
        );
        assert!(
            got.echoed.is_empty(),
            "{name}: old credential got through: {got:?}"
        );
        assert_eq!(
            m.app.accepted(),
            before.0,
            "{name}: the app saw a retired credential"
        );
        let counted = wait_for(Duration::from_secs(5), || {
            (unknown_ca_refusals(&m.api) > before.1).then_some(())
        });
        assert!(
            counted.is_some(),
            "{name}: no full re-validation refusing the old CA\n{}",
            m.api.log()
        );
    }
    for c in &renewed {
        // A new credential must not resume a session of the old bundle generation
        // either; once it has a new session, resuming that one is fine.
        c.cert.set(&new_creds);
        let name = &c.name;
        let fresh = rt.block_on(attempt(c.cfg.clone(), m.api_inbound, b"fresh"));
        assert_eq!(fresh.echoed, b"fresh", "{name}: {fresh:?}\n{}", m.api.log());
        assert_ne!(
            fresh.kind,
            Some(HandshakeKind::Resumed),
            "{name}: resumed an old-bundle session"
        );
        let again = rt.block_on(attempt(c.cfg.clone(), m.api_inbound, b"again"));
        assert_eq!(again.echoed, b"again", "{name}: {again:?}");
        eprintln!(
            "{name}: second connection after the rotation: {:?}",
            again.kind
        );
    }

    // Through the pair: both proxies still hold certificates of the retired authority
    // (renewal needs a certificate that chains), so no mesh connection verified before
    // the rotation may carry a new application connection.
    let serials = (m.web.serial(), m.api.serial());
    let before = m.app.accepted();
    let got = echo_roundtrip(m.upstream, b"after retire").unwrap_or_default();
    if (m.web.serial(), m.api.serial()) == serials {
        assert!(
            got.is_empty(),
            "a pre-rotation mesh connection was reused: {got:?}"
        );
        assert_eq!(
            m.app.accepted(),
            before,
            "the app was reached over an unverifiable hop"
        );
    } else {
        eprintln!("a proxy renewed during the check; pair guard skipped");
    }
}
