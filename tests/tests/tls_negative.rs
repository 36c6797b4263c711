//! The mesh's TLS edges against clients and servers that are not Ferrule proxies, in
//! explicit mode on loopback with the real binaries.
//!
//! * Inbound: `openssl s_client` and `gnutls-cli` (two independent TLS implementations)
//!   against api's mesh listener: legacy versions, weak suites and groups, no client
//!   certificate, a certificate from another CA, an expired one are all refused before
//!   any byte reaches the app; a valid SVID negotiates only the policy's suites and
//!   reaches the app only after a correct hop header.
//! * Outbound: an impostor TLS server (rustls, through `ferrule_tls::server_config`)
//!   sitting where discovery says api is: web's proxy refuses it when its certificate
//!   names another identity, comes from another CA, or has expired, and the client app
//!   gets a closed connection without a byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ferrule_tests::apps::Behaviour;
use ferrule_tests::explicit::{API, Mesh, MeshOptions, WEB, mesh_with};
use ferrule_tests::pem::{PemIdentity, obtain_pem};
use ferrule_tests::pki::handle_for;
use ferrule_tests::process::wait_for;
use ferrule_tests::{ControlPlane, CpOptions};
use ferrule_tls::{ClientAuth, IdentityHandle, TlsOptions};

const ROGUE: &str = "spiffe://demo.local/ns/default/sa/rogue";

/// The hop header for application port 8080 (`proxy/src/hop.rs`).
const HOP_8080: &[u8] = b"FRL1\x1f\x90\x00\x00";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A mesh whose api proxy gives up on a missing hop header after 2 s.
fn mesh(cp: CpOptions, api_listen_ip: [u8; 4]) -> Mesh {
    mesh_with(MeshOptions {
        cp,
        behaviour: Behaviour::Echo,
        api_extra_yaml: "limits:\n  handshake_timeout: 2s\n".into(),
        api_listen_ip: api_listen_ip.into(),
        ..Default::default()
    })
}

fn pem(cp: &ControlPlane, id: &str, dir: &std::path::Path, name: &str) -> PemIdentity {
    rt().block_on(obtain_pem(cp, id, dir, name)).unwrap()
}

/// What a TLS command-line client did.
#[derive(Debug)]
struct Run {
    /// It exited by itself (the server ended the connection) rather than being stopped.
    exited: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `program args`, writes `input` to its stdin (kept open, so the tool neither quits
/// nor half-closes), and collects its output until it exits, `done(stdout)` holds, or
/// `timeout` passes; then stops it.
fn run_tool(
    program: &str,
    args: &[String],
    input: &[u8],
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Run {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    stdin.flush().unwrap();
    let collect = |mut r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, reader)
    };
    let (out, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
    let (err, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    let exited = wait_for(timeout, || {
        if child.try_wait().ok().flatten().is_some() {
            return Some(true);
        }
        done(&text(&out)).then_some(false)
    })
    .unwrap_or(false);
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    // The pipes reach EOF once the tool is gone: everything it wrote is collected.
    let _ = out_reader.join();
    let _ = err_reader.join();
    Run {
        exited,
        stdout: text(&out),
        stderr: text(&err),
        elapsed,
    }
}

/// `openssl s_client` against `addr`, offering ALPN ferrule/1, plus `extra` flags.
fn s_client(addr: SocketAddr, extra: &[&str], input: &[u8], marker: &str) -> Run {
    let mut args: Vec<String> = [
        "s_client",
        "-connect",
        &addr.to_string(),
        "-alpn",
        "ferrule/1",
        "-nocommands",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let marker = marker.to_string();
    run_tool(
        "openssl",
        &args,
        input,
        Duration::from_secs(10),
        move |out| out.contains(&marker),
    )
}

/// Asserts the client was turned away: the server ended the connection by itself and no
/// application byte came back.
fn assert_refused(case: &str, run: &Run, marker: &str) {
    assert!(
        run.exited,
        "[{case}] the server kept the connection open: {run:#?}"
    );
    assert!(
        !run.stdout.contains(marker),
        "[{case}] application data came back: {run:#?}"
    );
}

fn input(marker: &str) -> Vec<u8> {
    let mut v = HOP_8080.to_vec();
    v.extend_from_slice(marker.as_bytes());
    v.push(b'\n');
    v
}

// ---------------------------------------------------------------------------------------
// inbound

#[test]
fn legacy_versions_weak_parameters_and_missing_client_certs_are_refused() {
    let m = mesh(CpOptions::default(), [127, 0, 0, 1]);
    let marker = "MARKER-NEVER-ECHOED";
    let data = input(marker);
    let cases: &[(&str, &[&str], &str, &str)] = &[
        // (case, flags, what openssl reports, the proxy's refusal reason)
        // A TLS 1.1-only ClientHello is not a ClientHello rustls understands: it is
        // treated as non-mesh bytes, which the explicit mesh port closes.
        (
            "TLS 1.1",
            &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
            "unexpected eof",
            "plaintext_on_mesh_port",
        ),
        (
            "TLS 1.2, RSA key exchange",
            &["-tls1_2", "-cipher", "AES256-GCM-SHA384"],
            "alert handshake failure",
            "reason=\"protocol\"",
        ),
        (
            "TLS 1.2, AES-128",
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            "alert handshake failure",
            "NoCipherSuitesInCommon",
        ),
        (
            "TLS 1.3, AES-128",
            &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
            "alert handshake failure",
            "NoCipherSuitesInCommon",
        ),
        (
            "TLS 1.3, P-384 only",
            &["-tls1_3", "-groups", "P-384"],
            "alert handshake failure",
            "NoKxGroupsInCommon",
        ),
        (
            "TLS 1.2, ECDHE-ECDSA, no client certificate",
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
            "alert certificate required",
            "reason=\"no_certificate\"",
        ),
        // In TLS 1.3 the client finishes its side of the handshake before the server
        // checks its (absent) certificate: the refusal arrives on the first read, after
        // the client has already sent its data.
        (
            "TLS 1.3, no client certificate",
            &["-tls1_3"],
            "alert certificate required",
            "reason=\"no_certificate\"",
        ),
    ];
    let mut expected_reasons = std::collections::HashMap::<&str, usize>::new();
    for (case, flags, says, reason) in cases {
        let run = s_client(m.api_inbound, flags, &data, marker);
        assert_refused(case, &run, marker);
        assert!(
            run.all().contains(says),
            "[{case}] expected {says:?} from openssl: {run:#?}"
        );
        let n = expected_reasons.entry(reason).or_default();
        *n += 1;
        assert!(
            m.api.logged(reason, *n),
            "[{case}] api did not log {reason:?}:\n{}",
            m.api.plain_log()
        );
    }
    // Without ALPN ferrule/1 it is not a mesh hop at all.
    let run = run_tool(
        "openssl",
        &[
            "s_client".into(),
            "-connect".into(),
            m.api_inbound.to_string(),
        ],
        &data,
        Duration::from_secs(10),
        |out| out.contains(marker),
    );
    assert_refused("no ALPN", &run, marker);
    assert_eq!(m.app.accepted(), 0, "the app saw a refused client");
}

#[test]
fn a_valid_svid_gets_policy_suites_and_reaches_the_app_only_after_a_hop_header() {
    let m = mesh(CpOptions::default(), [127, 0, 0, 1]);
    let dir = tempfile::tempdir().unwrap();
    let web = pem(&m.cp, WEB, dir.path(), "web");
    let cert = web.cert_file.to_str().unwrap();
    let key = web.key_file.to_str().unwrap();
    let with_cert = |flags: &[&str]| -> Vec<String> {
        // -cert sends only the leaf; -cert_chain adds the intermediate the server needs
        // to reach its bundle's root.
        let mut v = vec!["-cert", cert, "-cert_chain", cert, "-key", key];
        v.extend_from_slice(flags);
        v.into_iter().map(String::from).collect()
    };

    let cases: &[(&[&str], &str)] = &[
        (
            &["-tls1_3"],
            "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384",
        ),
        (
            &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
            "New, TLSv1.3, Cipher is TLS_CHACHA20_POLY1305_SHA256",
        ),
        (
            &["-tls1_2"],
            "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
            "New, TLSv1.2, Cipher is ECDHE-ECDSA-CHACHA20-POLY1305",
        ),
    ];
    for (i, (flags, negotiated)) in cases.iter().enumerate() {
        let marker = format!("MARKER-ECHOED-{i}");
        let flags = with_cert(flags);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let run = s_client(m.api_inbound, &flags, &input(&marker), &marker);
        assert!(
            run.stdout.contains(negotiated),
            "expected {negotiated:?}: {run:#?}"
        );
        assert!(run.stdout.contains("ALPN protocol: ferrule/1"), "{run:#?}");
        assert!(
            run.stdout.contains(&marker),
            "the app's echo did not come back: {run:#?}"
        );
        assert!(!run.exited, "closed despite a valid hop header: {run:#?}");
    }
    assert_eq!(m.app.accepted(), cases.len());

    // Valid handshake, no hop header: closed once the hop-header timeout (2 s) passes.
    let marker = "MARKER-NO-HOP-HEADER";
    let flags = with_cert(&[]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let run = s_client(m.api_inbound, &flags, b"", marker);
    assert!(run.stdout.contains("New, TLSv1.3"), "{run:#?}");
    assert!(run.exited, "no hop header but kept open: {run:#?}");
    assert!(
        run.elapsed >= Duration::from_millis(1500) && run.elapsed < Duration::from_secs(8),
        "closed after {:?}, expected about 2 s",
        run.elapsed
    );
    assert!(
        m.api.logged("reason=\"hop_header\"", 1),
        "{}",
        m.api.plain_log()
    );

    // Malformed hop headers: wrong magic, a port that is not the app's, the mesh port.
    for (case, header) in [
        ("bad magic", &b"GET / HTTP/1.1\r\n\r\n"[..]),
        ("undeclared port", b"FRL1\x27\x0f\x00\x00"),
        ("own mesh port", &{
            let mut h = *b"FRL1\x00\x00\x00\x00";
            h[4..6].copy_from_slice(&m.api_inbound.port().to_be_bytes());
            h
        }),
    ] {
        let mut data = header.to_vec();
        data.extend_from_slice(marker.as_bytes());
        let run = s_client(m.api_inbound, &flags, &data, marker);
        assert_refused(case, &run, marker);
    }
    assert!(
        m.api.logged("reason=\"hop_header\"", 2),
        "{}",
        m.api.plain_log()
    );
    assert!(
        m.api.logged("reason=\"undeclared_port\"", 2),
        "{}",
        m.api.plain_log()
    );
    assert_eq!(
        m.app.accepted(),
        cases.len(),
        "the app saw a refused client"
    );
}

#[test]
fn gnutls_cli_interoperates_with_a_certificate_and_is_refused_without() {
    // A missing gnutls-cli fails the test unless missing tools are skipped.
    if ferrule_tests::tools::system_tool("gnutls-cli", "gnutls-bin").is_none() {
        return;
    }
    let m = mesh(CpOptions::default(), [127, 0, 0, 1]);
    let dir = tempfile::tempdir().unwrap();
    let web = pem(&m.cp, WEB, dir.path(), "web");
    let gnutls = |extra: &[String], marker: &str| {
        let mut args = vec![
            "--alpn=ferrule/1".to_string(),
            // The server proves a SPIFFE ID (URI SAN), not a host name: gnutls-cli's name
            // check must fail, so verification problems are reported, not fatal. The
            // Status line below still shows whether the chain verified.
            "--insecure".into(),
            format!("--x509cafile={}", m.cp.bundle_file().display()),
            format!("--port={}", m.api_inbound.port()),
        ];
        args.extend_from_slice(extra);
        args.push(m.api_inbound.ip().to_string());
        let marker = marker.to_string();
        run_tool(
            "gnutls-cli",
            &args,
            &input(&marker),
            Duration::from_secs(10),
            move |out| out.contains(&marker),
        )
    };

    let marker = "MARKER-GNUTLS-ECHO";
    let run = gnutls(
        &[
            format!("--x509certfile={}", web.cert_file.display()),
            format!("--x509keyfile={}", web.key_file.display()),
        ],
        marker,
    );
    let all = run.all();
    assert!(all.contains("Handshake was completed"), "{run:#?}");
    assert!(all.contains("Application protocol: ferrule/1"), "{run:#?}");
    assert!(
        all.contains("(TLS1.3-X.509)") && all.contains("(AES-256-GCM)"),
        "{run:#?}"
    );
    assert!(
        !all.contains("issuer is unknown"),
        "api's chain did not verify against the bundle: {run:#?}"
    );
    assert!(
        run.stdout.contains(marker),
        "no echo through gnutls: {run:#?}"
    );
    assert_eq!(m.app.accepted(), 1);

    let marker = "MARKER-GNUTLS-NO-CERT";
    let run = gnutls(&[], marker);
    assert_refused("gnutls, no certificate", &run, marker);
    assert!(run.all().contains("Certificate is required"), "{run:#?}");
    assert_eq!(m.app.accepted(), 1);
}

#[test]
fn client_certificates_from_another_ca_or_expired_are_refused() {
    // Short-lived certificates so one can expire during the test.
    let m = mesh(
        CpOptions {
            svid_ttl: "6s".into(),
            ..Default::default()
        },
        [127, 0, 0, 1],
    );
    let dir = tempfile::tempdir().unwrap();
    let short = pem(&m.cp, WEB, dir.path(), "short");
    // Same trust domain, same SPIFFE ID, another CA.
    let foreign_cp = ControlPlane::start(CpOptions::default()).unwrap();
    let foreign = pem(&foreign_cp, WEB, dir.path(), "foreign");
    let flags = |p: &PemIdentity| -> Vec<String> {
        vec![
            "-cert".into(),
            p.cert_file.display().to_string(),
            "-cert_chain".into(),
            p.cert_file.display().to_string(),
            "-key".into(),
            p.key_file.display().to_string(),
        ]
    };

    // Another trust domain altogether, from its own CA.
    let other_td_cp = ControlPlane::start(CpOptions {
        trust_domain: "other.local".into(),
        ..Default::default()
    })
    .unwrap();
    let other_td = pem(
        &other_td_cp,
        "spiffe://other.local/ns/default/sa/web",
        dir.path(),
        "other-td",
    );
    for (i, (case, p)) in [
        ("same trust domain, another CA", &foreign),
        ("another trust domain", &other_td),
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("MARKER-FOREIGN-{i}");
        let f = flags(p);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        let run = s_client(m.api_inbound, &f, &input(&marker), &marker);
        assert_refused(case, &run, &marker);
        assert!(run.all().contains("alert unknown ca"), "[{case}] {run:#?}");
        assert!(
            m.api.logged("reason=\"unknown_ca\"", i + 1),
            "[{case}] {}",
            m.api.plain_log()
        );
    }

    // Control: a certificate from the same control plane, with the same short lifetime,
    // works while valid.
    let valid = pem(&m.cp, WEB, dir.path(), "valid");
    let marker = "MARKER-STILL-VALID";
    let v = flags(&valid);
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    let run = s_client(m.api_inbound, &v, &input(marker), marker);
    assert!(run.stdout.contains(marker), "{run:#?}");

    let s = flags(&short);
    let s: Vec<&str> = s.iter().map(String::as_str).collect();

    // Then expired.
    let wait = short
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_millis(1500);
    assert!(wait < Duration::from_secs(10), "certificate lives {wait:?}");
    std::thread::sleep(wait);
    let marker = "MARKER-EXPIRED";
    let run = s_client(m.api_inbound, &s, &input(marker), marker);
    assert_refused("expired", &run, marker);
    assert!(run.all().contains("alert certificate expired"), "{run:#?}");
    assert!(
        m.api.logged("reason=\"expired\"", 1),
        "{}",
        m.api.plain_log()
    );
    assert_eq!(m.app.accepted(), 1, "the app saw a refused client");
}

// ---------------------------------------------------------------------------------------
// outbound

/// What the impostor server saw.
#[derive(Debug, Default)]
struct RogueStats {
    accepted: usize,
    handshakes: usize,
    received: Vec<u8>,
    errors: Vec<String>,
}

/// A TLS server following Ferrule's policy (ALPN ferrule/1, client certificates verified
/// against `bundle_of`'s bundle, optional) but presenting whatever credentials its handle
/// holds at the time of each handshake.
struct Rogue {
    handle: IdentityHandle,
    stats: Arc<Mutex<RogueStats>>,
    _rt: tokio::runtime::Runtime,
}

impl Rogue {
    fn start(addr: SocketAddr, bundle_of: &ControlPlane) -> Self {
        let handle = handle_for(bundle_of, None).unwrap();
        let opts = TlsOptions {
            alpn: vec![b"ferrule/1".to_vec()],
            ..Default::default()
        };
        let config = ferrule_tls::server_config(&handle, ClientAuth::Optional, &opts).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stats = Arc::new(Mutex::new(RogueStats::default()));
        let rt = rt();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("impostor cannot bind {addr}: {e}"));
        let s = stats.clone();
        rt.spawn(async move {
            use tokio::io::AsyncReadExt;
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                s.lock().unwrap().accepted += 1;
                let acceptor = acceptor.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            s.lock().unwrap().handshakes += 1;
                            let mut buf = [0u8; 4096];
                            let deadline = tokio::time::sleep(Duration::from_secs(1));
                            tokio::pin!(deadline);
                            loop {
                                tokio::select! {
                                    r = tls.read(&mut buf) => match r {
                                        Ok(n) if n > 0 => s.lock().unwrap().received.extend_from_slice(&buf[..n]),
                                        _ => break,
                                    },
                                    _ = &mut deadline => break,
                                }
                            }
                        }
                        Err(e) => s.lock().unwrap().errors.push(e.to_string()),
                    }
                });
            }
        });
        Self {
            handle,
            stats,
            _rt: rt,
        }
    }
}

/// The client app's view through web's upstream: what came back before the close.
fn call_through_web(m: &Mesh, marker: &str) -> Result<Vec<u8>, String> {
    let mut c = TcpStream::connect(m.upstream).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(marker.as_bytes());
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(marker.as_bytes()) {
                    return Ok(got);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(format!("still open after 10 s, got {got:?}"));
            }
            Err(_) => return Ok(got),
        }
    }
}

#[test]
fn outbound_refuses_an_impostor_with_the_wrong_identity_ca_or_validity() {
    // api's real listener moves to 127.0.0.2; discovery still says 127.0.0.1:<port>,
    // where the impostor listens.
    let m = mesh(
        CpOptions {
            svid_ttl: "6s".into(),
            ..Default::default()
        },
        [127, 0, 0, 2],
    );
    let dir = tempfile::tempdir().unwrap();
    let expiring = pem(&m.cp, API, dir.path(), "expiring");
    let rogue_id = pem(&m.cp, ROGUE, dir.path(), "rogue");
    let foreign_cp = ControlPlane::start(CpOptions::default()).unwrap();
    let foreign = pem(&foreign_cp, API, dir.path(), "foreign");
    let impostor = Rogue::start(m.api_registered, &m.cp);

    // Control: with api's own (still valid) identity the impostor is indistinguishable
    // from api, and gets the hop header and the data. This proves the cases below fail
    // for the reason they test and not for a setup mistake.
    {
        let control = pem(&m.cp, API, dir.path(), "control");
        impostor.handle.set_credentials(control.creds);
        let got = call_through_web(&m, "MARKER-TO-A-GOOD-IMPOSTOR").unwrap_or_default();
        assert!(got.is_empty(), "the impostor does not echo: {got:?}");
        let ok = wait_for(Duration::from_secs(5), || {
            let st = impostor.stats.lock().unwrap();
            ferrule_tests::pcap::contains(&st.received, b"MARKER-TO-A-GOOD-IMPOSTOR").then_some(())
        });
        let st = impostor.stats.lock().unwrap();
        assert!(
            ok.is_some(),
            "control failed: {st:?}\n{}",
            m.web.plain_log()
        );
        assert!(st.received.starts_with(HOP_8080), "{st:?}");
    }
    let before = impostor.stats.lock().unwrap().handshakes;

    let cases = [
        (
            "another identity, same CA",
            rogue_id.creds,
            "identity_mismatch",
        ),
        ("api's identity, another CA", foreign.creds, "unknown_ca"),
    ];
    for (case, creds, reason) in cases {
        impostor.handle.set_credentials(creds);
        let marker = format!("MARKER-{reason}");
        let got = call_through_web(&m, &marker);
        assert_eq!(got, Ok(vec![]), "[{case}] the client app got data");
        assert!(
            m.web.logged(&format!("reason=\"{reason}\""), 1),
            "[{case}] web did not log {reason}:\n{}",
            m.web.plain_log()
        );
    }

    // api's identity from the right CA, but expired.
    let wait = expiring
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_millis(1500);
    assert!(wait < Duration::from_secs(10), "certificate lives {wait:?}");
    std::thread::sleep(wait);
    impostor.handle.set_credentials(expiring.creds);
    let got = call_through_web(&m, "MARKER-EXPIRED");
    assert_eq!(got, Ok(vec![]), "[expired] the client app got data");
    assert!(
        m.web.logged("reason=\"expired\"", 1),
        "web did not log expired:\n{}",
        m.web.plain_log()
    );

    let st = impostor.stats.lock().unwrap();
    assert_eq!(
        st.handshakes, before,
        "a refused impostor completed a handshake: {st:?}"
    );
    assert!(st.accepted >= before + 3, "{st:?}");
    assert_eq!(m.app.accepted(), 0, "the real app is not involved");
}
