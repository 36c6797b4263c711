//! External TLS graders, tools nobody on this team wrote, against every TLS listener of
//! the real binaries, asserting on their machine-readable reports:
//!
//! * `sslyze` (PyPI, `--json_out`), with a real X.509-SVID from the running control plane
//!   as its client certificate: client-authentication requirement, every protocol
//!   version, the accepted suites, groups, compression, renegotiation, resumption, early
//!   data, Heartbleed, CCS injection, ROBOT, extended master secret.
//! * `testssl.sh` (Debian, `--jsonfile`): protocol and per-protocol cipher enumeration.
//! * `nmap --script ssl-enum-ciphers` (Debian, `-oX`): protocol and cipher enumeration.
//!
//! The listeners, and the client-authentication requirement each must report:
//!
//! | listener                                | client auth | why |
//! |-----------------------------------------|-------------|-----|
//! | proxy inbound (mesh) listener           | REQUIRED    | every mesh hop is mutual TLS |
//! | control plane identity API (gRPC/TLS)   | OPTIONAL    | a first-contact proxy has no certificate yet; each RPC relying on the caller's identity verifies the chain itself (`control-plane/src/server/tls_listener.rs`) |
//! | control plane injection webhook (HTTPS) | DISABLED    | the Kubernetes API server calls it without a client certificate (`control-plane/src/kubernetes/webhook.rs`) |
//!
//! Everything targets 127.0.0.1 only.
//!
//! The policy (`proxy/tls/src/provider.rs`, README "TLS policy"): TLS 1.3 with
//! AES-256-GCM and ChaCha20-Poly1305 (no AES-128: every Ferrule peer has AES-256 and
//! ChaCha20, so a third suite would only add surface); TLS 1.2 with ECDHE-ECDSA and the
//! same two AEADs, extended master secret required; groups X25519MLKEM768 (which these
//! graders do not know), X25519, P-256.
//!
//! The extended-master-secret requirement hides TLS 1.2 from probes that do not send
//! the extension: sslyze's legacy OpenSSL 1.0.2 path (it tries AES-256-GCM through it),
//! testssl.sh 3.0's hand-built ClientHellos, and nmap 7.93's. So each grader's TLS 1.2 set
//! is asserted as a subset of the policy, testssl runs with `--ssl-native` (OpenSSL 3,
//! which sends the extension), and the union over the graders must be exactly the policy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferrule_tests::explicit::{WEB, mesh};
use ferrule_tests::pem::{PemIdentity, obtain_pem};
use ferrule_tests::tools::{self, Ran};
use ferrule_tests::{ControlPlane, CpOptions};
use serde_json::Value;

const TLS13: [&str; 2] = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];
const TLS12: [&str; 2] = [
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
];
/// The groups sslyze knows that the policy offers (it has no ML-KEM hybrids).
const CURVES: [&str; 2] = ["X25519", "secp256r1"];

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn svid(cp: &ControlPlane, dir: &Path) -> PemIdentity {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(obtain_pem(cp, WEB, dir, "web"))
        .expect("an SVID from the control plane")
}

/// One listener to grade.
struct Target<'a> {
    name: &'a str,
    addr: SocketAddr,
    /// sslyze's `client_auth_requirement`.
    client_auth: &'a str,
    cert: &'a PemIdentity,
    dir: &'a Path,
}

/// What one grader found, per protocol version (sslyze's names: `TLS_1_2`, ...).
#[derive(Debug, Default)]
struct Found {
    suites: BTreeMap<String, BTreeSet<String>>,
}

impl Found {
    fn get(&self, version: &str) -> BTreeSet<String> {
        self.suites.get(version).cloned().unwrap_or_default()
    }
}

fn tools_present() -> bool {
    // Resolve all three first, so a missing one fails (or skips) before any setup.
    [
        tools::venv_tool("sslyze").is_some(),
        tools::system_tool("testssl", "testssl.sh").is_some(),
        tools::system_tool("nmap", "nmap").is_some(),
    ]
    .iter()
    .all(|x| *x)
}

#[test]
fn proxy_mesh_listener_is_graded_mutual_tls_with_only_the_policy_suites() {
    if !tools_present() {
        return;
    }
    let m = mesh(ferrule_tests::apps::Behaviour::Echo, "");
    let dir = tempfile::tempdir().unwrap();
    let cert = svid(&m.cp, dir.path());
    grade(&Target {
        name: "proxy inbound",
        addr: m.api_inbound,
        client_auth: "REQUIRED",
        cert: &cert,
        dir: dir.path(),
    });
    // The graders completed handshakes with a valid SVID but never as a mesh hop (no
    // ALPN ferrule/1, no hop header): nothing reached the application.
    assert_eq!(m.app.accepted(), 0, "a grader reached the app");
    assert!(
        m.api.log().contains("no_mesh_alpn"),
        "api did not log why it closed the graders' completed handshakes:\n{}",
        m.api.log()
    );
}

#[test]
fn control_plane_identity_api_is_graded_with_only_the_policy_suites() {
    if !tools_present() {
        return;
    }
    let cp = ControlPlane::start(CpOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = svid(&cp, dir.path());
    grade(&Target {
        name: "control plane identity API",
        addr: cp.addr,
        client_auth: "OPTIONAL",
        cert: &cert,
        dir: dir.path(),
    });
    assert!(cp.log().contains("identity API TLS handshake failed"));
}

#[test]
fn control_plane_injection_webhook_is_graded_with_only_the_policy_suites() {
    if !tools_present() {
        return;
    }
    let webhook: SocketAddr = format!("127.0.0.1:{}", ferrule_tests::process::free_port())
        .parse()
        .unwrap();
    let cp = ControlPlane::start(CpOptions {
        extra_args: vec![
            "--webhook-listen".into(),
            webhook.to_string(),
            "--inject-proxy-image".into(),
            "ferrule/proxy:graders".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    ferrule_tests::process::wait_for(Duration::from_secs(20), || {
        std::net::TcpStream::connect(webhook).ok()
    })
    .unwrap_or_else(|| panic!("webhook not listening:\n{}", cp.log()));
    let dir = tempfile::tempdir().unwrap();
    let cert = svid(&cp, dir.path());
    grade(&Target {
        name: "control plane injection webhook",
        addr: webhook,
        client_auth: "DISABLED",
        cert: &cert,
        dir: dir.path(),
    });
}

/// Runs the three graders against `t` and checks each report, then their union.
fn grade(t: &Target) {
    // The three run at once (each waits on the network far more than it computes).
    let (sslyze, testssl, nmap) = std::thread::scope(|s| {
        let a = s.spawn(|| sslyze(t));
        let b = s.spawn(|| testssl(t));
        let c = s.spawn(|| nmap(t));
        let join = |h: std::thread::ScopedJoinHandle<'_, Found>| {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        };
        (join(a), join(b), join(c))
    });
    let mut tls12 = BTreeSet::new();
    for f in [&sslyze, &testssl, &nmap] {
        tls12.extend(f.get("TLS_1_2"));
    }
    assert_eq!(
        tls12,
        set(&TLS12),
        "[{}] TLS 1.2 suites accepted across the graders",
        t.name
    );
}

/// Runs sslyze with `commands` (and the SVID as client certificate when `with_cert`);
/// returns its one server result after checking the scan completed.
fn sslyze_run(t: &Target, with_cert: bool, commands: &[&str]) -> Value {
    let out = t.dir.join(format!("sslyze-{with_cert}.json"));
    let mut cmd = Command::new(tools::venv_tool("sslyze").unwrap());
    cmd.arg("--quiet")
        .arg(format!("--json_out={}", out.display()))
        .args(["--mozilla_config", "disable"])
        .args(commands)
        .arg(t.addr.to_string());
    if with_cert {
        cmd.arg("--cert")
            .arg(&t.cert.cert_file)
            .arg("--key")
            .arg(&t.cert.key_file)
            .args(["--keyform", "PEM"]);
    }
    let ran = tools::run(cmd, Duration::from_secs(120));
    let report = read_json(&out, "sslyze", &ran);
    let server = report["server_scan_results"][0].clone();
    let ctx = format!("[{} / sslyze] {server:#}", t.name);
    assert_eq!(server["connectivity_status"], "COMPLETED", "{ctx}");
    assert_eq!(server["scan_status"], "COMPLETED", "{ctx}");
    assert_eq!(
        server["connectivity_result"]["highest_tls_version_supported"], "TLS_1_3",
        "{ctx}"
    );
    server
}

fn sslyze(t: &Target) -> Found {
    // sslyze detects the client-authentication requirement only when it holds no
    // certificate itself (with one, every handshake simply succeeds): one run without.
    // SSL 2.0 is probed here too: its OpenSSL 1.0.2 client cannot load a certificate
    // chain file, and an SSLv2 hello is refused before any certificate is asked for.
    let server = sslyze_run(t, false, &["--sslv2"]);
    assert_eq!(
        server["connectivity_result"]["client_auth_requirement"], t.client_auth,
        "[{}] sslyze without a client certificate: {server:#}",
        t.name
    );
    let sslv2 = &server["scan_result"]["ssl_2_0_cipher_suites"];
    assert_eq!(sslv2["status"], "COMPLETED", "[{}] {sslv2:#}", t.name);
    assert_eq!(
        sslv2["result"]["is_tls_version_supported"], false,
        "[{}] sslyze SSL 2.0: {sslv2:#}",
        t.name
    );
    assert_eq!(
        sslv2["result"]["accepted_cipher_suites"],
        Value::Array(vec![])
    );
    // Then the full scan, presenting the SVID.
    let server = sslyze_run(
        t,
        true,
        &[
            "--sslv3",
            "--tlsv1",
            "--tlsv1_1",
            "--tlsv1_2",
            "--tlsv1_3",
            "--elliptic_curves",
            "--compression",
            "--reneg",
            "--resum",
            "--heartbleed",
            "--openssl_ccs",
            "--robot",
            "--fallback",
            "--ems",
        ],
    );
    let scan = &server["scan_result"];
    let result = |cmd: &str| -> &Value {
        assert_eq!(
            scan[cmd]["status"], "COMPLETED",
            "[{}] sslyze {cmd}: {:#}",
            t.name, scan[cmd]
        );
        &scan[cmd]["result"]
    };
    let mut found = Found::default();
    for (cmd, version, supported) in [
        ("ssl_3_0_cipher_suites", "SSL_3_0", false),
        ("tls_1_0_cipher_suites", "TLS_1_0", false),
        ("tls_1_1_cipher_suites", "TLS_1_1", false),
        ("tls_1_2_cipher_suites", "TLS_1_2", true),
        ("tls_1_3_cipher_suites", "TLS_1_3", true),
    ] {
        let r = result(cmd);
        assert_eq!(
            r["is_tls_version_supported"], supported,
            "[{}] sslyze {version}: {r:#}",
            t.name
        );
        let names: BTreeSet<String> = r["accepted_cipher_suites"]
            .as_array()
            .expect("accepted_cipher_suites")
            .iter()
            .map(|s| s["cipher_suite"]["name"].as_str().unwrap().to_string())
            .collect();
        found.suites.insert(version.to_string(), names);
    }
    assert_eq!(found.get("TLS_1_3"), set(&TLS13), "[{}] sslyze", t.name);
    let tls12 = found.get("TLS_1_2");
    assert!(
        !tls12.is_empty() && tls12.is_subset(&set(&TLS12)),
        "[{}] sslyze TLS 1.2 suites {tls12:?} are not a non-empty subset of the policy",
        t.name
    );

    let curves: BTreeSet<String> = result("elliptic_curves")["supported_curves"]
        .as_array()
        .expect("supported_curves")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(curves, set(&CURVES), "[{}] sslyze groups", t.name);

    let expect = [
        (
            "tls_compression",
            "supports_compression",
            Value::from(false),
        ),
        ("heartbleed", "is_vulnerable_to_heartbleed", false.into()),
        (
            "openssl_ccs_injection",
            "is_vulnerable_to_ccs_injection",
            false.into(),
        ),
        (
            "robot",
            "robot_result",
            "NOT_VULNERABLE_RSA_NOT_SUPPORTED".into(),
        ),
        ("tls_fallback_scsv", "supports_fallback_scsv", true.into()),
        (
            "tls_extended_master_secret",
            "supports_ems_extension",
            true.into(),
        ),
        // Renegotiation: never accepted (rustls does not renegotiate); the RFC 5746
        // indication is still sent, which is what "secure renegotiation" reports.
        (
            "session_renegotiation",
            "is_vulnerable_to_client_renegotiation_dos",
            false.into(),
        ),
        (
            "session_renegotiation",
            "client_renegotiations_success_count",
            0.into(),
        ),
        // No resumption at all: a resumed session would skip verification against a
        // changed trust bundle (Envoy CVE-2022-21654). Without a resumable session there
        // is no 0-RTT either (sslyze's early-data probe needs a ticket first, and errors
        // out against the proxy, which closes a handshake that is not a mesh hop).
        (
            "session_resumption",
            "session_id_resumption_result",
            "NOT_SUPPORTED".into(),
        ),
        (
            "session_resumption",
            "tls_ticket_resumption_result",
            "NOT_SUPPORTED".into(),
        ),
    ];
    for (cmd, field, want) in expect {
        let r = result(cmd);
        assert_eq!(r[field], want, "[{}] sslyze {cmd}.{field}: {r:#}", t.name);
    }
    found
}

fn testssl(t: &Target) -> Found {
    let out = t.dir.join("testssl.json");
    // testssl.sh 3.0 (Debian 12) predates its --mtls option: an OpenSSL wrapper gives its
    // s_client the SVID, and --ssl-native routes every probe through it (OpenSSL 3 also
    // sends the extended-master-secret extension that TLS 1.2 requires here).
    let wrapper = t.dir.join("openssl-with-svid");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = s_client ]; then shift; exec openssl s_client -cert '{c}' -cert_chain '{c}' -key '{k}' \"$@\"; fi\nexec openssl \"$@\"\n",
            c = t.cert.cert_file.display(),
            k = t.cert.key_file.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();

    let mut cmd = Command::new(tools::system_tool("testssl", "testssl.sh").unwrap());
    cmd.arg("--openssl")
        .arg(&wrapper)
        .args([
            "--ssl-native",
            "--quiet",
            "--warnings",
            "off",
            "--color",
            "0",
        ])
        .args([
            "--nodns",
            "none",
            "--connect-timeout",
            "5",
            "--openssl-timeout",
            "5",
        ])
        .args(["--protocols", "--cipher-per-proto"])
        .arg("--jsonfile")
        .arg(&out)
        .arg(t.addr.to_string());
    let ran = tools::run(cmd, Duration::from_secs(180));
    let report = read_json(&out, "testssl.sh", &ran);
    let findings: BTreeMap<String, String> = report
        .as_array()
        .expect("testssl.sh writes a JSON array")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_default().to_string(),
                e["finding"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let ctx = format!("[{} / testssl.sh] {findings:#?}", t.name);
    for (id, want) in [
        ("TLS1", "not offered"),
        ("TLS1_1", "not offered"),
        ("TLS1_2", "offered"),
        ("TLS1_3", "offered"),
    ] {
        assert_eq!(
            findings.get(id).map(String::as_str),
            Some(want),
            "{id}: {ctx}"
        );
    }
    // OpenSSL 3 cannot speak SSLv2/3 at all (sslyze's own SSLv2/3 probes cover those);
    // they must not be reported offered.
    for id in ["SSLv2", "SSLv3"] {
        let f = findings.get(id).map(String::as_str).unwrap_or("");
        assert!(!f.starts_with("offered"), "{id}: {ctx}");
    }
    // `cipher-tls1_2_xc02c` → "... TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" (IANA last).
    let mut found = Found::default();
    for (id, finding) in &findings {
        let Some(rest) = id.strip_prefix("cipher-") else {
            continue;
        };
        let version = [
            ("tls1_3_", "TLS_1_3"),
            ("tls1_2_", "TLS_1_2"),
            ("tls1_1_", "TLS_1_1"),
            ("tls1_", "TLS_1_0"),
            ("ssl3_", "SSL_3_0"),
            ("ssl2_", "SSL_2_0"),
        ]
        .iter()
        .find(|(prefix, _)| rest.starts_with(prefix))
        .map_or(rest, |(_, v)| v);
        let iana = finding.split_whitespace().last().unwrap_or("").to_string();
        found.suites.entry(version.into()).or_default().insert(iana);
    }
    let versions: BTreeSet<&String> = found.suites.keys().collect();
    assert_eq!(
        versions,
        ["TLS_1_2".to_string(), "TLS_1_3".to_string()]
            .iter()
            .collect(),
        "{ctx}"
    );
    assert_eq!(found.get("TLS_1_3"), set(&TLS13), "{ctx}");
    assert_eq!(found.get("TLS_1_2"), set(&TLS12), "{ctx}");
    found
}

fn nmap(t: &Target) -> Found {
    let out = t.dir.join("nmap.xml");
    let mut cmd = Command::new(tools::system_tool("nmap", "nmap").unwrap());
    // -sT: a plain connect() scan (no raw packets); -n: no DNS; -Pn: no host discovery.
    cmd.args(["-sT", "-n", "-Pn", "-p", &t.addr.port().to_string()])
        .args(["--script", "ssl-enum-ciphers", "-oX"])
        .arg(&out)
        .arg(t.addr.ip().to_string());
    let ran = tools::run(cmd, Duration::from_secs(120));
    assert!(ran.output.status.success(), "[{}] nmap: {ran:#?}", t.name);
    let xml = std::fs::read_to_string(&out).unwrap();
    // nmap's report starts with a DOCTYPE (no entities are used).
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&xml, opts).expect("nmap XML");
    let script = doc
        .descendants()
        .find(|n| n.has_tag_name("script") && n.attribute("id") == Some("ssl-enum-ciphers"))
        .unwrap_or_else(|| panic!("[{}] no ssl-enum-ciphers output: {xml}", t.name));
    let ctx = format!(
        "[{} / nmap] {}",
        t.name,
        script.attribute("output").unwrap_or("")
    );
    let mut found = Found::default();
    for table in script.children().filter(|n| n.has_tag_name("table")) {
        let key = table.attribute("key").unwrap_or("");
        let version = match key {
            "TLSv1.3" => "TLS_1_3",
            "TLSv1.2" => "TLS_1_2",
            other => other,
        };
        let ciphers = table
            .children()
            .find(|n| n.has_tag_name("table") && n.attribute("key") == Some("ciphers"));
        let names = ciphers
            .into_iter()
            .flat_map(|c| c.descendants())
            .filter(|n| n.has_tag_name("elem") && n.attribute("key") == Some("name"))
            .filter_map(|n| n.text())
            // nmap names TLS 1.3 suites "TLS_AKE_WITH_<AEAD>_<HASH>".
            .map(|s| s.replace("TLS_AKE_WITH_", "TLS_"))
            .collect();
        found.suites.insert(version.to_string(), names);
    }
    // TLS 1.3 exactly; TLS 1.2 is invisible to nmap (no extended master secret in its
    // ClientHello) and nothing older may appear.
    let versions: Vec<&String> = found.suites.keys().collect();
    assert_eq!(versions, vec!["TLS_1_3"], "{ctx}");
    assert_eq!(found.get("TLS_1_3"), set(&TLS13), "{ctx}");
    found
}

fn read_json(path: &Path, tool: &str, ran: &Ran) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{tool} wrote no report ({e}): {ran:#?}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{tool} report is not JSON ({e}): {text}"))
}
