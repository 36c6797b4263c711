//! `ferrule-proxy init` on the real kernel, in throwaway network namespaces: the rules
//! it installs (read back with `nft` / `iptables-save`), idempotence and cleanup, and
//! real TCP connections between a "pod" namespace and a "peer" namespace over a veth
//! pair, checking where each connection lands and what `original_dst` reports.
//!
//! Every test skips (with a printed reason) when not root or without `ip netns`. The
//! binary comes from `cargo build --bins` (tests/run.sh does it).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Output;
use std::time::{Duration, Instant};

use ferrule_proxy::intercept::{original_dst, original_dst_fd};
use ferrule_tests::bin_path;
use ferrule_tests::netns::{NetNs, VethPair, veth};
use ferrule_tests::require_netns;

const TIMEOUT: Duration = Duration::from_secs(5);
const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
const ADMIN: u16 = 15000;
const APP: u16 = 8080;

// ---------------------------------------------------------------------------------------
// helpers

fn init(ns: &NetNs, args: &[&str]) -> Output {
    init_env(ns, args, &[])
}

fn init_env(ns: &NetNs, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = ns.command(bin_path("ferrule-proxy"));
    cmd.arg("init").args(args).env("RUST_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ferrule-proxy init")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn init_ok(ns: &NetNs, args: &[&str]) -> String {
    let out = init(ns, args);
    assert!(
        out.status.success(),
        "init {args:?} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    stderr(&out)
}

/// A "pod" namespace joined to a "peer" namespace: pod is `link.a`, peer is `link.b`.
struct Pair {
    pod: NetNs,
    peer: NetNs,
    link: VethPair,
}

fn pair() -> Pair {
    let pod = NetNs::new("pod").unwrap();
    let peer = NetNs::new("peer").unwrap();
    let link = veth(&pod, &peer, 1).unwrap();
    Pair { pod, peer, link }
}

fn listen(ns: &NetNs, addr: SocketAddr) -> TcpListener {
    ns.enter(|| {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok::<_, io::Error>(l)
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", ns.name()))
}

fn connect(ns: &NetNs, to: SocketAddr) -> TcpStream {
    ns.enter(|| TcpStream::connect_timeout(&to, TIMEOUT))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect from {} to {to}: {e}", ns.name()))
}

/// Waits for the connection coming from `from` (any, if `None`) on one of `listeners`;
/// returns the index of the listener that got it, the accepted stream and its peer.
fn landed(listeners: &[&TcpListener], from: Option<SocketAddr>) -> (usize, TcpStream, SocketAddr) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        for (i, l) in listeners.iter().enumerate() {
            match l.accept() {
                Ok((s, peer)) if from.is_none_or(|f| same_endpoint(f, peer)) => {
                    return (i, s, peer);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no listener accepted the connection from {from:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Equal address and port, treating an IPv4-mapped IPv6 address as IPv4.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(s.ip(), IpAddr::V4),
        ip => ip,
    };
    canon(a) == canon(b) && a.port() == b.port()
}

fn v4(link_end: &ferrule_tests::netns::Link, port: u16) -> SocketAddr {
    SocketAddr::new(link_end.v4.into(), port)
}

fn v6(link_end: &ferrule_tests::netns::Link, port: u16) -> SocketAddr {
    SocketAddr::new(link_end.v6.into(), port)
}

/// `nft list table inet ferrule` as trimmed rule lines (comments dropped), per chain.
fn nft_rules(ns: &NetNs) -> Vec<String> {
    ns.run("nft", ["list", "table", "inet", "ferrule"])
        .unwrap()
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && *l != "}" && !l.starts_with("comment "))
        .map(|l| l.split(" comment \"").next().unwrap().to_string())
        .collect()
}

fn nft_json(ns: &NetNs, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["-j", "list"];
    full.extend_from_slice(args);
    serde_json::from_str(&ns.run("nft", &full).unwrap()).unwrap()
}

fn nft_has_table(ns: &NetNs, family: &str, name: &str) -> bool {
    nft_json(ns, &["tables"])["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["table"]["family"] == family && o["table"]["name"] == name)
}

/// `iptables-save -t nat` (or another save tool) without comments and counters.
fn save_nat(ns: &NetNs, tool: &str) -> String {
    ns.run(tool, ["-t", "nat"])
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn have_iptables() -> bool {
    [
        "iptables-save",
        "iptables-restore",
        "ip6tables-save",
        "ip6tables-restore",
    ]
    .iter()
    .all(|t| ferrule_tests::netns::have(t))
}

// ---------------------------------------------------------------------------------------
// the rules, idempotence, cleanup

const RULE_FLAGS: &[&str] = &[
    "--skip-cidrs=10.99.0.0/16,fd00:99::/32",
    "--skip-outbound-ports=5432",
    "--skip-inbound-ports=22",
    "--proxy-mark=0x539",
    // 22 is skipped for everyone already: only 8080 gets source-restricted rules.
    "--probe-ports=8080,22",
    "--probe-sources=10.99.1.1,,fd00:99::1",
];

#[test]
fn nft_backend_installs_the_documented_rules_idempotently() {
    require_netns!("nft");
    let ns = NetNs::new("rules").unwrap();
    let mut args = RULE_FLAGS.to_vec();
    args.push("--backend=nft");
    init_ok(&ns, &args);

    assert_eq!(
        nft_rules(&ns),
        [
            "table inet ferrule {",
            "chain output {",
            "type nat hook output priority -100; policy accept;",
            "meta l4proto != tcp return",
            "meta skuid 1337 return",
            "meta mark 0x00000539 return",
            "ip daddr 127.0.0.0/8 return",
            "ip6 daddr ::1 return",
            "ip daddr 10.99.0.0/16 return",
            "ip6 daddr fd00:99::/32 return",
            "tcp dport 5432 return",
            "meta l4proto tcp redirect to :15001",
            "chain prerouting {",
            "type nat hook prerouting priority dstnat; policy accept;",
            "meta l4proto != tcp return",
            "tcp dport 15000 return",
            "tcp dport 15001 return",
            "tcp dport 15006 return",
            "tcp dport 22 return",
            "ip saddr 10.99.1.1 tcp dport 8080 return",
            "ip6 saddr fd00:99::1 tcp dport 8080 return",
            "meta l4proto tcp redirect to :15006",
        ]
    );
    // The same through the JSON view: hooks, types and priorities, one redirect per chain.
    let json = nft_json(&ns, &["table", "inet", "ferrule"]);
    let objects = json["nftables"].as_array().unwrap();
    let chains: Vec<_> = objects.iter().filter_map(|o| o.get("chain")).collect();
    assert_eq!(chains.len(), 2);
    for (chain, hook) in chains.iter().zip(["output", "prerouting"]) {
        assert_eq!(chain["type"], "nat");
        assert_eq!(chain["hook"], hook);
        assert_eq!(chain["prio"], -100);
        assert_eq!(chain["policy"], "accept");
    }
    let redirects: Vec<_> = objects
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter_map(|r| {
            r["expr"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|e| e.get("redirect"))
        })
        .map(|r| r["port"].as_u64().unwrap())
        .collect();
    assert_eq!(redirects, [u64::from(OUTBOUND), u64::from(INBOUND)]);

    let ruleset = ns.run("nft", ["list", "ruleset"]).unwrap();
    init_ok(&ns, &args);
    assert_eq!(
        ns.run("nft", ["list", "ruleset"]).unwrap(),
        ruleset,
        "a second init changed the ruleset"
    );

    // Re-running with other flags replaces, never appends.
    init_ok(&ns, &["--backend=nft", "--no-inbound"]);
    let rules = nft_rules(&ns);
    assert!(!rules.iter().any(|l| l.contains("prerouting")), "{rules:?}");
    assert_eq!(
        rules.iter().filter(|l| l.contains("redirect")).count(),
        1,
        "{rules:?}"
    );
}

#[test]
fn iptables_backend_installs_the_documented_rules_idempotently() {
    require_netns!(
        "nft",
        "iptables-save",
        "iptables-restore",
        "ip6tables-save",
        "ip6tables-restore"
    );
    let ns = NetNs::new("ipt").unwrap();
    let mut args = RULE_FLAGS.to_vec();
    args.push("--backend=iptables");
    init_ok(&ns, &args);

    let v4 = save_nat(&ns, "iptables-save");
    for line in [
        ":FERRULE_OUTPUT -",
        ":FERRULE_PREROUTING -",
        "-A PREROUTING -p tcp -j FERRULE_PREROUTING",
        "-A OUTPUT -p tcp -j FERRULE_OUTPUT",
        "-A FERRULE_OUTPUT ! -p tcp -j RETURN",
        "-A FERRULE_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A FERRULE_OUTPUT -m mark --mark 0x539 -j RETURN",
        "-A FERRULE_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A FERRULE_OUTPUT -d 10.99.0.0/16 -j RETURN",
        "-A FERRULE_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A FERRULE_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        "-A FERRULE_PREROUTING -p tcp -m tcp --dport 15000 -j RETURN",
        "-A FERRULE_PREROUTING -p tcp -m tcp --dport 22 -j RETURN",
        "-A FERRULE_PREROUTING -s 10.99.1.1/32 -p tcp -m tcp --dport 8080 -j RETURN",
        "-A FERRULE_PREROUTING -p tcp -j REDIRECT --to-ports 15006",
    ] {
        assert!(v4.lines().any(|l| l == line), "missing {line:?} in:\n{v4}");
    }
    assert_eq!(v4.matches("--dport 8080").count(), 1, "{v4}");
    assert!(
        !v4.contains("fd00"),
        "an IPv6 CIDR leaked into iptables:\n{v4}"
    );
    let v6 = save_nat(&ns, "ip6tables-save");
    for line in [
        "-A OUTPUT -p tcp -j FERRULE_OUTPUT",
        "-A FERRULE_OUTPUT -d ::1/128 -j RETURN",
        "-A FERRULE_OUTPUT -d fd00:99::/32 -j RETURN",
        "-A FERRULE_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        "-A FERRULE_PREROUTING -s fd00:99::1/128 -p tcp -m tcp --dport 8080 -j RETURN",
        "-A FERRULE_PREROUTING -p tcp -j REDIRECT --to-ports 15006",
    ] {
        assert!(v6.lines().any(|l| l == line), "missing {line:?} in:\n{v6}");
    }
    assert!(!v6.contains("10.99.1.1"), "{v6}");

    init_ok(&ns, &args);
    assert_eq!(
        save_nat(&ns, "iptables-save"),
        v4,
        "a second init changed iptables"
    );
    assert_eq!(
        save_nat(&ns, "ip6tables-save"),
        v6,
        "a second init changed ip6tables"
    );

    // Dropping a direction removes its chain and jump.
    init_ok(&ns, &["--backend=iptables", "--no-outbound"]);
    let v4 = save_nat(&ns, "iptables-save");
    assert!(!v4.contains("FERRULE_OUTPUT"), "{v4}");
    assert_eq!(v4.matches("-j FERRULE_PREROUTING").count(), 1, "{v4}");
}

/// The fallback also drives iptables-legacy (x_tables, not nf_tables) when that is what
/// `iptables-restore` is: the tools are put first on PATH under their plain names.
#[test]
fn iptables_backend_works_with_legacy_iptables() {
    require_netns!(
        "iptables-legacy-restore",
        "iptables-legacy-save",
        "ip6tables-legacy-restore",
        "ip6tables-legacy-save"
    );
    let bin = tempfile::tempdir().unwrap();
    for tool in [
        "iptables-save",
        "iptables-restore",
        "ip6tables-save",
        "ip6tables-restore",
    ] {
        let legacy = tool.replace("tables-", "tables-legacy-");
        let target = ferrule_tests::netns::which(&legacy).unwrap();
        std::os::unix::fs::symlink(target, bin.path().join(tool)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let Pair { pod, peer, link } = pair();
    let env = [("PATH", path)];
    let out = init_env(&pod, &["--backend=iptables"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("redirect validated"),
        "{}",
        stderr(&out)
    );
    let saved = save_nat(&pod, "iptables-legacy-save");
    assert!(
        saved.contains("-A OUTPUT -p tcp -j FERRULE_OUTPUT"),
        "{saved}"
    );

    let upstream = listen(&peer, v4(&link.b, APP));
    let redirect = listen(&pod, SocketAddr::from(([127, 0, 0, 1], OUTBOUND)));
    let client = connect(&pod, v4(&link.b, APP));
    let (which, stream, from) = landed(&[&redirect, &upstream], client.local_addr().ok());
    assert_eq!(which, 0, "not redirected by legacy iptables");
    assert_eq!(original_dst_fd(&stream, from).unwrap(), v4(&link.b, APP));

    let out = init_env(&pod, &["--cleanup", "--backend=iptables"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!save_nat(&pod, "iptables-legacy-save").contains("FERRULE"));
}

#[test]
fn cleanup_removes_ours_and_nothing_else() {
    require_netns!("nft");
    let ns = NetNs::new("cleanup").unwrap();
    // Someone else's nftables table and iptables chain, present before us.
    ns.run(
        "nft",
        ["add table inet bystander; \
             add chain inet bystander out { type nat hook output priority 50; }; \
             add rule inet bystander out udp dport 53 counter accept"],
    )
    .unwrap();
    let bystander = ns
        .run("nft", ["list", "table", "inet", "bystander"])
        .unwrap();
    let iptables = have_iptables();
    if iptables {
        ns.run("iptables", ["-t", "nat", "-N", "BYSTANDER"])
            .unwrap();
        ns.run(
            "iptables",
            ["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "BYSTANDER"],
        )
        .unwrap();
        ns.run(
            "iptables",
            [
                "-t",
                "nat",
                "-A",
                "BYSTANDER",
                "-p",
                "udp",
                "--dport",
                "53",
                "-j",
                "RETURN",
            ],
        )
        .unwrap();
        init_ok(&ns, &["--backend=iptables", "--no-validate"]);
    }
    init_ok(&ns, &["--backend=nft", "--no-validate"]);
    assert!(nft_has_table(&ns, "inet", "ferrule"));

    // auto cleanup looks in both backends.
    let log = init_ok(&ns, &["--cleanup"]);
    assert!(log.contains("interception rules removed"), "{log}");
    assert!(
        !nft_has_table(&ns, "inet", "ferrule"),
        "table inet ferrule survived cleanup"
    );
    assert_eq!(
        ns.run("nft", ["list", "table", "inet", "bystander"])
            .unwrap(),
        bystander
    );
    if iptables {
        for tool in ["iptables-save", "ip6tables-save"] {
            let saved = save_nat(&ns, tool);
            assert!(!saved.contains("FERRULE"), "{tool} after cleanup:\n{saved}");
        }
        let saved = save_nat(&ns, "iptables-save");
        assert!(saved.contains("-A OUTPUT -p udp -j BYSTANDER"), "{saved}");
        assert!(
            saved.contains("-A BYSTANDER -p udp -m udp --dport 53 -j RETURN"),
            "{saved}"
        );
    }

    // Nothing left: cleanup again is a success that says so.
    let log = init_ok(&ns, &["--cleanup"]);
    assert!(log.contains("nothing to remove"), "{log}");
    let log = init_ok(&ns, &["--cleanup", "--backend=nft"]);
    assert!(log.contains("nothing to remove"), "{log}");
}

// ---------------------------------------------------------------------------------------
// real connections

fn backends() -> Vec<&'static str> {
    if have_iptables() {
        vec!["nft", "iptables"]
    } else {
        vec!["nft"]
    }
}

#[test]
fn outbound_connections_are_redirected_with_their_original_destination() {
    require_netns!();
    for backend in backends() {
        let Pair { pod, peer, link } = pair();
        let log = init_ok(&pod, &[&format!("--backend={backend}")]);
        // init's own check ran (the pod has addresses) before we took the port.
        assert!(log.contains("redirect validated"), "{log}");

        let upstream_v4 = listen(&peer, v4(&link.b, APP));
        let upstream_v6 = listen(&peer, v6(&link.b, APP));
        let redirect_v4 = listen(&pod, SocketAddr::from(([127, 0, 0, 1], OUTBOUND)));
        let redirect_v6 = listen(&pod, SocketAddr::from((Ipv6Addr::LOCALHOST, OUTBOUND)));

        for (dest, redirect, upstream) in [
            (v4(&link.b, APP), &redirect_v4, &upstream_v4),
            (v6(&link.b, APP), &redirect_v6, &upstream_v6),
        ] {
            let client = connect(&pod, dest);
            let (which, stream, from) = landed(&[redirect, upstream], client.local_addr().ok());
            assert_eq!(
                which, 0,
                "[{backend}] connection to {dest} was not redirected"
            );
            assert_eq!(original_dst_fd(&stream, from).unwrap(), dest, "[{backend}]");
            // The tokio entry point the proxy's listeners use.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            let got = rt.block_on(async {
                stream.set_nonblocking(true).unwrap();
                original_dst(&tokio::net::TcpStream::from_std(stream).unwrap())
            });
            assert_eq!(got.unwrap(), dest, "[{backend}] original_dst (tokio)");
        }

        // Loopback is never captured.
        let local = listen(&pod, SocketAddr::from(([127, 0, 0, 1], 9000)));
        let client = connect(&pod, SocketAddr::from(([127, 0, 0, 1], 9000)));
        let (which, _, _) = landed(&[&local, &redirect_v4], client.local_addr().ok());
        assert_eq!(which, 0, "[{backend}] loopback was captured");
    }
}

/// Runs a one-shot TCP client as `uid` inside `ns` (bash's /dev/tcp under setpriv).
fn connect_as_uid(ns: &NetNs, uid: u32, to: SocketAddr) -> Output {
    ns.output(
        "setpriv",
        [
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_string(),
            "bash".to_string(),
            "-c".to_string(),
            format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port()),
        ],
    )
    .unwrap()
}

/// A connection from a socket carrying `mark` (SO_MARK, set before connecting).
fn connect_marked(ns: &NetNs, mark: u32, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, socket, sockopt};
    let SocketAddr::V4(to4) = to else {
        panic!("IPv4 only")
    };
    ns.enter(|| {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        nix::sys::socket::setsockopt(&fd, sockopt::Mark, &mark).unwrap();
        nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrIn::from(to4)).unwrap();
        TcpStream::from(fd)
    })
    .unwrap()
}

#[test]
fn proxy_uid_and_proxy_mark_are_not_redirected() {
    require_netns!("setpriv", "bash");
    for backend in backends() {
        let Pair { pod, peer, link } = pair();
        init_ok(
            &pod,
            &[&format!("--backend={backend}"), "--proxy-mark=0x539"],
        );
        let redirect_v4 = listen(&pod, SocketAddr::from(([127, 0, 0, 1], OUTBOUND)));
        let redirect_v6 = listen(&pod, SocketAddr::from((Ipv6Addr::LOCALHOST, OUTBOUND)));
        let upstream_v4 = listen(&peer, v4(&link.b, APP));
        let upstream_v6 = listen(&peer, v6(&link.b, APP));

        for (dest, redirect, upstream) in [
            (v4(&link.b, APP), &redirect_v4, &upstream_v4),
            (v6(&link.b, APP), &redirect_v6, &upstream_v6),
        ] {
            // Control: the same client as another uid is captured.
            let out = connect_as_uid(&pod, 1000, dest);
            assert!(out.status.success(), "{}", stderr(&out));
            let (which, _, _) = landed(&[redirect, upstream], None);
            assert_eq!(
                which, 0,
                "[{backend}] uid 1000 to {dest} should be captured"
            );

            let out = connect_as_uid(&pod, 1337, dest);
            assert!(out.status.success(), "{}", stderr(&out));
            let (which, _, _) = landed(&[redirect, upstream], None);
            assert_eq!(
                which, 1,
                "[{backend}] the proxy uid's connection to {dest} was captured"
            );
        }

        let dest = v4(&link.b, APP);
        let client = connect_marked(&pod, 0x539, dest);
        let (which, _, _) = landed(&[&redirect_v4, &upstream_v4], client.local_addr().ok());
        assert_eq!(which, 1, "[{backend}] a marked connection was captured");
        let client = connect_marked(&pod, 0x538, dest);
        let (which, _, _) = landed(&[&redirect_v4, &upstream_v4], client.local_addr().ok());
        assert_eq!(which, 0, "[{backend}] another mark must still be captured");
    }
}

#[test]
fn skipped_ports_and_cidrs_are_not_redirected() {
    require_netns!();
    for backend in backends() {
        let Pair { pod, peer, link } = pair();
        // Skip the peer's IPv4 address entirely, and port 8081 everywhere.
        let skip_cidr = format!("--skip-cidrs={}/32", link.b.v4);
        init_ok(
            &pod,
            &[
                &format!("--backend={backend}"),
                "--skip-outbound-ports=8081",
                &skip_cidr,
            ],
        );
        let redirect_v4 = listen(&pod, SocketAddr::from(([127, 0, 0, 1], OUTBOUND)));
        let redirect_v6 = listen(&pod, SocketAddr::from((Ipv6Addr::LOCALHOST, OUTBOUND)));

        let cases = [
            (v4(&link.b, APP), &redirect_v4, false, "skipped CIDR"),
            (v6(&link.b, APP), &redirect_v6, true, "not skipped"),
            (v6(&link.b, 8081), &redirect_v6, false, "skipped port"),
        ];
        for (dest, redirect, captured, why) in cases {
            let upstream = listen(&peer, dest);
            let client = connect(&pod, dest);
            let (which, _, _) = landed(&[redirect, &upstream], client.local_addr().ok());
            assert_eq!(which == 0, captured, "[{backend}] {dest} ({why})");
        }
    }
}

#[test]
fn inbound_connections_are_redirected_except_own_and_skipped_ports() {
    require_netns!();
    for backend in backends() {
        let Pair { pod, peer, link } = pair();
        init_ok(
            &pod,
            &[&format!("--backend={backend}"), "--skip-inbound-ports=2222"],
        );
        // Dual-stack listeners: IPv4 peers arrive as IPv4-mapped addresses.
        let any = |port| SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
        let inbound = listen(&pod, any(INBOUND));
        let admin = listen(&pod, any(ADMIN));
        let ssh = listen(&pod, any(2222));
        let app = listen(&pod, any(APP));
        let all = [&inbound, &admin, &ssh, &app];

        for dest in [v4(&link.a, APP), v6(&link.a, APP), v4(&link.a, 9999)] {
            let client = connect(&peer, dest);
            let (which, stream, from) = landed(&all, client.local_addr().ok());
            assert_eq!(
                which, 0,
                "[{backend}] inbound connection to {dest} was not redirected"
            );
            assert_eq!(original_dst_fd(&stream, from).unwrap(), dest, "[{backend}]");
        }
        for (dest, expected) in [
            (v4(&link.a, ADMIN), 1),
            (v6(&link.a, ADMIN), 1),
            (v6(&link.a, 2222), 2),
        ] {
            let client = connect(&peer, dest);
            let (which, stream, from) = landed(&all, client.local_addr().ok());
            assert_eq!(which, expected, "[{backend}] {dest} must not be redirected");
            // Not NATed: the original destination is the listener's own address, which is
            // how the proxy recognises a direct connection.
            assert_eq!(original_dst_fd(&stream, from).unwrap(), dest, "[{backend}]");
            assert!(same_endpoint(stream.local_addr().unwrap(), dest));
        }
    }
}

/// `--probe-ports`: the port is exempted only for connections from `--probe-sources`
/// (explicit addresses, or `gateway`: the pod's default gateways, the node's address on
/// the pod link with bridge and point-to-point CNIs); from anywhere else it is
/// redirected. Without a usable source nothing is exempted (fail closed).
#[test]
fn probe_ports_are_exempted_only_for_connections_from_probe_sources() {
    require_netns!();
    for backend in backends() {
        let Pair { pod, peer, link } = pair();
        let node = NetNs::new("node").unwrap();
        let node_link = veth(&pod, &node, 2).unwrap();
        let any = |port| SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
        let inbound = listen(&pod, any(INBOUND));
        let app = listen(&pod, any(APP));
        let other = listen(&pod, any(9999));
        let all = [&inbound, &app, &other];
        // Where a connection from `ns` to `dest` lands; checks the original destination.
        let lands = |ns: &NetNs, dest: SocketAddr| -> usize {
            let client = connect(ns, dest);
            let (which, stream, from) = landed(&all, client.local_addr().ok());
            assert_eq!(original_dst_fd(&stream, from).unwrap(), dest, "[{backend}]");
            which
        };
        let from_node = [v4(&node_link.a, APP), v6(&node_link.a, APP)];
        let from_peer = [v4(&link.a, APP), v6(&link.a, APP)];
        let backend_flag = format!("--backend={backend}");

        // Explicit sources: the node's addresses on its link, both families.
        let sources = format!("--probe-sources={},{}", node_link.b.v4, node_link.b.v6);
        let log = init_ok(&pod, &[&backend_flag, "--probe-ports=8080", &sources]);
        assert!(log.contains("probe ports exempted"), "{log}");
        for dest in from_node {
            assert_eq!(
                lands(&node, dest),
                1,
                "[{backend}] node -> {dest}: not to the app"
            );
        }
        for dest in from_peer {
            assert_eq!(
                lands(&peer, dest),
                0,
                "[{backend}] peer -> {dest}: not redirected"
            );
        }
        assert_eq!(
            lands(&node, v4(&node_link.a, 9999)),
            0,
            "[{backend}] other port"
        );

        // `gateway`: the pod's default routes go through the node.
        let gw_v4 = node_link.b.v4.to_string();
        let gw_v6 = node_link.b.v6.to_string();
        pod.run("ip", ["route", "add", "default", "via", gw_v4.as_str()])
            .unwrap();
        pod.run(
            "ip",
            ["-6", "route", "add", "default", "via", gw_v6.as_str()],
        )
        .unwrap();
        let log = init_ok(
            &pod,
            &[
                &backend_flag,
                "--probe-ports=8080",
                "--probe-sources=gateway",
            ],
        );
        assert!(
            log.contains(&format!("{gw_v4}/32")) && log.contains(&format!("{gw_v6}/128")),
            "[{backend}] the gateways were not resolved: {log}"
        );
        for dest in from_node {
            assert_eq!(lands(&node, dest), 1, "[{backend}] gateway -> {dest}");
        }
        for dest in from_peer {
            assert_eq!(lands(&peer, dest), 0, "[{backend}] peer -> {dest}");
        }

        // Fail closed: an empty list (a node address Kubernetes could not give), or
        // `gateway` without a default route, exempts nothing, and says so.
        pod.run("ip", ["route", "del", "default"]).unwrap();
        pod.run("ip", ["-6", "route", "del", "default"]).unwrap();
        for sources in ["--probe-sources=", "--probe-sources=,gateway"] {
            let log = init_ok(&pod, &[&backend_flag, "--probe-ports=8080", sources]);
            assert!(log.contains("NOT exempted"), "[{backend}] {sources}: {log}");
            for dest in from_node {
                assert_eq!(
                    lands(&node, dest),
                    0,
                    "[{backend}] {sources}: node -> {dest}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// validation and flags

/// A leftover interception from someone else (a rogue `redirect` at an earlier NAT
/// priority) wins the race for the NAT binding, so our rules never apply: init must say
/// so, exit 1, and leave no rules of ours behind.
#[test]
fn validation_fails_loudly_when_the_redirect_does_not_work() {
    require_netns!("nft");
    for backend in backends() {
        // Keep the peer alive: dropping it would delete the veth pair.
        let Pair {
            pod, peer: _peer, ..
        } = pair();
        pod.run(
            "nft",
            ["add table ip rogue; \
                 add chain ip rogue out { type nat hook output priority -150; }; \
                 add rule ip rogue out meta l4proto tcp redirect to :15998"],
        )
        .unwrap();
        let out = init(&pod, &[&format!("--backend={backend}")]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "[{backend}] {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("ferrule-proxy init: "),
            "[{backend}] {err}"
        );
        assert!(
            last.contains("refused instead of being redirected to port 15001"),
            "[{backend}] {last}"
        );
        assert!(
            last.contains("the rules were removed again"),
            "[{backend}] {last}"
        );
        assert!(
            !nft_has_table(&pod, "inet", "ferrule"),
            "[{backend}] rules left behind"
        );
        if backend == "iptables" {
            assert!(!save_nat(&pod, "iptables-save").contains("FERRULE"));
        }
        assert!(
            nft_has_table(&pod, "ip", "rogue"),
            "[{backend}] someone else's table was touched"
        );

        // --no-validate installs anyway (the operator's call).
        init_ok(&pod, &[&format!("--backend={backend}"), "--no-validate"]);
        init_ok(&pod, &["--cleanup", &format!("--backend={backend}")]);
    }
}

#[test]
fn validation_explains_what_it_could_not_check() {
    require_netns!();
    // Only loopback: nothing to dial.
    let ns = NetNs::new("lonely").unwrap();
    let log = init_ok(&ns, &[]);
    assert!(log.contains("no non-loopback address"), "{log}");
    // The outbound port is taken (as if the proxy were running).
    // Keep the peer alive: dropping it would delete the veth pair.
    let Pair {
        pod, peer: _peer, ..
    } = pair();
    let _proxy = listen(&pod, SocketAddr::from(([127, 0, 0, 1], OUTBOUND)));
    let log = init_ok(&pod, &[]);
    assert!(log.contains("127.0.0.1:15001 is in use"), "{log}");
    // Inbound only: cannot be proven from inside.
    let log = init_ok(&pod, &["--no-outbound"]);
    assert!(log.contains("outbound capture is off"), "{log}");
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    // Bad values are refused before anything is touched; still, run inside a throwaway
    // namespace when we can, so a bug could never change the host's rules.
    let ns = match ferrule_tests::netns::skip_reason() {
        None => Some(NetNs::new("flags").unwrap()),
        Some(_) => None,
    };
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = match &ns {
            Some(ns) => ns.command(bin_path("ferrule-proxy")),
            None => std::process::Command::new(bin_path("ferrule-proxy")),
        };
        cmd.arg("init").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    for (args, env, named) in [
        (&["--outbound-port=99999"][..], &[][..], "--outbound-port"),
        (&["--inbound-port=http"], &[], "--inbound-port"),
        (&["--proxy-uid=0"], &[], "--proxy-uid"),
        (&["--skip-cidrs=10.0.0.1/8"], &[], "--skip-cidrs"),
        (
            &["--skip-outbound-ports=22,x"],
            &[],
            "--skip-outbound-ports",
        ),
        (&["--backend=pf"], &[], "--backend"),
        (&[], &[("FERRULE_BACKEND", "pf")], "FERRULE_BACKEND"),
        (&[], &[("FERRULE_PROXY_MARK", "blue")], "FERRULE_PROXY_MARK"),
        (&["--no-inbound", "--no-outbound"], &[], "--no-outbound"),
        (&["--probe-ports=8080,0"], &[], "--probe-ports"),
        (&["--probe-sources=0.0.0.0/0"], &[], "--skip-inbound-ports"),
        (&["--probe-sources=::/0"], &[], "--probe-sources"),
        (&["--probe-sources=$(FERRULE_HOST_IP)"], &[], "unexpanded"),
        (&["--probe-sources=10.0.0.1/8"], &[], "--probe-sources"),
        (
            &[],
            &[("FERRULE_PROBE_SOURCES", "node")],
            "FERRULE_PROBE_SOURCES",
        ),
    ] {
        let out = run(args, env);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(named),
            "{args:?} {env:?}: {}",
            stderr(&out)
        );
    }
}
