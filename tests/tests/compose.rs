//! The Docker Compose demo (`deploy/compose/`) on the real Docker engine, driven the way a
//! user drives it: `demo.sh up`, look at the containers, `demo.sh down`.
//!
//! From a clean state it checks that
//! * the web app's calls reach api through the mesh ("200 OK hello from api");
//! * what crosses the network between the two pods is TLS 1.3 with ALPN `ferrule/1`, and
//!   nothing else: tcpdump in the api pod's network namespace (`nsenter`) sees only
//!   TLS records on the mesh port, never the HTTP the apps speak; and api's sidecar counts
//!   its inbound connections as mTLS from web's SPIFFE ID;
//! * with the control plane's container killed, calls keep succeeding for 10 s (the
//!   sidecars have their certificates and discovery data), and after it is started again
//!   both sidecars reconnect (`control_plane_connected`, `/ready`) and calls still succeed;
//! * `demo.sh down` leaves no container, network, volume or image of the project behind.
//!
//! It uses its own Compose project name (`ferrule-test-<pid>`), so it never touches a
//! demo a user is running and concurrent runs do not collide. Skipped, with the reason
//! printed, where Docker or Compose is unavailable, or with `FERRULE_SKIP_DOCKER_TESTS=1`.
//! `demo.sh up` runs the static release build (`target/compose`): minutes when cold,
//! about a second when warm.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferrule_tests::pcap::{Segment, contains, tcp_segments};

const WEB_ID: &str = "spiffe://demo.local/ns/default/sa/web";
const MESH_PORT: u16 = 15006;

fn demo_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose/demo.sh")
}

/// Why Docker cannot be used here, if it cannot.
fn docker_unavailable() -> Option<String> {
    if std::env::var_os("FERRULE_SKIP_DOCKER_TESTS").is_some_and(|v| v == "1") {
        return Some("FERRULE_SKIP_DOCKER_TESTS=1".into());
    }
    let ok = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok("docker", &["version", "--format", "{{.Client.Version}}"]) {
        return Some("the docker command is not installed".into());
    }
    if !ok("docker", &["info"]) {
        return Some("the Docker daemon is not reachable".into());
    }
    if !ok("docker", &["compose", "version"]) && !ok("docker-compose", &["version"]) {
        return Some("neither `docker compose` nor `docker-compose` is installed".into());
    }
    None
}

fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// stdout of a docker command that must succeed.
fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The demo under test: one Compose project, taken down on drop (with the services' logs
/// printed first if the test is failing).
struct Demo {
    project: String,
    down_done: bool,
}

impl Demo {
    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.project)
    }

    /// `demo.sh <args>` for this project; output is passed through to the test's output.
    fn sh(&self, args: &[&str]) -> std::process::ExitStatus {
        Command::new(demo_sh())
            .args(args)
            .env("FERRULE_COMPOSE_PROJECT", &self.project)
            .stdin(Stdio::null())
            .status()
            .expect("run deploy/compose/demo.sh")
    }

    /// `demo.sh ctl <args>` with `stdin` fed to ferrulectl.
    fn ctl_stdin(&self, args: &[&str], stdin: &[u8]) -> std::process::ExitStatus {
        use std::io::Write;
        let mut child = Command::new(demo_sh())
            .arg("ctl")
            .args(args)
            .env("FERRULE_COMPOSE_PROJECT", &self.project)
            .stdin(Stdio::piped())
            .spawn()
            .expect("run deploy/compose/demo.sh ctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        child.wait().expect("demo.sh ctl exits")
    }

    /// Like `expect_successful_calls`, but calls may fail until the first success (a
    /// policy change takes a moment to reach the caller).
    fn expect_successful_calls_eventually(
        &self,
        after: u64,
        n: u64,
        timeout: Duration,
        what: &str,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let calls: Vec<_> = self.calls().into_iter().filter(|c| c.0 > after).collect();
            let ok = calls.iter().skip_while(|c| !c.1).collect::<Vec<_>>();
            if ok.len() as u64 >= n && ok.iter().all(|c| c.1) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: calls after {after}: {calls:#?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The container of a Compose service.
    fn container(&self, service: &str) -> String {
        let id = docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &self.label(),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--filter",
            "label=com.docker.compose.oneoff=False",
        ]);
        assert!(
            !id.is_empty() && !id.contains('\n'),
            "container of {service}: {id:?}"
        );
        id
    }

    /// GET on a sidecar's admin endpoint (pod loopback :15000), from inside the pod with
    /// the project's ferrulectl image: (succeeded, body).
    fn admin_get(&self, service: &str, path: &str) -> (bool, String) {
        let net = format!("container:{}", self.container(service));
        let image = format!("{}/ferrulectl:dev", self.project);
        let label = format!("com.docker.compose.project={}", self.project);
        let o = docker(&[
            "run",
            "--rm",
            "--network",
            &net,
            "--user",
            "65534:65534",
            "--label",
            &label,
            &image,
            "demo",
            "call",
            "--target",
            "127.0.0.1:15000",
            "--path",
            path,
            "--count",
            "1",
        ]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        // "call 1: 200 OK <body> (N ms)"
        let body = out
            .split_once(" OK ")
            .map(|(_, b)| b.rsplit_once(" (").map_or(b, |(b, _)| b).to_string())
            .unwrap_or_else(|| text(&o));
        (o.status.success(), body)
    }

    /// The sidecar's `/identity` JSON.
    fn identity(&self, service: &str) -> Option<serde_json::Value> {
        let (ok, body) = self.admin_get(service, "/identity");
        ok.then(|| serde_json::from_str(&body).ok()).flatten()
    }

    /// The web app's calls so far: (number, succeeded, line).
    fn calls(&self) -> Vec<(u64, bool, String)> {
        let o = docker(&["logs", &self.container("web")]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("call ")?;
                let (n, what) = rest.split_once(": ")?;
                Some((
                    n.parse().ok()?,
                    what.starts_with("200 OK hello from api"),
                    l.to_string(),
                ))
            })
            .collect()
    }

    fn last_call(&self) -> u64 {
        self.calls().last().map_or(0, |c| c.0)
    }

    /// Waits until `n` calls after call `after` have been made; all of them must succeed.
    fn expect_successful_calls(&self, after: u64, n: u64, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let calls: Vec<_> = self.calls().into_iter().filter(|c| c.0 > after).collect();
            let failed: Vec<_> = calls.iter().filter(|c| !c.1).map(|c| &c.2).collect();
            assert!(failed.is_empty(), "{what}: calls failed: {failed:#?}");
            if calls.len() as u64 >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: only {} calls after call {after} within {timeout:?}",
                calls.len()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn ip(&self, service: &str) -> String {
        docker_ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.container(service),
        ])
    }

    /// Everything of the project Docker still has: containers, networks, volumes, images.
    fn leftovers(&self) -> Vec<String> {
        let label = self.label();
        let mut left = Vec::new();
        for (what, args) in [
            (
                "container",
                vec!["ps", "-a", "--format", "{{.Names}}", "--filter", &label],
            ),
            (
                "network",
                vec!["network", "ls", "--format", "{{.Name}}", "--filter", &label],
            ),
            (
                "volume",
                vec!["volume", "ls", "--format", "{{.Name}}", "--filter", &label],
            ),
            (
                "image",
                vec![
                    "image",
                    "ls",
                    "--format",
                    "{{.Repository}}:{{.Tag}}",
                    "--filter",
                    &label,
                ],
            ),
        ] {
            for name in docker_ok(&args).lines().filter(|l| !l.is_empty()) {
                left.push(format!("{what} {name}"));
            }
        }
        // Images by name too, in case a label was lost.
        let images = docker_ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        for name in images.lines() {
            if name.starts_with(&format!("{}/", self.project))
                && !left.iter().any(|l| l.ends_with(name))
            {
                left.push(format!("image {name}"));
            }
        }
        left
    }

    fn dump_logs(&self) {
        for service in ["control-plane", "api-proxy", "api", "web-proxy", "web"] {
            let ids = docker_ok(&[
                "ps",
                "-aq",
                "--filter",
                &self.label(),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ]);
            for id in ids.lines() {
                eprintln!(
                    "----- {service} ({id}) -----\n{}",
                    text(&docker(&["logs", "--tail", "40", id]))
                );
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.down_done {
            return;
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.sh(&["down"]);
    }
}

/// A TLS stream of one direction: the records' (type, first payload byte) or an error.
fn tls_records(stream: &[u8]) -> Result<Vec<(u8, u8)>, String> {
    let mut at = 0;
    let mut records = Vec::new();
    while at < stream.len() {
        let Some(h) = stream.get(at..at + 5) else {
            return Err(format!("truncated record header at byte {at}"));
        };
        let (kind, version, len) = (
            h[0],
            [h[1], h[2]],
            usize::from(u16::from_be_bytes([h[3], h[4]])),
        );
        if !(0x14..=0x17).contains(&kind) || !matches!(version, [0x03, 0x01] | [0x03, 0x03]) {
            return Err(format!("not a TLS record at byte {at}: {:02x?}", h));
        }
        if len > 16384 + 256 {
            return Err(format!("record of {len} bytes at byte {at}"));
        }
        // The capture may stop in the middle of the last record.
        records.push((kind, stream.get(at + 5).copied().unwrap_or(0)));
        at += 5 + len;
    }
    Ok(records)
}

/// What crossed the api pod's interface, per TCP connection to the mesh port:
/// (client → server bytes, server → client bytes).
type Streams = BTreeMap<(SocketAddr, SocketAddr), (Vec<u8>, Vec<u8>)>;

/// Checks a capture of the api pod's traffic (control-plane traffic excluded): nothing but
/// TLS on the mesh port, TLS 1.3 with ALPN ferrule/1, from web's pod.
fn check_wire(segments: &[Segment], web_ip: &str, api_ip: &str) -> String {
    assert!(
        !segments.is_empty(),
        "nothing captured on the api pod's interface"
    );
    let mut streams = Streams::new();
    for s in segments {
        for marker in [&b"hello from api"[..], b"GET /", b"HTTP/1.1"] {
            assert!(
                !contains(&s.payload, marker),
                "plaintext {:?} on the wire: {} -> {}",
                String::from_utf8_lossy(marker),
                s.src,
                s.dst
            );
        }
        if s.dst.port() == MESH_PORT {
            streams
                .entry((s.src, s.dst))
                .or_default()
                .0
                .extend(&s.payload);
        } else if s.src.port() == MESH_PORT {
            streams
                .entry((s.dst, s.src))
                .or_default()
                .1
                .extend(&s.payload);
        } else {
            panic!(
                "unexpected traffic between the pods (not the mesh port): {} -> {}",
                s.src, s.dst
            );
        }
    }
    let mut full = 0;
    let mut pooled = 0;
    let mut bytes = 0;
    for ((client, server), (up, down)) in &streams {
        assert_eq!(
            client.ip().to_string(),
            web_ip,
            "a mesh connection not from web's pod"
        );
        assert_eq!(server.ip().to_string(), api_ip);
        bytes += up.len() + down.len();
        // Connections already open when the capture started are only checked for plaintext,
        // and counted when they carry TLS application data both ways: web's proxy keeps one
        // pooled mesh connection (ALPN ferrule/2) to api for all its calls.
        let starts_with_hello = up.len() > 5 && up[0] == 0x16 && up[5] == 0x01;
        if !starts_with_hello {
            let app_data = |s: &[u8]| s.len() > 5 && s[..3] == [0x17, 0x03, 0x03];
            if app_data(up) && app_data(down) {
                pooled += 1;
            }
            continue;
        }
        let ups = tls_records(up).unwrap_or_else(|e| panic!("{client} -> {server}: {e}"));
        let downs = tls_records(down).unwrap_or_else(|e| panic!("{server} -> {client}: {e}"));
        assert!(
            contains(up, b"ferrule/1"),
            "ClientHello without ALPN ferrule/1"
        );
        assert!(
            down.len() > 5 && down[0] == 0x16 && down[5] == 0x02,
            "the server did not answer with a ServerHello"
        );
        // The ServerHello's supported_versions extension selects TLS 1.3 (it follows the
        // hybrid key share, so search the whole record).
        let hello_len = 5 + usize::from(u16::from_be_bytes([down[3], down[4]]));
        assert!(
            contains(
                &down[..hello_len.min(down.len())],
                &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]
            ),
            "the server did not select TLS 1.3"
        );
        if down.is_empty() || !ups.iter().any(|r| r.0 == 0x17) || !downs.iter().any(|r| r.0 == 0x17)
        {
            continue; // cut off by the end of the capture
        }
        full += 1;
    }
    assert!(
        full + pooled >= 1,
        "expected mesh connections carrying the calls in the capture, got {full} complete and {pooled} pooled ({} streams)",
        streams.len()
    );
    format!(
        "{} connections web({web_ip}) -> api({api_ip}):{MESH_PORT}, {full} complete TLS 1.3 (ALPN ferrule/1, ferrule/2) sessions, {pooled} pooled ones opened earlier, {bytes} bytes, no plaintext",
        streams.len()
    )
}

/// tcpdump inside the api pod's network namespace, from the host (`nsenter -n`; the
/// scratch images have no tcpdump). `None`, with the reason printed, where that is not
/// possible.
fn capture_api_pod(demo: &Demo, secs: u64) -> Option<Vec<Segment>> {
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let root = run(Command::new("id").arg("-u")).stdout == b"0\n";
    if !root || !have("tcpdump") || !have("nsenter") {
        eprintln!(
            "SKIPPING the on-the-wire check: needs root, tcpdump and nsenter (root={root}, tcpdump={}, nsenter={})",
            have("tcpdump"),
            have("nsenter")
        );
        return None;
    }
    let pid = docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Pid}}",
        &demo.container("api-proxy"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-pod.pcap");
    // Everything TCP on the pod's interface except the control-plane session (also TLS):
    // the mesh port, and anything else that should not be there.
    let mut child = Command::new("nsenter")
        .args([
            "-t", &pid, "-n", "tcpdump", "-Z", "root", "-U", "-n", "-s", "0", "-i", "eth0", "-w",
        ])
        .arg(&file)
        .args(["tcp and not port 8443"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nsenter tcpdump");
    std::thread::sleep(Duration::from_secs(secs));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let bytes = std::fs::read(&file).expect("read the capture");
    Some(tcp_segments(&bytes).expect("parse the capture"))
}

#[test]
fn compose_demo_mtls_outage_and_cleanup() {
    if let Some(why) = docker_unavailable() {
        eprintln!("SKIPPING the Docker Compose demo test: {why}");
        return;
    }
    let started = Instant::now();
    let mut demo = Demo {
        project: format!("ferrule-test-{}", std::process::id()),
        down_done: false,
    };
    let phase = |name: &str, t: Instant| {
        eprintln!("[compose test] {name}: {:.1} s", t.elapsed().as_secs_f64())
    };

    // A clean state: nothing of this project exists.
    assert_eq!(
        demo.leftovers(),
        Vec::<String>::new(),
        "leftovers before the test"
    );

    // --- up ---------------------------------------------------------------------------
    let t = Instant::now();
    assert!(demo.sh(&["up"]).success(), "demo.sh up failed");
    phase("demo.sh up (static build + images + compose)", t);

    // --- calls succeed through the mesh -------------------------------------------------
    let t = Instant::now();
    demo.expect_successful_calls(demo.last_call(), 3, Duration::from_secs(30), "after up");
    assert!(
        demo.calls()
            .iter()
            .any(|c| c.2.contains("200 OK hello from api")),
        "web's log shows no successful call"
    );
    phase("calls through the mesh", t);

    // --- the traffic between the pods is mTLS --------------------------------------------
    let t = Instant::now();
    if let Some(segments) = capture_api_pod(&demo, 6) {
        let summary = check_wire(&segments, &demo.ip("web-proxy"), &demo.ip("api-proxy"));
        eprintln!("[compose test] on the wire: {summary}");
    }
    // The api sidecar's own accounting: inbound connections authenticated as web, mTLS.
    let (ok, metrics) = demo.admin_get("api-proxy", "/metrics");
    assert!(ok, "api sidecar /metrics: {metrics}");
    let mtls_from_web = metrics.lines().find(|l| {
        l.starts_with("ferrule_proxy_connections_opened_total{")
            && l.contains("direction=\"inbound\"")
            && l.contains(&format!("peer=\"{WEB_ID}\""))
            && l.contains("tls=\"mtls\"")
    });
    let count: u64 = mtls_from_web
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        count >= 3,
        "api sidecar counted {count} inbound mTLS connections from web:\n{metrics}"
    );
    phase("mTLS checks", t);

    // --- the control plane goes away: traffic keeps flowing -----------------------------
    let t = Instant::now();
    let cp = demo.container("control-plane");
    docker_ok(&["kill", &cp]);
    let killed_at = demo.last_call();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &cp]),
        "false"
    );
    // The sidecars noticed, and still have what they need.
    for sidecar in ["api-proxy", "web-proxy"] {
        let id = demo
            .identity(sidecar)
            .expect("sidecar /identity during the outage");
        assert_eq!(id["control_plane_connected"], false, "{sidecar}: {id}");
    }
    demo.expect_successful_calls(killed_at, 8, Duration::from_secs(5), "control plane down");
    phase("10 s without the control plane", t);

    // --- it comes back: the mesh converges ----------------------------------------------
    let t = Instant::now();
    docker_ok(&["start", &cp]);
    let deadline = Instant::now() + Duration::from_secs(90);
    for sidecar in ["api-proxy", "web-proxy"] {
        loop {
            let connected = demo
                .identity(sidecar)
                .is_some_and(|id| id["control_plane_connected"] == true);
            if connected && demo.admin_get(sidecar, "/ready").0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{sidecar} did not reconnect to the control plane"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    demo.expect_successful_calls(
        demo.last_call(),
        3,
        Duration::from_secs(20),
        "after the restart",
    );
    phase("control plane restarted, sidecars reconnected", t);

    // --- a DENY policy refuses web's calls; deleting it restores them -------------------
    let t = Instant::now();
    let policy = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose/policies/deny-web.yaml"),
    )
    .unwrap();
    assert!(
        demo.ctl_stdin(&["apply", "-f", "-"], &policy).success(),
        "ferrulectl apply failed"
    );
    let refused = wait_until(Duration::from_secs(30), || {
        let after = demo.last_call();
        std::thread::sleep(Duration::from_millis(1500));
        let calls: Vec<_> = demo.calls().into_iter().filter(|c| c.0 > after).collect();
        (!calls.is_empty() && calls.iter().all(|c| c.2.contains("403"))).then_some(())
    });
    assert!(
        refused.is_some(),
        "web's calls were not refused after the DENY: {:#?}",
        demo.calls().iter().rev().take(5).collect::<Vec<_>>()
    );
    let (_, metrics) = demo.admin_get("api-proxy", "/metrics");
    assert!(
        metrics.contains("decision=\"deny\",policy=\"deny-web\""),
        "api's sidecar did not count the denial"
    );
    assert!(
        demo.ctl_stdin(&["delete", "deny-web"], b"").success(),
        "ferrulectl delete failed"
    );
    let after = demo.last_call();
    demo.expect_successful_calls_eventually(
        after,
        3,
        Duration::from_secs(30),
        "after deleting the DENY",
    );
    phase("DENY policy and recovery", t);

    // --- down leaves nothing behind ------------------------------------------------------
    let t = Instant::now();
    demo.down_done = true;
    assert!(demo.sh(&["down"]).success(), "demo.sh down failed");
    let left = demo.leftovers();
    assert!(left.is_empty(), "demo.sh down left these behind: {left:#?}");
    phase("demo.sh down", t);
    phase("whole test", started);
}
