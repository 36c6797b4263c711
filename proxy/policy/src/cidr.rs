//! IPv4/IPv6 CIDR blocks for `unauthenticated` sources.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block such as `10.0.0.0/8` or `fd00::/8`.
///
/// Written as `address/length`; a bare address means a single host (`/32` or `/128`).
/// Host bits must be zero (`10.0.0.1/8` is refused: it is almost always a typo for
/// either `10.0.0.0/8` or `10.0.0.1/32`). IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`,
/// what a dual-stack listener reports) are matched as the IPv4 address they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `address/length` or a bare address.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let len = match len {
            None => max,
            Some(len) => match len.parse::<u8>() {
                // `parse` accepts a leading '+'; a prefix length is digits only.
                Ok(n) if n <= max && len.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "{s:?}: prefix length must be a number from 0 to {max}"
                    ));
                }
            },
        };
        let cidr = Self { network, len };
        if cidr.masked(network) != network {
            return Err(format!(
                "{s:?} has host bits set: write {}/{len}, or {network}/{max} for one host",
                cidr.masked(network)
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` lies in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let same_family = matches!(
            (ip, self.network),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        same_family && self.masked(ip) == self.network
    }

    /// `ip` with the host bits cleared (same family as the block).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

/// Always `address/length`.
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains() {
        // (block, address, inside)
        let cases = [
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::ffff:11.1.2.3", false),
            ("10.0.0.0/8", "fd00::1", false),
            ("192.168.1.0/24", "192.168.1.255", true),
            ("192.168.1.0/24", "192.168.2.0", false),
            ("192.168.1.7/32", "192.168.1.7", true),
            ("192.168.1.7/32", "192.168.1.8", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe80::1", false),
            ("fd00::/8", "10.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/33", "2001:db8:8000::1", false),
            ("::/0", "::1", true),
            ("::1/128", "::1", true),
            ("::1", "::2", false),
        ];
        for (block, addr, inside) in cases {
            let cidr = Cidr::parse(block).unwrap_or_else(|e| panic!("{block}: {e}"));
            assert_eq!(cidr.contains(ip(addr)), inside, "{block} ∋ {addr}");
        }
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("10.0.0.7").unwrap().to_string(), "10.0.0.7/32");
        assert_eq!(Cidr::parse("FD00::/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        for (bad, want) in [
            ("10.0.0.1/8", "write 10.0.0.0/8"),
            ("fd00::1/8", "write fd00::/8"),
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.0.0.0/+8", "0 to 32"),
            ("10.0.0.0/", "0 to 32"),
            ("10.0.0.0/-1", "0 to 32"),
            ("10.0.0/8", "not an IP address"),
            ("", "not an IP address"),
            ("host.example/8", "not an IP address"),
        ] {
            let err = Cidr::parse(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
