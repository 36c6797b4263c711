//! Proof that the installed rules redirect, without a packet leaving the namespace.
//!
//! For each IP family with a usable address: listen on the outbound port on loopback
//! (`127.0.0.1` / `::1`, where an `output` redirect lands), dial one of the namespace's own
//! non-loopback addresses on a probe port from this process (root, so not excluded as
//! the proxy uid), and check that the connection arrives on that listener with the
//! dialled address as its original destination. The destination is local, so even if the
//! rules are missing the connection never leaves the namespace.
//!
//! Inbound capture cannot be proven this way (local connections never traverse
//! `prerouting`); it shares the backend and the rule shape with outbound.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::InitConfig;

/// How long each probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Destination ports tried for the probe (the first one not in `--skip-outbound-ports`).
const PROBE_PORTS: [u16; 3] = [15999, 25999, 35999];

/// Why the redirect is considered broken.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The probe was refused: it reached the real (closed) destination, not the listener.
    #[error(
        "a probe connection to {dialed} was refused instead of being redirected to port {port}: \
         the rules are not in effect (another interception earlier in the nat hooks? rules removed?)"
    )]
    Refused {
        /// The address dialled.
        dialed: SocketAddr,
        /// The outbound port it should have reached.
        port: u16,
    },
    /// The probe connected, but not to our listener.
    #[error(
        "a probe connection to {dialed} was not redirected to port {port}: it reached something \
         else (another interception redirecting elsewhere?)"
    )]
    Elsewhere {
        /// The address dialled.
        dialed: SocketAddr,
        /// The outbound port it should have reached.
        port: u16,
    },
    /// The probe reached our listener, but conntrack reports another original destination.
    #[error("the probe to {dialed} was redirected, but SO_ORIGINAL_DST says {got}")]
    WrongOriginalDst {
        /// The address dialled.
        dialed: SocketAddr,
        /// What `original_dst` returned.
        got: SocketAddr,
    },
    /// `SO_ORIGINAL_DST` failed on a redirected connection.
    #[error(
        "the probe to {dialed} was redirected, but reading its original destination failed: {source}"
    )]
    OriginalDst {
        /// The address dialled.
        dialed: SocketAddr,
        /// The getsockopt error.
        #[source]
        source: io::Error,
    },
    /// A local socket operation failed unexpectedly.
    #[error("probe {step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A family the validation did not check, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `"IPv4"`, `"IPv6"` or `"all"`.
    pub family: &'static str,
    /// Human explanation.
    pub reason: String,
}

/// What the validation proved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Addresses whose redirect was proven.
    pub proven: Vec<SocketAddr>,
    /// What was not checked.
    pub skipped: Vec<Skipped>,
}

impl Outcome {
    /// Logs the outcome: info for proofs, warn for skips.
    pub fn log(&self) {
        for dialed in &self.proven {
            tracing::info!(%dialed, "redirect validated: the probe reached the outbound port with its original destination");
        }
        for s in &self.skipped {
            tracing::warn!(family = s.family, reason = %s.reason, "redirect not validated");
        }
    }

    fn skip_all(reason: impl Into<String>) -> Self {
        Outcome {
            proven: Vec::new(),
            skipped: vec![Skipped {
                family: "all",
                reason: reason.into(),
            }],
        }
    }
}

/// This namespace's own addresses, per family, usable as probe destinations.
fn local_addresses(config: &InitConfig) -> io::Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let mut v4 = None;
    let mut v6 = None;
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(sin) = addr.as_sockaddr_in() {
            IpAddr::V4(sin.ip())
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            IpAddr::V6(sin6.ip())
        } else {
            continue;
        };
        let link_local_v6 = matches!(ip, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
        if ip.is_loopback() || link_local_v6 || config.skip_cidrs.iter().any(|c| c.contains(ip)) {
            continue;
        }
        match ip {
            IpAddr::V4(a) => v4 = v4.or(Some(a)),
            IpAddr::V6(a) => v6 = v6.or(Some(a)),
        }
    }
    Ok((v4, v6))
}

/// Proves the outbound redirect for every family with a usable address. `Ok` may still
/// carry skips (see [`Outcome::skipped`]); `Err` means the redirect demonstrably fails.
pub fn validate_redirect(config: &InitConfig) -> Result<Outcome, ValidationError> {
    if !config.outbound {
        return Ok(Outcome::skip_all(
            "outbound capture is off (--no-outbound); inbound redirects can only be observed with \
             traffic from another host",
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if euid == config.proxy_uid {
        return Ok(Outcome::skip_all(format!(
            "this process runs as the proxy uid {euid}, whose traffic is deliberately not captured"
        )));
    }
    let Some(probe_port) = PROBE_PORTS
        .iter()
        .copied()
        .find(|p| !config.skip_outbound_ports.contains(p))
    else {
        return Ok(Outcome::skip_all(
            "every probe port is in --skip-outbound-ports",
        ));
    };
    let (v4, v6) = local_addresses(config).map_err(|source| ValidationError::Io {
        step: "listing local addresses",
        source,
    })?;
    let mut outcome = Outcome::default();
    let families = [
        ("IPv4", v4.map(IpAddr::V4), IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ("IPv6", v6.map(IpAddr::V6), IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    for (family, addr, loopback) in families {
        let Some(addr) = addr else {
            outcome.skipped.push(Skipped {
                family,
                reason: "no non-loopback address outside --skip-cidrs in this network namespace"
                    .into(),
            });
            continue;
        };
        let dialed = SocketAddr::new(addr, probe_port);
        match probe(dialed, SocketAddr::new(loopback, config.outbound_port))? {
            None => outcome.proven.push(dialed),
            Some(reason) => outcome.skipped.push(Skipped { family, reason }),
        }
    }
    Ok(outcome)
}

/// One probe: `Ok(None)` when proven, `Ok(Some(reason))` when it cannot be run here.
fn probe(dialed: SocketAddr, listen: SocketAddr) -> Result<Option<String>, ValidationError> {
    let io_err = |step| move |source| ValidationError::Io { step, source };
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Ok(Some(format!(
                "{listen} is in use (is the proxy already running?); cannot listen there to check the redirect"
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
            return Ok(Some(format!("{} is not configured on lo", listen.ip())));
        }
        Err(e) => return Err(io_err("binding the temporary listener")(e)),
    };
    listener
        .set_nonblocking(true)
        .map_err(io_err("configuring the listener"))?;
    tracing::debug!(%dialed, %listen, "probing the outbound redirect");
    let client = match TcpStream::connect_timeout(&dialed, PROBE_TIMEOUT) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ValidationError::Refused {
                dialed,
                port: listen.port(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(ValidationError::Elsewhere {
                dialed,
                port: listen.port(),
            });
        }
        Err(e) if matches!(e.raw_os_error(), Some(code) if code == nix::errno::Errno::EADDRNOTAVAIL as i32 || code == nix::errno::Errno::ENETUNREACH as i32) =>
        {
            // e.g. an IPv6 address still in duplicate address detection.
            return Ok(Some(format!("{dialed} is not usable yet: {e}")));
        }
        Err(e) => return Err(io_err("connecting")(e)),
    };
    let client_addr = client
        .local_addr()
        .map_err(io_err("reading the probe's address"))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((accepted, peer)) if peer == client_addr => {
                let got = super::original_dst_fd(&accepted, peer)
                    .map_err(|source| ValidationError::OriginalDst { dialed, source })?;
                // Compare address and port only: flow label and scope are not part of "where".
                return if got.ip() == dialed.ip() && got.port() == dialed.port() {
                    Ok(None)
                } else {
                    Err(ValidationError::WrongOriginalDst { dialed, got })
                };
            }
            Ok((_, peer)) => {
                tracing::debug!(%peer, "ignoring an unrelated connection to the probe listener")
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(ValidationError::Elsewhere {
                        dialed,
                        port: listen.port(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("accepting")(e)),
        }
    }
}
