//! A real inbound listener, a real mTLS `ferrule/2` connection from a test client, and
//! trust-bundle changes in between: a pooled connection takes new streams only while its
//! client still passes verification against the bundle in force; streams already open
//! are never dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ferrule_policy::{MeshDefault, PolicySet};
use ferrule_tls::{Credentials, IdentityHandle, TlsOptions, TrustBundle, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::{Inbound, InboundSettings, PortSettings};
use crate::config::file::{Limits, Mode, PortMode, Protocol};
use crate::drain::Drain;
use crate::hop::{self, mux::MuxStream};
use crate::metrics::Metrics;
use crate::policy::Authorizer;

const TD: &str = "example.org";

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        Self { params, key, der }
    }

    fn svid(&self, path: &str) -> Credentials {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{TD}/{path}").try_into().unwrap(),
        )];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Credentials::new(vec![cert.der().clone()], pkcs8).unwrap()
    }
}

fn bundle(cas: &[&Ca], version: u64) -> TrustBundle {
    let roots = cas.iter().map(|c| c.der.clone()).collect();
    TrustBundle::new(TrustDomain::new(TD).unwrap(), roots, version).unwrap()
}

/// An echo application; returns its address.
async fn echo_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn echo(s: &mut MuxStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await?;
    Ok(back)
}

async fn open(send: &h2::client::SendRequest<bytes::Bytes>) -> Result<MuxStream, h2::Error> {
    let mut send = send.clone().ready().await?;
    let req = hop::mux::connect_request([127, 0, 0, 1].into(), 8080).unwrap();
    let (response, stream) = send.send_request(req, false)?;
    Ok(MuxStream::client(stream, response))
}

#[tokio::test]
async fn a_pooled_connection_takes_new_streams_only_while_the_bundle_vouches_for_its_client() {
    let old = Ca::new("old root");
    let new = Ca::new("new root");
    // The server trusts both roots (a CA rotation in progress); the client's certificate
    // chains to the old one.
    let server = IdentityHandle::new();
    server.set_bundle(bundle(&[&old, &new], 1));
    server.set_credentials(old.svid("ns/default/sa/api"));
    let client = IdentityHandle::new();
    client.set_bundle(bundle(&[&old, &new], 1));
    client.set_credentials(old.svid("ns/default/sa/web"));

    let app = echo_app().await;
    let settings = InboundSettings {
        mode: Mode::Explicit,
        default_mode: PortMode::Strict,
        ports: HashMap::from([(
            8080,
            PortSettings {
                app: Some(app),
                mode: PortMode::Strict,
                protocol: Protocol::Opaque,
            },
        )]),
        own_ports: vec![],
        limits: Limits::default(),
        close_on_policy_change: true,
    };
    let authz = Authorizer::new(server.clone());
    authz.install(PolicySet::compile(vec![], MeshDefault::AllowAuthenticated));
    let metrics = Metrics::new();
    let inbound = Arc::new(
        Inbound::new(
            settings,
            &server,
            &TlsOptions::default(),
            authz,
            metrics.clone(),
        )
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mesh = listener.local_addr().unwrap();
    tokio::spawn(inbound.run(listener, Drain::new(100)));

    // One ferrule/2 connection from the client.
    let opts = TlsOptions {
        alpn: vec![hop::ALPN_MUX.to_vec()],
        ..Default::default()
    };
    let api = spiffe::SpiffeId::new(format!("spiffe://{TD}/ns/default/sa/api")).unwrap();
    let config = ferrule_tls::client_config(&client, vec![api], &opts).unwrap();
    let tcp = TcpStream::connect(mesh).await.unwrap();
    let name = ServerName::try_from("mesh.ferrule.invalid").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(hop::ALPN_MUX));
    let (send, conn) = hop::mux::client_builder()
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(conn);

    let mut first = open(&send).await.unwrap();
    assert_eq!(echo(&mut first, b"one").await.unwrap(), b"one");

    // A new bundle that still holds the old root: re-verified, still trusted.
    server.set_bundle(bundle(&[&old, &new], 2));
    let mut second = open(&send).await.unwrap();
    assert_eq!(echo(&mut second, b"two").await.unwrap(), b"two");

    // The rotation completes: the old root is gone. The next stream is refused, and the
    // connection is told to go away.
    server.set_bundle(bundle(&[&new], 3));
    let refused = match open(&send).await {
        Ok(mut s) => echo(&mut s, b"three").await,
        Err(e) => Err(std::io::Error::other(e)),
    };
    assert!(
        refused.is_err(),
        "a stream was accepted from a client the bundle no longer trusts"
    );
    let counted = metrics.encode();
    assert!(
        counted.contains(
            r#"ferrule_proxy_connection_failures_total{direction="inbound",reason="unknown_ca"} 1"#
        ),
        "{counted}"
    );
    // Nothing new gets through on this connection, ever.
    let again = match open(&send).await {
        Ok(mut s) => echo(&mut s, b"four").await,
        Err(e) => Err(std::io::Error::other(e)),
    };
    assert!(again.is_err());

    // Streams opened before the change live on (as established connections do).
    assert_eq!(echo(&mut first, b"still one").await.unwrap(), b"still one");
    assert_eq!(echo(&mut second, b"still two").await.unwrap(), b"still two");
    first.shutdown().await.unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}
