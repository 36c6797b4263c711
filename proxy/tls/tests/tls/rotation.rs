//! Publishing new credentials or a new bundle affects the next handshake only, and no
//! session is ever resumed past it.

use ferrule_tls::{ClientAuth, IdentityHandle, TlsOptions, client_config, server_config};
use rustls::HandshakeKind;

use crate::harness::{EchoServer, connect, reason, round_trip, workload};
use crate::pki::Pki;

const TD: &str = "example.org";
const SERVER: &str = "ns/default/sa/api";
const CLIENT: &str = "ns/default/sa/web";

fn current_leaf(handle: &IdentityHandle) -> rustls::pki_types::CertificateDer<'static> {
    handle.credentials().expect("credentials").chain()[0].clone()
}

#[tokio::test]
async fn new_credentials_apply_to_the_next_handshake_only() {
    let pki = Pki::new(TD);
    let s = workload(&pki, SERVER);
    let c = workload(&pki, CLIENT);
    let opts = TlsOptions::default();
    let mut srv = EchoServer::start(server_config(&s, ClientAuth::Required, &opts).unwrap()).await;
    let cfg = client_config(&c, vec![pki.id(SERVER)], &opts).unwrap();

    let (mut first, out) = connect(cfg.clone(), srv.addr).await.unwrap();
    assert_eq!(out.peer_leaf.as_ref(), Some(&current_leaf(&s)));
    let old_serial = s.credentials().unwrap().serial_hex().to_owned();
    assert_eq!(srv.next().await.unwrap().peer_leaf, Some(current_leaf(&c)));

    // Rotate both sides.
    s.set_credentials(pki.svid(SERVER).credentials());
    c.set_credentials(pki.svid(CLIENT).credentials());
    assert_ne!(s.credentials().unwrap().serial_hex(), old_serial);

    let (_second, out) = connect(cfg, srv.addr).await.unwrap();
    assert_eq!(out.peer_leaf.as_ref(), Some(&current_leaf(&s)));
    assert_eq!(srv.next().await.unwrap().peer_leaf, Some(current_leaf(&c)));

    // The connection established before the rotation is untouched.
    round_trip(&mut first, b"still here").await.unwrap();
}

#[tokio::test]
async fn new_bundle_applies_to_the_next_handshake_only() {
    let old = Pki::new(TD);
    let new = Pki::new(TD);
    let s = workload(&old, SERVER);
    let c = workload(&old, CLIENT);
    let opts = TlsOptions::default();
    let mut srv = EchoServer::start(server_config(&s, ClientAuth::Required, &opts).unwrap()).await;
    let cfg = client_config(&c, vec![old.id(SERVER)], &opts).unwrap();

    let (mut first, _) = connect(cfg.clone(), srv.addr).await.unwrap();
    srv.next().await.unwrap();

    // The server now trusts only the new root: the client's old-root certificate fails.
    s.set_bundle(new.bundle());
    let refused = connect(cfg.clone(), srv.addr).await.map(|(_, o)| o);
    assert_eq!(reason(&srv.next().await), "unknown_ca");
    assert_eq!(reason(&refused), "remote_unknown_ca");

    // The client too: the server's old-root certificate fails on the client side.
    s.set_bundle(old.bundle());
    c.set_bundle(new.bundle());
    let refused = connect(cfg.clone(), srv.addr).await.map(|(_, o)| o);
    assert_eq!(reason(&refused), "unknown_ca");
    assert!(srv.next().await.is_err());

    // Both sides move to the new PKI: handshakes work again.
    s.set_bundle(new.bundle());
    s.set_credentials(new.svid(SERVER).credentials());
    c.set_credentials(new.svid(CLIENT).credentials());
    connect(cfg, srv.addr).await.unwrap();
    srv.next().await.unwrap();

    round_trip(&mut first, b"old connection lives on")
        .await
        .unwrap();
}

#[tokio::test]
async fn cleared_credentials_fail_closed() {
    let pki = Pki::new(TD);
    let s = workload(&pki, SERVER);
    let c = workload(&pki, CLIENT);
    let opts = TlsOptions::default();
    let mut srv = EchoServer::start(server_config(&s, ClientAuth::Required, &opts).unwrap()).await;
    let cfg = client_config(&c, vec![pki.id(SERVER)], &opts).unwrap();

    s.clear_credentials();
    let refused = connect(cfg.clone(), srv.addr).await.map(|(_, o)| o);
    assert_eq!(reason(&refused), "remote_access_denied");
    assert_eq!(reason(&srv.next().await), "no_local_certificate");

    // A client without credentials sends none, and a Required server refuses it.
    s.set_credentials(pki.svid(SERVER).credentials());
    c.clear_credentials();
    let refused = connect(cfg, srv.addr).await.map(|(_, o)| o);
    assert_eq!(reason(&refused), "remote_certificate_required");
    assert_eq!(reason(&srv.next().await), "no_certificate");
}

#[tokio::test]
async fn sessions_are_never_resumed() {
    let pki = Pki::new(TD);
    let opts = TlsOptions::default();
    let mut srv = EchoServer::start(
        server_config(&workload(&pki, SERVER), ClientAuth::Required, &opts).unwrap(),
    )
    .await;
    let cfg = client_config(&workload(&pki, CLIENT), vec![pki.id(SERVER)], &opts).unwrap();
    for _ in 0..3 {
        let (_conn, out) = connect(cfg.clone(), srv.addr).await.unwrap();
        assert_eq!(out.kind, Some(HandshakeKind::Full));
        assert_eq!(srv.next().await.unwrap().kind, Some(HandshakeKind::Full));
    }
}
