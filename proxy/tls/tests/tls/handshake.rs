//! Full handshakes between Ferrule configurations (and misbehaving peers) over TCP.

use std::io;
use std::sync::Arc;

use ferrule_tls::{
    ClientAuth, ConfigError, IdentityHandle, TlsOptions, VerifyError, client_config, server_config,
    verify_error_of,
};
use rcgen::ExtendedKeyUsagePurpose as Eku;
use rustls::{CipherSuite, ClientConfig, NamedGroup, ProtocolVersion, ServerConfig};

use crate::harness::{
    EchoServer, Outcome, TLS12_ONLY, bundle_only, connect, raw_client, raw_server, reason, workload,
};
use crate::pki::{LeafSpec, Pki, dns_san, uri_san};

const TD: &str = "example.org";
const SERVER: &str = "ns/default/sa/api";
const CLIENT: &str = "ns/default/sa/web";

fn opts() -> TlsOptions {
    TlsOptions::default()
}

fn server(handle: &IdentityHandle, auth: ClientAuth) -> Arc<ServerConfig> {
    server_config(handle, auth, &opts()).expect("server config")
}

fn client(handle: &IdentityHandle, pki: &Pki, expect: &str) -> Arc<ClientConfig> {
    client_config(handle, vec![pki.id(expect)], &opts()).expect("client config")
}

/// Runs one connection; returns (server result, client result).
async fn run(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (io::Result<Outcome>, io::Result<Outcome>) {
    let mut srv = EchoServer::start(server).await;
    let c = connect(client, srv.addr).await.map(|(_, o)| o);
    let s = srv.next().await;
    (s, c)
}

const ALLOWED_TLS13: [CipherSuite; 2] = [
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

#[tokio::test]
async fn mutual_tls_identifies_both_peers() {
    let pki = Pki::new(TD);
    let s = workload(&pki, SERVER);
    let c = workload(&pki, CLIENT);
    let (srv, cli) = run(server(&s, ClientAuth::Required), client(&c, &pki, SERVER)).await;
    let (srv, cli) = (srv.unwrap(), cli.unwrap());
    assert_eq!(srv.peer, Some(pki.id(CLIENT)));
    assert_eq!(cli.peer, Some(pki.id(SERVER)));
    for side in [&srv, &cli] {
        assert_eq!(side.version, Some(ProtocolVersion::TLSv1_3));
        assert!(ALLOWED_TLS13.contains(&side.suite.unwrap()), "{side:?}");
        assert_eq!(side.group, Some(NamedGroup::X25519MLKEM768));
    }
}

#[tokio::test]
async fn alpn_is_negotiated() {
    let pki = Pki::new(TD);
    let h2 = TlsOptions {
        alpn: vec![b"h2".to_vec()],
        ..Default::default()
    };
    let s = server_config(&workload(&pki, SERVER), ClientAuth::Required, &h2).unwrap();
    let c = client_config(&workload(&pki, CLIENT), vec![pki.id(SERVER)], &h2).unwrap();
    let (srv, cli) = run(s, c).await;
    assert_eq!(srv.unwrap().alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(cli.unwrap().alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn client_refuses_unexpected_server_identity() {
    let pki = Pki::new(TD);
    let (srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Required),
        client(&workload(&pki, CLIENT), &pki, "ns/default/sa/db"),
    )
    .await;
    assert_eq!(reason(&cli), "identity_mismatch");
    let err = cli.unwrap_err();
    let tls = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap();
    match verify_error_of(tls) {
        Some(VerifyError::IdentityMismatch { expected, got }) => {
            assert_eq!(expected, &[pki.id("ns/default/sa/db")]);
            assert_eq!(got, &pki.id(SERVER));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reason(&srv), "remote_bad_certificate");
}

#[tokio::test]
async fn any_of_several_expected_identities_is_accepted() {
    let pki = Pki::new(TD);
    let c = client_config(
        &workload(&pki, CLIENT),
        vec![pki.id("ns/default/sa/db"), pki.id(SERVER)],
        &opts(),
    )
    .unwrap();
    let (srv, cli) = run(server(&workload(&pki, SERVER), ClientAuth::Required), c).await;
    assert_eq!(cli.unwrap().peer, Some(pki.id(SERVER)));
    srv.unwrap();
}

#[test]
fn client_config_needs_an_expected_identity() {
    assert!(matches!(
        client_config(&IdentityHandle::new(), vec![], &opts()),
        Err(ConfigError::NoExpectedIdentity)
    ));
}

#[tokio::test]
async fn server_from_unknown_ca_is_refused() {
    let pki = Pki::new(TD);
    let impostor = Pki::new(TD); // same trust domain name, same SPIFFE ID, other CA
    let s = impostor.svid(SERVER);
    let (srv, cli) = run(
        raw_server(&bundle_only(&impostor), &s),
        client(&workload(&pki, CLIENT), &pki, SERVER),
    )
    .await;
    assert_eq!(reason(&cli), "unknown_ca");
    assert_eq!(reason(&srv), "remote_unknown_ca");
}

#[tokio::test]
async fn client_from_unknown_ca_is_refused() {
    let pki = Pki::new(TD);
    let impostor = Pki::new(TD);
    let c = impostor.svid(CLIENT);
    let (srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Required),
        raw_client(
            &bundle_only(&pki),
            pki.id(SERVER),
            Some(&c),
            TLS13_ONLY_CLIENT,
        ),
    )
    .await;
    assert_eq!(reason(&srv), "unknown_ca");
    // TLS 1.3: the client learns on its first read, via the server's alert.
    assert_eq!(reason(&cli), "remote_unknown_ca");
}

static TLS13_ONLY_CLIENT: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let pki = Pki::new(TD);
    let s = pki.leaf(&LeafSpec::svid(&pki.id(SERVER).to_string()).expired());
    let (srv, cli) = run(
        raw_server(&bundle_only(&pki), &s),
        client(&workload(&pki, CLIENT), &pki, SERVER),
    )
    .await;
    assert_eq!(reason(&cli), "expired");
    assert_eq!(reason(&srv), "remote_expired");
}

#[tokio::test]
async fn not_yet_valid_client_certificate_is_refused() {
    let pki = Pki::new(TD);
    let c = pki.leaf(&LeafSpec::svid(&pki.id(CLIENT).to_string()).not_yet_valid());
    let (srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Required),
        raw_client(
            &bundle_only(&pki),
            pki.id(SERVER),
            Some(&c),
            TLS13_ONLY_CLIENT,
        ),
    )
    .await;
    assert_eq!(reason(&srv), "not_yet_valid");
    assert_eq!(reason(&cli), "remote_expired");
}

#[tokio::test]
async fn client_without_certificate_refused_when_required() {
    let pki = Pki::new(TD);
    let (srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Required),
        client(&bundle_only(&pki), &pki, SERVER),
    )
    .await;
    assert_eq!(reason(&srv), "no_certificate");
    assert_eq!(reason(&cli), "remote_certificate_required");
}

#[tokio::test]
async fn client_without_certificate_accepted_when_optional() {
    let pki = Pki::new(TD);
    let (srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Optional),
        client(&bundle_only(&pki), &pki, SERVER),
    )
    .await;
    assert_eq!(srv.unwrap().peer, None);
    assert_eq!(cli.unwrap().peer, Some(pki.id(SERVER)));
}

#[tokio::test]
async fn optional_client_auth_still_verifies_a_presented_certificate() {
    let pki = Pki::new(TD);
    let impostor = Pki::new(TD);
    let (srv, _cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Optional),
        raw_client(
            &bundle_only(&pki),
            pki.id(SERVER),
            Some(&impostor.svid(CLIENT)),
            TLS13_ONLY_CLIENT,
        ),
    )
    .await;
    assert_eq!(reason(&srv), "unknown_ca");
}

/// Presents a client leaf built from `spec` and returns the server's reason.
async fn server_refuses_client_leaf(spec: LeafSpec) -> &'static str {
    let pki = Pki::new(TD);
    let c = pki.leaf(&spec);
    let (srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Required),
        raw_client(
            &bundle_only(&pki),
            pki.id(SERVER),
            Some(&c),
            TLS13_ONLY_CLIENT,
        ),
    )
    .await;
    assert!(cli.is_err(), "client should see the refusal");
    reason(&srv)
}

fn client_spec() -> LeafSpec {
    LeafSpec::svid(&format!("spiffe://{TD}/{CLIENT}"))
}

#[tokio::test]
async fn bad_client_leaves_are_refused_with_their_reason() {
    let cases = [
        (client_spec().eku(&[Eku::ServerAuth]), "bad_eku"),
        (client_spec().ca(), "ca_used_as_end_entity"),
        (
            client_spec().sans(vec![
                uri_san(&format!("spiffe://{TD}/{CLIENT}")),
                uri_san(&format!("spiffe://{TD}/other")),
            ]),
            "multiple_uri_sans",
        ),
        (
            client_spec().sans(vec![dns_san("web.example.org")]),
            "no_uri_san",
        ),
        (
            client_spec().sans(vec![uri_san("spiffe://other.org/web")]),
            "foreign_trust_domain",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(server_refuses_client_leaf(spec).await, want);
    }
}

#[tokio::test]
async fn server_leaf_with_client_only_eku_is_refused() {
    let pki = Pki::new(TD);
    let s = pki.leaf(&LeafSpec::svid(&pki.id(SERVER).to_string()).eku(&[Eku::ClientAuth]));
    let (_srv, cli) = run(
        raw_server(&bundle_only(&pki), &s),
        client(&workload(&pki, CLIENT), &pki, SERVER),
    )
    .await;
    assert_eq!(reason(&cli), "bad_eku");
}

#[tokio::test]
async fn server_without_certificate_fails_closed() {
    let pki = Pki::new(TD);
    let (srv, cli) = run(
        server(&bundle_only(&pki), ClientAuth::Required),
        client(&workload(&pki, CLIENT), &pki, SERVER),
    )
    .await;
    assert_eq!(reason(&srv), "no_local_certificate");
    assert_eq!(reason(&cli), "remote_access_denied");
}

#[tokio::test]
async fn client_without_bundle_fails_closed() {
    let pki = Pki::new(TD);
    let (_srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Required),
        client(&IdentityHandle::new(), &pki, SERVER),
    )
    .await;
    assert_eq!(reason(&cli), "no_bundle");
}

#[tokio::test]
async fn tls12_works_unless_tls13_only() {
    let pki = Pki::new(TD);
    let c = pki.svid(CLIENT);

    let (srv, cli) = run(
        server(&workload(&pki, SERVER), ClientAuth::Required),
        raw_client(&bundle_only(&pki), pki.id(SERVER), Some(&c), TLS12_ONLY),
    )
    .await;
    let srv = srv.unwrap();
    assert_eq!(srv.version, Some(ProtocolVersion::TLSv1_2));
    assert!(
        [
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
        .contains(&srv.suite.unwrap())
    );
    assert_eq!(srv.peer, Some(pki.id(CLIENT)));
    assert_eq!(cli.unwrap().peer, Some(pki.id(SERVER)));

    let strict = TlsOptions {
        tls13_only: true,
        ..Default::default()
    };
    let s = server_config(&workload(&pki, SERVER), ClientAuth::Required, &strict).unwrap();
    let (srv, cli) = run(
        s,
        raw_client(&bundle_only(&pki), pki.id(SERVER), Some(&c), TLS12_ONLY),
    )
    .await;
    assert_eq!(reason(&srv), "protocol");
    assert_eq!(reason(&cli), "remote_protocol");
}
