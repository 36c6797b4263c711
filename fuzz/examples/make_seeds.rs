//! Writes the seed corpora in `fuzz/seeds/<target>/`: a few well-formed inputs per
//! target (a real ClientHello, a real CSR, signed SVIDs, valid protobuf messages, the
//! documentation's YAML), so each run starts from the interesting side of the parsers.
//!
//! `cargo run --example make_seeds` from `fuzz/` (an ordinary build, no sanitizer).
//! Certificates are signed by the fixed fuzz PKI (`src/pki.rs`), so they keep chaining.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrule_fuzz::cp::{OTHER_TOKEN_PLACEHOLDER, TOKEN_PLACEHOLDER};
use ferrule_fuzz::pki::{NOW_UNIX, pki};
use ferrule_proto::admin::v1 as admin;
use ferrule_proto::identity::v1 as identity;
use ferrule_proto::mesh::v1 as mesh;
use prost::Message;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use time::OffsetDateTime;

fn dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&d).expect("seed dir");
    d
}

fn put(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(dir(target).join(name), bytes).expect("write seed");
}

fn with(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

/// A ClientHello as rustls sends it, offering `alpn`.
fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(ferrule_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls_pki_types::ServerName::try_from("ferrule.invalid").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write hello");
    }
    out
}

/// The same handshake message split over two TLS records (RUSTSEC-2024-0399's shape).
fn fragmented(hello: &[u8]) -> Vec<u8> {
    let payload = &hello[5..];
    let (a, b) = payload.split_at(payload.len() / 2);
    let mut out = Vec::new();
    for part in [a, b] {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn framed(certs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in certs {
        out.extend_from_slice(&(c.len() as u16).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn leaf(uris: &[&str], ca: bool) -> Vec<u8> {
    let mut p = CertificateParams::default();
    for u in uris {
        p.subject_alt_names
            .push(SanType::URI((*u).try_into().expect("uri")));
    }
    p.is_ca = if ca {
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = OffsetDateTime::from_unix_timestamp(NOW_UNIX - 3600).expect("time");
    p.not_after = OffsetDateTime::from_unix_timestamp(NOW_UNIX + 3600).expect("time");
    pki().issue(&p).expect("leaf").to_vec()
}

fn csr(uris: &[&str], ca: bool) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::default();
    for u in uris {
        p.subject_alt_names
            .push(SanType::URI((*u).try_into().expect("uri")));
    }
    if ca {
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).expect("csr").der().to_vec()
}

const POLICY: &str = "apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: api-allow-web
  namespace: prod
spec:
  selector:
    spiffeId: spiffe://fuzz.test/ns/prod/sa/api
    ports: [8080]
  action: ALLOW
  rules:
    - from:
        - spiffeIdPrefix: spiffe://fuzz.test/ns/web/
        - spiffeId: spiffe://fuzz.test/ns/ops/sa/admin
      to:
        methods: [GET, HEAD]
        paths: [\"/public/*\", /healthz, \"/api/v*/items/**\"]
    - from:
        - unauthenticated: true
          cidrs: [10.0.0.0/8]
      to:
        paths: [/healthz]
---
apiVersion: ferrule.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: block-admin}
spec:
  selector: {spiffeId: \"spiffe://fuzz.test/ns/prod/*\"}
  action: DENY
  rules:
    - from: [{spiffeIdPrefix: spiffe://fuzz.test/ns/web/}]
      to: {paths: [/admin]}
";

const CONFIG: &str = "mode: explicit
service: backend
inbound:
  listen: \"[::]:15006\"
  default_mode: strict
  ports:
    - port: 8080
      app: 127.0.0.1:8080
      mode: strict
      protocol: http
  close_on_policy_change: true
outbound:
  listen: 127.0.0.1:15001
  unmeshed: refuse
  upstreams:
    - listen: 127.0.0.1:9001
      service: backend
      port: 8080
limits:
  connect_timeout: 5s
  handshake_timeout: 10s
  detect_timeout: 1s
  idle_timeout: 0s
  max_connections: 10000
  shutdown_grace: 10s
tls:
  tls13_only: false
";

fn main() {
    // inbound_detect: control byte 0 (close after the bytes, reads of varying size).
    let mesh_hello = client_hello(&[b"ferrule/1"]);
    put("inbound_detect", "mesh-hello", &with(&[0], &mesh_hello));
    put(
        "inbound_detect",
        "mesh-hello-fragmented",
        &with(&[2], &fragmented(&mesh_hello)),
    );
    put(
        "inbound_detect",
        "h2-hello",
        &with(&[0], &client_hello(&[b"h2", b"http/1.1"])),
    );
    put(
        "inbound_detect",
        "half-hello-silent",
        &with(&[1], &mesh_hello[..mesh_hello.len() / 2]),
    );
    put(
        "inbound_detect",
        "http",
        b"\x00GET / HTTP/1.1\r\nHost: api\r\n\r\n",
    );
    put(
        "inbound_detect",
        "tls-garbage",
        &[0, 0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
    );

    // hop_header
    let mut h = ferrule_proxy::hop::encode(8080).to_vec();
    put("hop_header", "port-8080", &h);
    h.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    put("hop_header", "port-8080-then-data", &h);
    put("hop_header", "port-0", &ferrule_proxy::hop::encode(0));
    put("hop_header", "reserved-set", b"FRL1\x1f\x90\x00\x01");

    // svid_der: flags, then length-prefixed certificates.
    let good = leaf(&["spiffe://fuzz.test/ns/default/sa/web"], false);
    let issuer = pki().issuer.to_vec();
    put(
        "svid_der",
        "leaf-and-issuer",
        &with(&[0], &framed(&[&good, &issuer])),
    );
    put(
        "svid_der",
        "leaf-issuer-appended",
        &with(&[3], &framed(&[&good])),
    );
    let two = leaf(&["spiffe://fuzz.test/a", "spiffe://fuzz.test/b"], false);
    put("svid_der", "two-uri-sans", &with(&[2], &framed(&[&two])));
    put(
        "svid_der",
        "ca-leaf",
        &with(&[2], &framed(&[&leaf(&["spiffe://fuzz.test/a"], true)])),
    );
    put(
        "svid_der",
        "nul-in-san",
        &with(&[2], &framed(&[&leaf(&["spiffe://fuzz.test/a\0b"], false)])),
    );
    let root_pem = ferrule_control_plane::ca::to_pem("CERTIFICATE", &pki().root);
    put("svid_der", "bundle-pem", &with(&[0], root_pem.as_bytes()));

    // spiffe_id
    for (name, s) in [
        ("id", "spiffe://fuzz.test/ns/prod/sa/api"),
        ("prefix", "spiffe://fuzz.test/ns/prod/"),
        ("wildcard", "spiffe://fuzz.test/ns/prod/*"),
        ("upper-td", "spiffe://FUZZ.test/ns/x"),
        ("dot-segments", "spiffe://fuzz.test/ns/../x"),
        ("td-only", "spiffe://fuzz.test"),
    ] {
        put("spiffe_id", name, s.as_bytes());
    }

    // csr_sign: mode 0, identity pick, DER.
    put("csr_sign", "plain", &with(&[0, 0], &csr(&[], false)));
    let evil = csr(
        &["spiffe://fuzz.test/ns/prod/sa/api", "spiffe://evil.test/x"],
        true,
    );
    put("csr_sign", "extra-sans-and-ca", &with(&[0, 1], &evil));
    put(
        "csr_sign",
        "foreign-domain",
        &with(&[0, 3], &csr(&[], false)),
    );
    put("csr_sign", "built", &[1, 0, 2, 1, b'x', 0, 1, 0, 0, 0]);

    // path_normalize
    for (i, p) in [
        "//public/../admin/",
        "/admin%2Fx",
        "/%2e%2e/admin",
        "/admin;x",
        "/ADMIN",
        "/public/./a/../%7Euser?x=1",
        "/a%3f%41b",
        "/api/v1/items/7?x#y",
    ]
    .iter()
    .enumerate()
    {
        put("path_normalize", &format!("path-{i}"), p.as_bytes());
    }

    // policy_yaml
    put("policy_yaml", "allow-and-deny", POLICY.as_bytes());

    // proxy_config
    put("proxy_config", "full", CONFIG.as_bytes());
    put("proxy_config", "duration", b"1500ms");

    // certify_request: flags, then the protobuf request.
    let certify = |token: &str, expected: &str| identity::CertifyRequest {
        csr_der: csr(&["spiffe://fuzz.test/ns/prod/sa/api"], false),
        credential: Some(identity::certify_request::Credential::JoinToken(
            token.into(),
        )),
        expected_spiffe_id: expected.into(),
    };
    put(
        "certify_request",
        "token",
        &with(&[1], &certify(TOKEN_PLACEHOLDER, "").encode_to_vec()),
    );
    put(
        "certify_request",
        "token-expected-other",
        &with(
            &[1],
            &certify(TOKEN_PLACEHOLDER, "spiffe://fuzz.test/ns/prod/sa/api").encode_to_vec(),
        ),
    );
    put(
        "certify_request",
        "other-token",
        &with(&[1], &certify(OTHER_TOKEN_PLACEHOLDER, "").encode_to_vec()),
    );
    let renewal = identity::CertifyRequest {
        credential: None,
        ..certify("", "")
    };
    put(
        "certify_request",
        "renewal",
        &with(&[3], &renewal.encode_to_vec()),
    );

    // admin_request: RPC selector, then the protobuf request.
    let token = admin::CreateJoinTokenRequest {
        spiffe_id: "spiffe://fuzz.test/ns/default/sa/web".into(),
        ttl_seconds: 300,
        uses: 1,
    };
    put(
        "admin_request",
        "create-token",
        &with(&[0], &token.encode_to_vec()),
    );
    let retire = admin::RetireAuthorityRequest {
        id: "0123abcd".into(),
        force: true,
    };
    put(
        "admin_request",
        "retire",
        &with(&[3], &retire.encode_to_vec()),
    );
    let docs = admin::PolicyDocumentsRequest {
        yaml: POLICY.into(),
    };
    put(
        "admin_request",
        "validate",
        &with(&[4], &docs.encode_to_vec()),
    );
    put("admin_request", "apply", &with(&[5], &docs.encode_to_vec()));
    let delete = admin::DeletePoliciesRequest {
        names: vec!["block-admin".into(), "nope".into()],
    };
    put(
        "admin_request",
        "delete",
        &with(&[7], &delete.encode_to_vec()),
    );
    let explain = admin::ExplainRequest {
        from: "spiffe://fuzz.test/ns/web/sa/web".into(),
        to: "spiffe://fuzz.test/ns/prod/sa/api".into(),
        port: 8080,
        method: "GET".into(),
        path: "/admin/../admin".into(),
        ..Default::default()
    };
    put(
        "admin_request",
        "explain",
        &with(&[8], &explain.encode_to_vec()),
    );

    // mesh_sync: 0 = to a proxy, 1 = to the control plane.
    let discovery = mesh::ControlMessage {
        msg: Some(mesh::control_message::Msg::Discovery(mesh::Discovery {
            version: 7,
            workloads: vec![mesh::Workload {
                spiffe_id: "spiffe://fuzz.test/ns/prod/sa/api".into(),
                service: "api".into(),
                addresses: vec!["10.0.0.7".into(), "::ffff:10.0.0.8".into()],
                inbound_port: 15006,
                app_ports: vec![8080],
                ..Default::default()
            }],
        })),
    };
    put(
        "mesh_sync",
        "discovery",
        &with(&[0], &discovery.encode_to_vec()),
    );
    let policy_json =
        serde_json::to_string(&ferrule_policy::parse_documents(POLICY).expect("policy")[1])
            .expect("json");
    let policy = mesh::ControlMessage {
        msg: Some(mesh::control_message::Msg::Policy(mesh::Policy {
            version: 3,
            mesh_default: "allow-authenticated".into(),
            documents_json: vec![policy_json],
        })),
    };
    put("mesh_sync", "policy", &with(&[0], &policy.encode_to_vec()));
    let register = mesh::ProxyMessage {
        msg: Some(mesh::proxy_message::Msg::Register(mesh::Register {
            service: "web".into(),
            inbound_port: 15006,
            app_ports: vec![8080],
            proxy_version: "0.1.0".into(),
            ..Default::default()
        })),
    };
    put(
        "mesh_sync",
        "register",
        &with(&[1], &register.encode_to_vec()),
    );
    println!("seeds written under {}", dir("").display());
}
