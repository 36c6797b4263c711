//! The sidecar injection webhook, served by the real `ferrule-control-plane` binary over
//! HTTPS and called the way the API server calls it: `POST /inject` with an
//! AdmissionReview, the server verified against the MutatingWebhookConfiguration's
//! `caBundle` (printed by `ferrulectl webhook ca-bundle`) under the Service's DNS name.
//! The client is curl (OpenSSL), a TLS stack independent of ours, with `--resolve`
//! pointing the webhook's DNS name at loopback.
//!
//! The injected pod is then checked against the real proxy: the init container's
//! arguments parse and validate with `ferrule-proxy init`'s own parser, the env names are
//! flags `ferrule-proxy run` knows, and the config file and trust bundle written into
//! the pod's annotations load with the proxy's own loaders.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use clap::{CommandFactory, Parser};
use ferrule_tests::process::{free_port, wait_for};
use ferrule_tests::{ControlPlane, CpOptions};
use serde_json::{Value, json};

const DNS_NAME: &str = "ferrule-webhook.ferrule-system.svc";
const DEPLOYMENT_POD: &str =
    include_str!("../../control-plane/src/kubernetes/inject/testdata/deployment-pod.json");

struct Webhook {
    cp: ControlPlane,
    addr: SocketAddr,
}

impl Webhook {
    fn start() -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cp = ControlPlane::start(CpOptions {
            trust_domain: "cluster.local".into(),
            extra_args: vec![
                "--webhook-listen".into(),
                addr.to_string(),
                "--inject-proxy-image".into(),
                "ferrule/proxy:e2e".into(),
            ],
            ..CpOptions::default()
        })
        .unwrap();
        let wh = Self { cp, addr };
        let ca = wh.ca_bundle_file("ca.pem");
        let up = wait_for(Duration::from_secs(20), || {
            let out = wh.curl(&ca, DNS_NAME, "/healthz", &[]);
            (out.status.success() && stdout(&out).starts_with("ok")).then_some(())
        });
        assert!(up.is_some(), "webhook not serving; log:\n{}", wh.cp.log());
        wh
    }

    /// `ferrulectl webhook ca-bundle`, decoded from base64 as the API server does, written
    /// to a file for curl.
    fn ca_bundle_file(&self, name: &str) -> PathBuf {
        let b64 = self.cp.ctl_ok(&["webhook", "ca-bundle"]).unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .expect("caBundle is base64");
        let path = self.cp.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// curl to `https://<name>:<port><path>` with `name` resolved to the webhook;
    /// stdout ends with the HTTP status on its own line.
    fn curl(&self, ca: &Path, name: &str, path: &str, extra: &[&str]) -> Output {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(ca)
            .arg("--resolve")
            .arg(format!("{name}:{}:127.0.0.1", self.addr.port()))
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("https://{name}:{}{path}", self.addr.port()))
            .output()
            .expect("curl runs")
    }

    /// POSTs `body` to /inject; returns (HTTP status, body).
    fn post(&self, ca: &Path, body: &[u8], content_type: &str) -> (u16, String) {
        let file = self.cp.dir.path().join("request.json");
        std::fs::write(&file, body).unwrap();
        let data = format!("@{}", file.display());
        let ctype = format!("Content-Type: {content_type}");
        let out = self.curl(
            ca,
            DNS_NAME,
            "/inject?timeout=10s",
            &["-X", "POST", "-H", &ctype, "--data-binary", &data],
        );
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        split_status(&stdout(&out))
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn split_status(s: &str) -> (u16, String) {
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", s));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The init container's `args` as the kubelet runs them: every `$(VAR)` replaced with
/// the value of the container's variable `VAR` (a downward-API `fieldRef` resolved from
/// `fields`), `$$` with `$`, and a reference to an undefined variable left as written
/// (Kubernetes' expansion rules for `command` and `args`).
fn kubelet_args(container: &Value, fields: &[(&str, &str)]) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e.pointer("/valueFrom/fieldRef/fieldPath") {
            Some(path) => {
                let path = path.as_str().unwrap();
                let (_, v) = fields
                    .iter()
                    .find(|(f, _)| *f == path)
                    .unwrap_or_else(|| panic!("the test gives no value for fieldRef {path}"));
                v.to_string()
            }
            None => e["value"].as_str().unwrap_or_default().to_string(),
        };
        vars.push((name, value));
    }
    let expand = |arg: &str| {
        let mut out = String::new();
        let mut rest = arg;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("$$") {
                out.push('$');
                rest = t;
            } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
                let name = &tail[2..2 + end];
                match vars.iter().find(|(n, _)| n == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&tail[..end + 3]),
                }
                rest = &tail[end + 3..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    };
    serde_json::from_value::<Vec<String>>(container["args"].clone())
        .unwrap()
        .iter()
        .map(|a| expand(a))
        .collect()
}

/// Parses and validates `args` with `ferrule-proxy init`'s own parser.
fn parse_init(args: &[String]) -> Result<ferrule_proxy::intercept::InitConfig, String> {
    let cli = ferrule_proxy::config::Cli::try_parse_from(
        std::iter::once("ferrule-proxy".to_string()).chain(args.iter().cloned()),
    )
    .map_err(|e| e.to_string())?;
    let ferrule_proxy::config::Command::Init(init) = cli.command else {
        panic!("not init: {args:?}")
    };
    init.validate().map_err(|e| e.to_string())
}

fn decode_patch(response: &Value) -> json_patch::Patch {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn the_control_plane_injects_over_https_verified_against_the_ca_bundle() {
    let wh = Webhook::start();
    let ca = wh.ca_bundle_file("ca.pem");
    // The caBundle is the trust bundle the control plane publishes.
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        std::fs::read(wh.cp.bundle_file()).unwrap()
    );

    let review: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
    let (status, body) = wh.post(&ca, DEPLOYMENT_POD.as_bytes(), "application/json");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");

    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &decode_patch(response)).expect("the patch applies");
    let inits = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits[0]["name"], "ferrule-init");
    assert_eq!(inits[1]["name"], "ferrule-proxy");
    assert_eq!(inits[1]["image"], "ferrule/proxy:e2e");

    // The init step's arguments, as the kubelet expands them, are what `ferrule-proxy
    // init` accepts: the probe ports of the Deployment's pod exempted for the node only.
    let fields = [
        ("status.hostIP", "172.18.0.2"),
        ("status.hostIPs", "172.18.0.2,fd00:18::2"),
    ];
    let args = kubelet_args(&inits[0], &fields);
    let init = parse_init(&args).unwrap_or_else(|e| panic!("ferrule-proxy {args:?}: {e}"));
    assert_eq!(init.proxy_uid, 1337);
    assert!(init.skip_inbound_ports.is_empty(), "{args:?}");
    assert_eq!(init.probe_ports, [8080, 8081, 8082, 9901]);
    let sources: Vec<String> = init.probe_sources.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        sources,
        [
            "172.18.0.2/32",
            "172.18.0.2/32",
            "fd00:18::2/128",
            "gateway"
        ]
    );
    assert!(init.inbound && init.outbound);
    // Fail closed: a node address the kubelet could not give (empty) exempts nothing more,
    // and a variable the container does not define is refused (exit 64).
    let args = kubelet_args(&inits[0], &[("status.hostIP", ""), ("status.hostIPs", "")]);
    let sources: Vec<String> = parse_init(&args)
        .unwrap()
        .probe_sources
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(sources, ["gateway"]);
    let mut undefined = inits[0].clone();
    undefined["env"] = json!([]);
    let err = parse_init(&kubelet_args(&undefined, &[])).unwrap_err();
    assert!(
        err.contains("--probe-sources") && err.contains("unexpanded"),
        "{err}"
    );

    // Every FERRULE_* variable of the proxy container is one `ferrule-proxy run` reads.
    let cmd = ferrule_proxy::config::Cli::command();
    let run = cmd.find_subcommand("run").unwrap();
    let known: Vec<String> = run
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for e in inits[1]["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        if name.starts_with("FERRULE_") {
            assert!(
                known.iter().any(|k| k == name),
                "{name} unknown to ferrule-proxy run: {known:?}"
            );
        }
    }

    // The files the downward-API volume makes from the annotations load in the proxy.
    let ann = &pod["metadata"]["annotations"];
    let yaml = ann["ferrule.dev/proxy-config"].as_str().unwrap();
    let file = ferrule_proxy::config::file::FileConfig::parse(yaml)
        .unwrap_or_else(|e| panic!("proxy.yaml: {e:?}\n{yaml}"));
    assert_eq!(file.mode, ferrule_proxy::config::file::Mode::Transparent);
    let bundle = ann["ferrule.dev/trust-bundle"].as_str().unwrap();
    assert_eq!(bundle.as_bytes(), std::fs::read(&ca).unwrap());
    ferrule_tls::TrustBundle::from_pem(
        ferrule_tls::TrustDomain::new("cluster.local").unwrap(),
        bundle.as_bytes(),
        0,
    )
    .expect("the stamped bundle loads");

    // Re-injecting the injected pod changes nothing.
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let (status, body) = wh.post(
        &ca,
        &serde_json::to_vec(&again).unwrap(),
        "application/json",
    );
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none(), "{answer:#}");

    // The probe port that is also the app's serving port is called out, to the creator
    // (admission warning) and to the operator (log).
    let warning = response["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("port 8080"), "{response:#}");
    let log = wh.cp.log();
    assert!(
        log.contains("sidecar injection") && log.contains("api-7d9c5b8f6b-"),
        "{log}"
    );
    assert!(
        log.contains("sidecar injection warning") && log.contains("port 8080"),
        "{log}"
    );
}

/// The injected `ferrule-init`, with its exact arguments as the kubelet expands them, in
/// a pod network namespace wired like a CNI does it: the pod's default gateway is the
/// node's address on the pod link (bridge and point-to-point CNIs), and the node's
/// primary addresses (`status.hostIP(s)`) sit elsewhere on the node. Plaintext from the
/// node reaches the app's probe ports directly, from either address and both families;
/// the same ports from another pod, and any other port, go to the proxy's inbound port.
#[test]
fn the_injected_init_step_exempts_probe_ports_for_the_node_only() {
    ferrule_tests::require_netns!();
    use std::io::{self, Read, Write};
    use std::net::{IpAddr, Ipv6Addr, TcpListener, TcpStream};
    use std::time::Instant;

    use ferrule_proxy::intercept::original_dst_fd;
    use ferrule_tests::netns::{NetNs, connect_from, veth};

    let wh = Webhook::start();
    let ca = wh.ca_bundle_file("ca.pem");
    let (status, body) = wh.post(&ca, DEPLOYMENT_POD.as_bytes(), "application/json");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let mut pod: Value =
        serde_json::from_str::<Value>(DEPLOYMENT_POD).unwrap()["request"]["object"].clone();
    json_patch::patch(&mut pod, &decode_patch(&answer["response"])).unwrap();

    let pod_ns = NetNs::new("pod").unwrap();
    let node_ns = NetNs::new("node").unwrap();
    let other_ns = NetNs::new("otherpod").unwrap();
    let node_link = veth(&pod_ns, &node_ns, 9).unwrap();
    let other_link = veth(&pod_ns, &other_ns, 10).unwrap();
    // The node's primary addresses, and the pod's default routes through the node.
    let host_v4: IpAddr = "172.18.0.2".parse().unwrap();
    let host_v6: IpAddr = "fd00:18::2".parse().unwrap();
    for (addr, prefix) in [(host_v4, 32), (host_v6, 128)] {
        let cidr = format!("{addr}/{prefix}");
        node_ns
            .run("ip", ["addr", "add", cidr.as_str(), "dev", "lo", "nodad"])
            .unwrap();
    }
    let gw_v4 = node_link.b.v4.to_string();
    let gw_v6 = node_link.b.v6.to_string();
    pod_ns
        .run("ip", ["route", "add", "default", "via", gw_v4.as_str()])
        .unwrap();
    pod_ns
        .run(
            "ip",
            ["-6", "route", "add", "default", "via", gw_v6.as_str()],
        )
        .unwrap();

    let host_ips = format!("{host_v4},{host_v6}");
    let host_ip = host_v4.to_string();
    let fields = [
        ("status.hostIP", host_ip.as_str()),
        ("status.hostIPs", host_ips.as_str()),
    ];
    let args = kubelet_args(&pod["spec"]["initContainers"][0], &fields);
    let out = pod_ns
        .command(ferrule_tests::bin_path("ferrule-proxy"))
        .args(&args)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferrule-proxy {args:?}: {log}");
    assert!(log.contains("probe ports exempted"), "{log}");

    let listen = |port: u16| {
        pod_ns
            .enter(|| {
                let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))?;
                l.set_nonblocking(true)?;
                Ok::<_, io::Error>(l)
            })
            .unwrap()
            .unwrap()
    };
    let inbound = listen(15006);
    let serving = listen(8080); // the app's serving port, also its liveness probe's
    let readiness = listen(8081); // the readiness probe's port, not a declared port
    let other = listen(7070); // an app port no probe uses
    let all = [&inbound, &serving, &readiness, &other];
    // Where a connection lands: the listener's index and the accepted stream.
    let landed = |client: &TcpStream| -> (usize, TcpStream) {
        let from = client.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for (i, l) in all.iter().enumerate() {
                match l.accept() {
                    Ok((s, peer)) if peer.port() == from.port() => return (i, s),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("accept: {e}"),
                }
            }
            assert!(Instant::now() < deadline, "nobody accepted {from}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // A node connection sourced from an address on `lo` needs the veth's link-local
    // address for neighbour discovery, which the kernel does not use while it is still
    // tentative (duplicate address detection, about a second after the link came up).
    let settled = ferrule_tests::process::wait_for(Duration::from_secs(10), || {
        [&node_ns, &pod_ns]
            .iter()
            .all(|ns| {
                ns.run("ip", ["-6", "addr", "show", "tentative"])
                    .is_ok_and(|out| out.trim().is_empty())
            })
            .then_some(())
    });
    assert!(settled.is_some(), "IPv6 addresses still tentative");
    let node = |from: IpAddr, to: IpAddr, port: u16| {
        let client = connect_from(&node_ns, from, SocketAddr::new(to, port)).unwrap();
        let (i, s) = landed(&client);
        (i, s, client)
    };
    let pod_v4: IpAddr = node_link.a.v4.into();
    let pod_v6: IpAddr = node_link.a.v6.into();
    let gw_v4: IpAddr = node_link.b.v4.into();
    let gw_v6: IpAddr = node_link.b.v6.into();

    // The kubelet's probe from the node's address on the pod link (the gateway): the
    // app itself accepts it and reads the plaintext request as sent.
    let (i, mut app_side, mut client) = node(gw_v4, pod_v4, 8080);
    assert_eq!(i, 1, "a probe from the node must reach the app directly");
    client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut got = [0u8; 16];
    app_side.set_nonblocking(false).unwrap();
    app_side.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"GET /healthz HTT");
    for (from, to, port, expected, why) in [
        (host_v4, pod_v4, 8080, 1, "node, status.hostIP, IPv4"),
        (host_v6, pod_v6, 8080, 1, "node, status.hostIPs, IPv6"),
        (gw_v6, pod_v6, 8081, 2, "node, gateway, IPv6"),
        (
            host_v4,
            pod_v4,
            8081,
            2,
            "node, status.hostIP, readiness port",
        ),
        (gw_v4, pod_v4, 7070, 0, "node, not a probe port"),
        (host_v4, pod_v4, 7070, 0, "node, not a probe port"),
    ] {
        let (i, _, _) = node(from, to, port);
        assert_eq!(i, expected, "{why}: {from} -> {to}:{port}");
    }

    // Another pod, same ports: redirected to the proxy (which demands mTLS), with the
    // original destination intact.
    for to in [
        SocketAddr::new(other_link.a.v4.into(), 8080),
        SocketAddr::new(other_link.a.v6.into(), 8080),
        SocketAddr::new(other_link.a.v4.into(), 8081),
    ] {
        let client = other_ns
            .enter(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        let (i, stream) = landed(&client);
        assert_eq!(i, 0, "{to} from another pod must go through the proxy");
        let peer = stream.peer_addr().unwrap();
        let original = original_dst_fd(&stream, peer).unwrap();
        assert_eq!(
            (original.ip().to_canonical(), original.port()),
            (to.ip(), to.port())
        );
    }
}

#[test]
fn the_server_certificate_verifies_only_against_our_bundle_and_name() {
    let wh = Webhook::start();
    let ca = wh.ca_bundle_file("ca.pem");
    assert!(wh.curl(&ca, DNS_NAME, "/healthz", &[]).status.success());

    // Another name than the certificate's: refused by curl (exit 60, or 51 on old curls).
    let out = wh.curl(&ca, "other.ferrule-system.svc", "/healthz", &[]);
    assert!(!out.status.success(), "wrong name accepted");
    assert!(matches!(out.status.code(), Some(60 | 51)), "{out:?}");

    // Another CA: refused.
    let foreign = wh.cp.dir.path().join("foreign.pem");
    let other = rcgen::generate_simple_self_signed(vec![DNS_NAME.into()]).unwrap();
    std::fs::write(&foreign, other.cert.pem()).unwrap();
    let out = wh.curl(&foreign, DNS_NAME, "/healthz", &[]);
    assert_eq!(out.status.code(), Some(60), "{out:?}");
}

#[test]
fn bad_requests_get_clear_errors() {
    let wh = Webhook::start();
    let ca = wh.ca_bundle_file("ca.pem");

    let (status, body) = wh.post(&ca, b"{not json", "application/json");
    assert_eq!(status, 400);
    assert!(body.contains("not JSON"), "{body}");

    let mut v1beta1: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, body) = wh.post(
        &ca,
        &serde_json::to_vec(&v1beta1).unwrap(),
        "application/json",
    );
    assert_eq!(status, 400);
    assert!(body.contains("admissionReviewVersions"), "{body}");

    let (status, _) = wh.post(&ca, DEPLOYMENT_POD.as_bytes(), "text/plain");
    assert_eq!(status, 415);

    // Over the body cap: 413 before the body is read. (Over HTTP/2 the early answer
    // comes with a stream reset that curl reports as an error, hence HTTP/1.1 here.)
    let huge = wh.cp.dir.path().join("huge.json");
    std::fs::write(&huge, vec![b' '; 5 * 1024 * 1024]).unwrap();
    let data = format!("@{}", huge.display());
    let out = wh.curl(
        &ca,
        DNS_NAME,
        "/inject",
        &[
            "--http1.1",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
        ],
    );
    let (status, body) = split_status(&stdout(&out));
    assert_eq!(status, 413, "{body} {out:?}");

    // A well-formed review with a bad annotation: refused in the AdmissionReview.
    let mut bad: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
    bad["request"]["object"]["metadata"]["annotations"]["ferrule.dev/mode"] = json!("loose");
    let (status, body) = wh.post(&ca, &serde_json::to_vec(&bad).unwrap(), "application/json");
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["uid"], bad["request"]["uid"]);
    let msg = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("ferrule.dev/mode"), "{msg}");

    let (status, _) = split_status(&stdout(&wh.curl(&ca, DNS_NAME, "/inject", &[])));
    assert_eq!(status, 405, "GET /inject");
    let (status, _) = split_status(&stdout(&wh.curl(&ca, DNS_NAME, "/other", &[])));
    assert_eq!(status, 404);
    // HTTP/2, as offered by ALPN, works too.
    let (status, _) = split_status(&stdout(&wh.curl(&ca, DNS_NAME, "/healthz", &["--http2"])));
    assert_eq!(status, 200);
}

/// CA rotation: after `ca activate` the webhook serves a certificate from the new
/// authority, which only a caBundle taken after `ca prepare` verifies.
#[test]
fn the_serving_certificate_follows_ca_rotation() {
    let wh = Webhook::start();
    let old_ca = wh.ca_bundle_file("old-ca.pem");
    let prepared = wh.cp.ctl_ok(&["-o", "json", "ca", "prepare"]).unwrap();
    let id = serde_json::from_str::<Value>(&prepared).unwrap()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {prepared}"))
        .to_string();
    // The bundle file now carries both roots.
    let both = wait_for(Duration::from_secs(10), || {
        let path = wh.ca_bundle_file("both-ca.pem");
        let pem = std::fs::read_to_string(&path).unwrap();
        (pem.matches("BEGIN CERTIFICATE").count() == 2).then_some(path)
    })
    .expect("the bundle file gains the new root");
    wh.cp.ctl_ok(&["ca", "activate", &id]).unwrap();
    let switched = wait_for(Duration::from_secs(10), || {
        (!wh.curl(&old_ca, DNS_NAME, "/healthz", &[]).status.success()).then_some(())
    });
    assert!(
        switched.is_some(),
        "still serving the old authority's certificate"
    );
    let out = wh.curl(&both, DNS_NAME, "/healthz", &[]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn bad_webhook_flags_exit_64_naming_the_flag() {
    let wh = Webhook::start();
    for (flag, value) in [
        ("--inject-default-mode", "loose"),
        ("--inject-proxy-memory-limit", "lots"),
        ("--webhook-dns-names", "Not_A.Name"),
        ("--inject-image-pull-policy", "always"),
        ("--inject-control-plane", "no-port"),
    ] {
        let out = wh.cp.run_to_exit(&[flag, value]).unwrap();
        assert_eq!(out.status.code(), Some(64), "{flag} {value}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}
