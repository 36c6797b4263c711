//! The identity API's `Certify`, the one RPC an unauthenticated caller reaches: prost
//! decodes the request, then the real `IdentityApi` validates it, attests the caller
//! (join token, or renewal with the caller's certificate) and has the CA sign.
//!
//! Input: a flags byte (bit 0: the request arrives with connection info, as over the
//! network; bit 1: and with a valid client certificate for `TOKEN_ID`, i.e. a renewal),
//! then a protobuf `CertifyRequest`. A join token `@token` / `@other` is replaced by a
//! live token for `TOKEN_ID` / `OTHER_TOKEN_ID`, so the fuzzer reaches signing.
//!
//! Invariants: an issued certificate is for the attested identity (the token's, or the
//! renewing certificate's), never for one the request names in its CSR, and agrees
//! with `expected_spiffe_id` when one is given; a join token is spent exactly when a
//! certificate is issued with it (a bad request costs nothing).
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrule_control_plane::identity_api::IdentityApi;
use ferrule_control_plane::metrics::Metrics;
use ferrule_control_plane::server::tls_listener::PeerInfo;
use ferrule_fuzz::cp::{
    OTHER_TOKEN_ID, OTHER_TOKEN_PLACEHOLDER, TOKEN_ID, TOKEN_PLACEHOLDER, control_plane,
    live_token, uses_left,
};
use ferrule_proto::identity::v1 as pb;
use ferrule_proto::identity::v1::identity_server::Identity;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rustls_pki_types::CertificateDer;
use spiffe::SpiffeId;

struct Fixture {
    api: IdentityApi,
    rt: tokio::runtime::Runtime,
    /// A valid client chain for TOKEN_ID (leaf, issuer).
    renewal_chain: Arc<Vec<CertificateDer<'static>>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let cp = control_plane();
        let api = IdentityApi::new(
            cp.ca.clone(),
            cp.store.clone(),
            Duration::from_secs(3600),
            Metrics::new(),
        );
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("csr");
        let id = SpiffeId::new(TOKEN_ID).expect("id");
        let issued = cp
            .ca
            .sign_svid(csr.der(), &id, Duration::from_secs(86_400))
            .expect("sign");
        let mut chain = vec![issued.leaf_der];
        chain.extend(issued.intermediates);
        Fixture {
            api,
            rt: ferrule_fuzz::runtime(),
            renewal_chain: Arc::new(chain),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let Ok(mut msg) = pb::CertifyRequest::decode(body) else {
        return;
    };
    let f = fixture();
    // Which token (by public id) the request presents, and its uses before the call.
    let mut token = None;
    if let Some(pb::certify_request::Credential::JoinToken(t)) = &mut msg.credential {
        let id = match t.as_str() {
            TOKEN_PLACEHOLDER => Some(TOKEN_ID),
            OTHER_TOKEN_PLACEHOLDER => Some(OTHER_TOKEN_ID),
            _ => None,
        };
        if let Some(id) = id {
            let (secret, tid) = live_token(id);
            *t = secret;
            token = Some((id, uses_left(&tid).expect("live token"), tid));
        }
    }
    let renewal = flags & 3 == 3;
    let mut req = tonic::Request::new(msg.clone());
    if flags & 1 == 1 {
        req.extensions_mut().insert(PeerInfo {
            remote: SocketAddr::from(([127, 0, 0, 1], 40_000)),
            client_chain: renewal.then(|| f.renewal_chain.clone()),
        });
    }
    let result = f.rt.block_on(f.api.certify(req));

    if let Some((_, before, tid)) = &token {
        let after = uses_left(tid).expect("token still listed");
        let spent = before - after;
        assert_eq!(
            spent,
            u32::from(result.is_ok()),
            "token spent {spent} for {:?}",
            result.as_ref().err()
        );
    }
    let Ok(resp) = result else {
        return;
    };
    let resp = resp.into_inner();
    let attested = match (&token, &msg.credential) {
        (Some((id, _, _)), _) => *id,
        (None, None) if renewal => TOKEN_ID,
        _ => panic!("issued without a valid credential: {msg:?}"),
    };
    assert_eq!(resp.spiffe_id, attested);
    if !msg.expected_spiffe_id.is_empty() {
        assert_eq!(
            SpiffeId::new(&msg.expected_spiffe_id).ok(),
            SpiffeId::new(attested).ok()
        );
    }
    let facts = ferrule_fuzz::cert_facts(&resp.leaf_der).expect("issued leaf parses");
    assert_eq!(facts.uris, vec![attested.to_string()]);
    assert_eq!(facts.other_sans, 0);
    let bundle = resp.bundle.expect("bundle in the response");
    assert_eq!(bundle.trust_domain, ferrule_fuzz::TRUST_DOMAIN);
    assert!(!bundle.roots_der.is_empty());
});
