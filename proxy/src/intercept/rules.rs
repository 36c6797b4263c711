//! The interception rule set as plain data, independent of the backend that programs it.
//!
//! [`RuleSet::from_config`] decides *what* is captured; [`super::nft`] and
//! [`super::iptables`] only translate these rules, one to one and in order.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::InitConfig;

/// An IPv4 or IPv6 network: an address with no bits set past the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address or CIDR")]
    BadAddress(String),
    /// The prefix length is not a number within the family's width (32 or 128).
    #[error("{0:?}: bad prefix length")]
    BadPrefix(String),
    /// Bits are set past the prefix, so the intended network is ambiguous.
    #[error("{given:?} has host bits set; did you mean {suggestion}?")]
    HostBits {
        /// The value given.
        given: String,
        /// The network it most likely means.
        suggestion: Cidr,
    },
}

impl Cidr {
    /// The network `addr/prefix`; `None` if the prefix is too long or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let c = Self::masked(addr, prefix)?;
        (c.addr == addr).then_some(c)
    }

    /// The network containing `addr` with this prefix length (host bits cleared).
    fn masked(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Self { addr, prefix })
    }

    /// `127.0.0.0/8`.
    pub const LOOPBACK_V4: Cidr = Cidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    /// `::1/128`.
    pub const LOOPBACK_V6: Cidr = Cidr {
        addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::masked(ip, self.prefix).is_some_and(|c| c.addr == self.addr)
    }

    /// The address bytes in network order (4 or 16).
    pub fn addr_bytes(&self) -> Vec<u8> {
        match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The netmask bytes in network order (4 or 16).
    pub fn mask_bytes(&self) -> Vec<u8> {
        let width = self.addr_bytes().len();
        (0..width)
            .map(|i| {
                let bits = usize::from(self.prefix).saturating_sub(i * 8).min(8);
                (0xff00u16 >> bits) as u8
            })
            .collect()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_s, prefix_s) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_string()))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_s {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| CidrError::BadPrefix(s.to_string()))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| CidrError::HostBits {
            given: s.to_string(),
            suggestion: Cidr::masked(addr, prefix).expect("prefix checked above"),
        })
    }
}

/// The NAT hook a chain is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Locally generated connections (`output`).
    Output,
    /// Connections arriving from the network (`prerouting`).
    Prerouting,
}

/// What a rule matches. Every rule also implies "TCP" except [`Match::NotTcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Any non-TCP packet.
    NotTcp,
    /// Packets of sockets owned by this uid.
    SocketUid(u32),
    /// Packets carrying this mark.
    Mark(u32),
    /// Destination address in this network (only packets of the network's family).
    DestCidr(Cidr),
    /// TCP to this destination port.
    TcpDestPort(u16),
    /// TCP from a source address in this network (only packets of its family) to this
    /// destination port.
    SourceTcpDestPort(Cidr, u16),
    /// Any TCP packet.
    Tcp,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the connection alone (stop evaluating this chain).
    Return,
    /// Redirect to this port on the namespace itself.
    Redirect(u16),
}

/// One rule: a match, an action and a short comment shown in `nft list ruleset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The match.
    pub matches: Match,
    /// The action.
    pub action: Action,
    /// Why the rule exists (at most 127 bytes).
    pub comment: &'static str,
}

/// One NAT chain and its ordered rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Where the chain hooks in.
    pub hook: Hook,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

/// The whole interception rule set: zero, one or two chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// The chains, `output` first.
    pub chains: Vec<Chain>,
}

fn rule(matches: Match, action: Action, comment: &'static str) -> Rule {
    Rule {
        matches,
        action,
        comment,
    }
}

fn dedup(ports: impl IntoIterator<Item = u16>) -> Vec<u16> {
    let mut seen = Vec::new();
    for p in ports {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen
}

impl RuleSet {
    /// The rules documented in the module header, for this configuration, with
    /// `probe_sources` the resolved `--probe-sources` (see [`super::probe::resolve`]).
    pub fn from_config(c: &InitConfig, probe_sources: &[Cidr]) -> Self {
        use Action::{Redirect, Return};
        let mut chains = Vec::new();
        if c.outbound {
            let mut rules = vec![
                rule(Match::NotTcp, Return, "only TCP is captured"),
                rule(
                    Match::SocketUid(c.proxy_uid),
                    Return,
                    "proxy uid: its own connections",
                ),
            ];
            if let Some(mark) = c.proxy_mark {
                rules.push(rule(
                    Match::Mark(mark),
                    Return,
                    "proxy mark: its own connections",
                ));
            }
            rules.push(rule(Match::DestCidr(Cidr::LOOPBACK_V4), Return, "loopback"));
            rules.push(rule(Match::DestCidr(Cidr::LOOPBACK_V6), Return, "loopback"));
            let mut cidrs: Vec<Cidr> = Vec::new();
            for cidr in &c.skip_cidrs {
                if !cidrs.contains(cidr) {
                    cidrs.push(*cidr);
                }
            }
            rules.extend(
                cidrs
                    .into_iter()
                    .map(|n| rule(Match::DestCidr(n), Return, "--skip-cidrs")),
            );
            rules.extend(
                dedup(c.skip_outbound_ports.iter().copied())
                    .into_iter()
                    .map(|p| rule(Match::TcpDestPort(p), Return, "--skip-outbound-ports")),
            );
            rules.push(rule(
                Match::Tcp,
                Redirect(c.outbound_port),
                "to the outbound listener",
            ));
            chains.push(Chain {
                hook: Hook::Output,
                rules,
            });
        }
        if c.inbound {
            let mut rules = vec![rule(Match::NotTcp, Return, "only TCP is captured")];
            rules.extend(dedup(c.own_ports.iter().copied()).into_iter().map(|p| {
                rule(
                    Match::TcpDestPort(p),
                    Return,
                    "--own-ports: the proxy's own",
                )
            }));
            rules.extend(
                dedup(c.skip_inbound_ports.iter().copied())
                    .into_iter()
                    .filter(|p| !c.own_ports.contains(p))
                    .map(|p| rule(Match::TcpDestPort(p), Return, "--skip-inbound-ports")),
            );
            // Probe ports: exempt from the given sources only. A port already exempt for
            // everyone needs no rule; no source means no exemption (fail closed).
            let probe_ports: Vec<u16> = dedup(c.probe_ports.iter().copied())
                .into_iter()
                .filter(|p| !c.own_ports.contains(p) && !c.skip_inbound_ports.contains(p))
                .collect();
            for source in probe_sources {
                rules.extend(probe_ports.iter().map(|p| {
                    rule(
                        Match::SourceTcpDestPort(*source, *p),
                        Return,
                        "--probe-ports from --probe-sources",
                    )
                }));
            }
            rules.push(rule(
                Match::Tcp,
                Redirect(c.inbound_port),
                "to the inbound listener",
            ));
            chains.push(Chain {
                hook: Hook::Prerouting,
                rules,
            });
        }
        RuleSet { chains }
    }
}
