//! Probe ports exempted for the node only: `--probe-ports` and `--probe-sources`.
//!
//! Under strict mTLS the kubelet's plaintext probes would hit the proxy's inbound port
//! and fail. `--skip-inbound-ports` fixes that by exempting the port from capture for
//! everyone, which makes a probe port that also serves traffic a plaintext door into
//! the pod. `--probe-ports` exempts a port only for connections *from* one of the
//! `--probe-sources`: the node the pod runs on. Everyone else still goes to the proxy.
//!
//! A source is an IP address, a CIDR (never `/0`: that is `--skip-inbound-ports`), or
//! `gateway`: this namespace's default gateways, read from `/proc/net/route` and
//! `/proc/net/ipv6_route` when the rules are installed. The keyword exists because the
//! address the node's own connections to a pod come *from* depends on the CNI: with an
//! unnumbered host-side veth (Calico, the AWS VPC CNI) the kernel picks the node's
//! primary address (`status.hostIP`); with an address on the pod link (a bridge such as
//! flannel's `cni0`, the `ptp` plugin of kind, Cilium's `cilium_host`) it picks that
//! address, which is the pod's default gateway. IPv6 link-local gateways are ignored: a
//! connection to the pod's global address never carries a link-local source (RFC 6724).
//!
//! **Fail closed**: a source list that is empty or resolves to nothing (the variable
//! Kubernetes expanded into `--probe-sources` was empty, no default route) exempts
//! nothing; `init` warns and the probes fail visibly instead of opening the port to all.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::rules::{Cidr, CidrError};

/// One `--probe-sources` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSource {
    /// A network (a bare address is a /32 or /128).
    Cidr(Cidr),
    /// This namespace's default gateways, resolved at install time.
    Gateway,
}

/// Why a `--probe-sources` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeSourceError {
    /// Not an address, a CIDR or `gateway`.
    #[error("{0}; expected an IP address, a CIDR or \"gateway\"")]
    Bad(#[from] CidrError),
    /// `$(NAME)` left as is: Kubernetes expands `$(NAME)` in `args` only when the container
    /// defines the variable `NAME`.
    #[error("{0:?} is an unexpanded variable reference: the container defines no such variable")]
    Unexpanded(String),
    /// A `/0` network would exempt every source.
    #[error("{0} matches every source; use --skip-inbound-ports for a full bypass")]
    Everyone(Cidr),
}

impl FromStr for ProbeSource {
    type Err = ProbeSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "gateway" {
            return Ok(ProbeSource::Gateway);
        }
        if s.starts_with("$(") {
            return Err(ProbeSourceError::Unexpanded(s.to_string()));
        }
        let cidr: Cidr = s.parse()?;
        if cidr.prefix() == 0 {
            return Err(ProbeSourceError::Everyone(cidr));
        }
        Ok(ProbeSource::Cidr(cidr))
    }
}

impl fmt::Display for ProbeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeSource::Cidr(c) => c.fmt(f),
            ProbeSource::Gateway => f.write_str("gateway"),
        }
    }
}

/// The networks `sources` stand for here and now, without duplicates: `gateway` becomes
/// this namespace's default gateways (none if there is no default route or the routing
/// tables cannot be read, which is logged: fail closed).
pub fn resolve(sources: &[ProbeSource]) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = Vec::new();
    for source in sources {
        let found = match source {
            ProbeSource::Cidr(c) => vec![*c],
            ProbeSource::Gateway => {
                let gateways = default_gateways();
                if gateways.is_empty() {
                    tracing::warn!(
                        "--probe-sources gateway: this network namespace has no default gateway"
                    );
                }
                gateways.into_iter().map(host_cidr).collect()
            }
        };
        for c in found {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

fn host_cidr(ip: IpAddr) -> Cidr {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    Cidr::new(ip, prefix).expect("a full-length prefix has no host bits")
}

/// The default gateways of the current network namespace's main routing table, IPv4
/// then IPv6, without IPv6 link-local ones.
pub fn default_gateways() -> Vec<IpAddr> {
    let read = |path: &str| match std::fs::read_to_string(path) {
        Ok(s) => s,
        // No IPv6 in this kernel: no IPv6 gateway.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            tracing::warn!(path, error = %e, "cannot read the routing table; no gateway from it");
            String::new()
        }
    };
    let mut out: Vec<IpAddr> = parse_route_v4(&read("/proc/net/route"))
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    out.extend(
        parse_route_v6(&read("/proc/net/ipv6_route"))
            .into_iter()
            .map(IpAddr::V6),
    );
    out
}

/// `RTF_GATEWAY` in `linux/route.h`.
const RTF_GATEWAY: u32 = 0x2;

/// Default-route gateways of `/proc/net/route` (`Iface Destination Gateway Flags RefCnt
/// Use Metric Mask ...`, addresses as the hex of a network-order `u32` read in host
/// order).
pub(crate) fn parse_route_v4(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
        let (Some(dest), Some(gw), Some(flags), Some(mask)) = (hex(1), hex(2), hex(3), hex(7))
        else {
            continue;
        };
        if dest == 0 && mask == 0 && gw != 0 && flags & RTF_GATEWAY != 0 {
            let ip = Ipv4Addr::from(gw.to_ne_bytes());
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Default-route gateways of `/proc/net/ipv6_route` (`dest dest_len src src_len gateway
/// metric refcnt use flags iface`, addresses as 32 hex digits in network order),
/// without link-local ones.
pub(crate) fn parse_route_v6(text: &str) -> Vec<Ipv6Addr> {
    let addr = |s: &str| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from);
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[0].len() != 32 || f[4].len() != 32 {
            continue;
        }
        let (Some(dest), Some(gw)) = (addr(f[0]), addr(f[4])) else {
            continue;
        };
        let flags = u32::from_str_radix(f[8], 16).unwrap_or(0);
        let link_local = (gw.segments()[0] & 0xffc0) == 0xfe80;
        if dest.is_unspecified()
            && f[1] == "00"
            && !gw.is_unspecified()
            && !link_local
            && flags & RTF_GATEWAY != 0
            && !out.contains(&gw)
        {
            out.push(gw);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_strictly() {
        assert_eq!("gateway".parse(), Ok(ProbeSource::Gateway));
        let c: ProbeSource = "10.0.0.5".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.5/32");
        let c: ProbeSource = "fd00::/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::/64");
        assert!(matches!(
            "0.0.0.0/0".parse::<ProbeSource>(),
            Err(ProbeSourceError::Everyone(_))
        ));
        assert!(matches!(
            "::/0".parse::<ProbeSource>(),
            Err(ProbeSourceError::Everyone(_))
        ));
        let e = "$(FERRULE_HOST_IP)".parse::<ProbeSource>().unwrap_err();
        assert!(e.to_string().contains("unexpanded"), "{e}");
        for bad in ["Gateway", "node", "10.0.0.1/8", "10.0.0.256", ""] {
            assert!(bad.parse::<ProbeSource>().is_err(), "{bad:?}");
        }
    }

    /// The tables as a kind pod (ptp plugin) shows them: IPv4 default via 10.244.0.1,
    /// IPv6 default via a global gateway and a second one via a link-local address.
    #[test]
    fn default_gateways_from_proc() {
        // The kernel prints the network-order address as a host-order u32.
        let hex = |ip: Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(ip.octets()));
        let gw = Ipv4Addr::new(10, 244, 0, 1);
        let v4 = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t{gw}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t{net}\t{gw}\t0003\t0\t0\t0\t{mask}\t0\t0\t0\n\
             eth0\t{gw}\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n",
            gw = hex(gw),
            net = hex(Ipv4Addr::new(10, 244, 0, 0)),
            mask = hex(Ipv4Addr::new(255, 255, 255, 0)),
        );
        assert_eq!(parse_route_v4(&v4), [gw]);
        assert!(parse_route_v4("Iface\tDestination\n").is_empty());
        let v6 = "fd000010024400000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000010024400000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(
            parse_route_v6(v6),
            ["fd00:10:244::1".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn resolve_dedups_explicit_sources() {
        let a: ProbeSource = "10.0.0.5".parse().unwrap();
        let b: ProbeSource = "10.0.0.5/32".parse().unwrap();
        assert_eq!(resolve(&[a, b]).len(), 1);
        assert!(resolve(&[]).is_empty());
    }
}
