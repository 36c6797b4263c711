//! Unit tests of the pure parts: flag validation, CIDRs, the rule set and its nftables
//! encoding. The kernel-facing behaviour is tested end to end in `tests/tests/intercept.rs`.

use clap::Parser;

use super::rules::{Action, Hook, Match, RuleSet};
use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: InitArgs,
}

fn parse(argv: &[&str]) -> Result<InitConfig, InitError> {
    let mut full = vec!["init"];
    full.extend_from_slice(argv);
    Cli::try_parse_from(full)
        .expect("clap accepts the strings")
        .args
        .validate()
}

fn bad_flag(argv: &[&str]) -> &'static str {
    match parse(argv) {
        Err(InitError::InvalidFlag { flag, .. }) => flag,
        other => panic!("{argv:?} should be refused, got {other:?}"),
    }
}

#[test]
fn defaults_match_the_documented_ports() {
    let c = parse(&[]).unwrap();
    assert_eq!(c, InitConfig::default());
}

#[test]
fn flags_are_parsed() {
    let c = parse(&[
        "--outbound-port=1",
        "--inbound-port",
        "2",
        "--proxy-uid=7",
        "--proxy-mark=0x10",
        "--skip-inbound-ports= 22, 80 ,",
        "--probe-ports=8080,8081",
        "--probe-sources=10.1.2.3,,fd00::/64,gateway",
        "--skip-outbound-ports=5432",
        "--skip-cidrs=10.0.0.0/8,fd00::/8,192.0.2.1",
        "--own-ports=9",
        "--no-inbound",
        "--backend=iptables",
        "--no-validate",
    ])
    .unwrap();
    assert_eq!(c.outbound_port, 1);
    assert_eq!(c.inbound_port, 2);
    assert_eq!(c.proxy_uid, 7);
    assert_eq!(c.proxy_mark, Some(16));
    assert_eq!(c.skip_inbound_ports, [22, 80]);
    assert_eq!(c.probe_ports, [8080, 8081]);
    assert_eq!(
        c.probe_sources
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ["10.1.2.3/32", "fd00::/64", "gateway"]
    );
    assert_eq!(c.skip_outbound_ports, [5432]);
    assert_eq!(
        c.skip_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"]
    );
    assert_eq!(c.own_ports, [9]);
    assert!(!c.inbound && c.outbound && !c.validate);
    assert_eq!(c.backend, Backend::Iptables);
}

#[test]
fn bad_values_name_their_flag_and_exit_64() {
    assert!(bad_flag(&["--outbound-port=0"]).starts_with("--outbound-port"));
    assert!(bad_flag(&["--inbound-port=http"]).starts_with("--inbound-port"));
    assert!(bad_flag(&["--proxy-uid=-1"]).starts_with("--proxy-uid"));
    assert!(bad_flag(&["--proxy-uid=0"]).starts_with("--proxy-uid"));
    assert!(bad_flag(&["--proxy-mark=0"]).starts_with("--proxy-mark"));
    assert!(bad_flag(&["--skip-inbound-ports=22,x"]).starts_with("--skip-inbound-ports"));
    assert!(bad_flag(&["--skip-outbound-ports=70000"]).starts_with("--skip-outbound-ports"));
    assert!(bad_flag(&["--skip-cidrs=10.1.2.3/8"]).starts_with("--skip-cidrs"));
    assert!(bad_flag(&["--own-ports=a"]).starts_with("--own-ports"));
    assert!(bad_flag(&["--probe-ports=0"]).starts_with("--probe-ports"));
    assert!(bad_flag(&["--probe-sources=node"]).starts_with("--probe-sources"));
    assert!(bad_flag(&["--probe-sources=10.0.0.0/0"]).starts_with("--probe-sources"));
    assert!(bad_flag(&["--probe-sources=$(FERRULE_HOST_IP)"]).starts_with("--probe-sources"));
    let e = parse(&["--probe-sources=::/0"]).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("--skip-inbound-ports"), "{e}");
    assert!(bad_flag(&["--backend=ipfw"]).starts_with("--backend"));
    assert!(bad_flag(&["--log-format=xml"]).starts_with("--log-format"));
    assert!(bad_flag(&["--no-inbound", "--no-outbound"]).contains("--no-outbound"));
    assert!(bad_flag(&["--outbound-port=15006"]).starts_with("--outbound-port"));
    let e = parse(&["--backend=ipfw"]).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("FERRULE_BACKEND"), "{e}");
}

#[test]
fn cleanup_accepts_both_directions_off() {
    assert!(
        parse(&["--cleanup", "--no-inbound", "--no-outbound"])
            .unwrap()
            .cleanup
    );
}

#[test]
fn cidrs() {
    let c: Cidr = "10.250.0.0/15".parse().unwrap();
    assert_eq!(c.mask_bytes(), [255, 254, 0, 0]);
    assert!(c.contains("10.251.3.4".parse().unwrap()));
    assert!(!c.contains("10.252.0.1".parse().unwrap()));
    assert!(!c.contains("::a".parse().unwrap()));
    let c: Cidr = "fd00:1:2:10::/60".parse().unwrap();
    assert_eq!(&c.mask_bytes()[6..9], [0xff, 0xf0, 0]);
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.9".parse().unwrap()));
    assert_eq!(all.mask_bytes(), [0; 4]);
    assert!(matches!(
        "10.0.0.1/33".parse::<Cidr>(),
        Err(CidrError::BadPrefix(_))
    ));
    assert!(matches!(
        "host/8".parse::<Cidr>(),
        Err(CidrError::BadAddress(_))
    ));
    let e = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"10.1.2.3/8\" has host bits set; did you mean 10.0.0.0/8?"
    );
}

#[test]
fn rule_set_follows_the_module_docs() {
    let c = InitConfig {
        proxy_mark: Some(0x539),
        skip_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
        skip_outbound_ports: vec![5432],
        skip_inbound_ports: vec![22, 15000],
        probe_ports: vec![8080, 22, 15006, 8080],
        ..InitConfig::default()
    };
    let sources: Vec<Cidr> = vec!["10.9.0.0/16".parse().unwrap(), "fd00::5".parse().unwrap()];
    let rules = RuleSet::from_config(&c, &sources);
    let text: Vec<Vec<String>> = rules
        .chains
        .iter()
        .map(|ch| ch.rules.iter().map(nft::describe).collect())
        .collect();
    assert_eq!(
        text,
        [
            vec![
                "meta l4proto != tcp return",
                "meta skuid 1337 return",
                "meta mark 0x00000539 return",
                "ip daddr 127.0.0.0/8 return",
                "ip6 daddr ::1/128 return",
                "ip daddr 10.0.0.0/8 return",
                "tcp dport 5432 return",
                "meta l4proto tcp redirect to :15001",
            ],
            vec![
                "meta l4proto != tcp return",
                "tcp dport 15000 return",
                "tcp dport 15001 return",
                "tcp dport 15006 return",
                "tcp dport 22 return",
                // 22 and 15006 are skipped for everyone already.
                "ip saddr 10.9.0.0/16 tcp dport 8080 return",
                "ip6 saddr fd00::5/128 tcp dport 8080 return",
                "meta l4proto tcp redirect to :15006",
            ],
        ]
    );
    // Probe ports without a source: no exemption at all (fail closed).
    let unexempted = RuleSet::from_config(&c, &[]);
    assert!(
        unexempted.chains[1]
            .rules
            .iter()
            .all(|r| !matches!(r.matches, Match::SourceTcpDestPort(..))),
        "{unexempted:?}"
    );
    assert_eq!(rules.chains[0].hook, Hook::Output);
    assert_eq!(rules.chains[1].hook, Hook::Prerouting);
    let one_way = RuleSet::from_config(
        &InitConfig {
            inbound: false,
            probe_ports: vec![8080],
            ..InitConfig::default()
        },
        &sources,
    );
    assert_eq!(one_way.chains.len(), 1);
    assert_eq!(
        one_way.chains[0]
            .rules
            .last()
            .map(|r| (r.matches, r.action)),
        Some((Match::Tcp, Action::Redirect(15001)))
    );
}

/// The bytes of one expression as `nft` 1.0.6 sends them for `ip daddr 10.250.0.0/15`
/// (captured with `nft --debug=netlink,mnl`): a bitwise mask for a non-byte prefix.
#[test]
fn nft_batch_encodes_a_masked_cidr_like_nft() {
    let rules = RuleSet {
        chains: vec![rules::Chain {
            hook: Hook::Output,
            rules: vec![rules::Rule {
                matches: Match::DestCidr("10.250.0.0/15".parse().unwrap()),
                action: Action::Return,
                comment: "c",
            }],
        }],
    };
    let bytes = nft::install_batch(&rules).bytes_for_test();
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // payload load 4b @ network header + 16
    assert!(find(&[
        8, 0, 2, 0, 0, 0, 0, 1, 8, 0, 3, 0, 0, 0, 0, 16, 8, 0, 4, 0, 0, 0, 0, 4
    ]));
    // bitwise mask 255.254.0.0, then cmp eq 10.250.0.0
    assert!(find(&[8, 0, 1, 0, 255, 254, 0, 0]));
    assert!(find(&[8, 0, 1, 0, 10, 250, 0, 0]));
    // immediate reg 0 (verdict) return (-5)
    assert!(find(&[8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfb]));
}

/// `ip6 saddr fd00::5 tcp dport 8080`: the source address at offset 8 of the IPv6
/// header (16 bytes, no mask), then the port at offset 2 of the TCP header.
#[test]
fn nft_batch_encodes_a_source_and_port_match() {
    let source: Cidr = "fd00::5".parse().unwrap();
    let rules = RuleSet {
        chains: vec![rules::Chain {
            hook: Hook::Prerouting,
            rules: vec![rules::Rule {
                matches: Match::SourceTcpDestPort(source, 8080),
                action: Action::Return,
                comment: "c",
            }],
        }],
    };
    let bytes = nft::install_batch(&rules).bytes_for_test();
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // cmp eq NFPROTO_IPV6
    assert!(find(&[5, 0, 1, 0, 10, 0, 0, 0]));
    // payload load 16b @ network header + 8
    assert!(find(&[
        8, 0, 2, 0, 0, 0, 0, 1, 8, 0, 3, 0, 0, 0, 0, 8, 8, 0, 4, 0, 0, 0, 0, 16
    ]));
    let mut addr = vec![20, 0, 1, 0];
    addr.extend_from_slice(&source.addr_bytes());
    assert!(find(&addr));
    // payload load 2b @ transport header + 2, cmp eq 8080 (big-endian)
    assert!(find(&[
        8, 0, 2, 0, 0, 0, 0, 2, 8, 0, 3, 0, 0, 0, 0, 2, 8, 0, 4, 0, 0, 0, 0, 2
    ]));
    assert!(find(&[6, 0, 1, 0, 0x1f, 0x90, 0, 0]));
}
