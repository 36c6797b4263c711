//! Traffic interception: `ferrule-proxy init` installs the netfilter rules that steer a
//! pod's TCP traffic through the sidecar, and [`original_dst`] tells the proxy's listeners
//! where a redirected connection was really going.
//!
//! `init` runs once per pod, before the application starts (an init container with
//! `CAP_NET_ADMIN`, in the pod's network namespace). It changes the **current** network
//! namespace only, and only inside objects it owns.
//!
//! # The rule set
//!
//! Both IPv4 and IPv6, TCP only. Two NAT chains, both at the `dstnat` priority (-100, the
//! same as iptables' `nat` table):
//!
//! ```text
//! table inet ferrule {                       # "inet" = one table for IPv4 and IPv6
//!   chain output {                           # connections this namespace opens
//!     type nat hook output priority -100; policy accept;
//!     meta l4proto != tcp return             # UDP (DNS), ICMP, ...: untouched
//!     meta skuid 1337 return                 # the proxy's own upstream connections: no loop
//!     meta mark 0x... return                 # same, when the proxy marks its sockets (--proxy-mark)
//!     ip daddr 127.0.0.0/8 return            # loopback stays loopback (app <-> proxy, app <-> app)
//!     ip6 daddr ::1 return
//!     ip daddr 10.0.0.0/8 return             # one rule per --skip-cidrs entry
//!     tcp dport 5432 return                  # one rule per --skip-outbound-ports entry
//!     meta l4proto tcp redirect to :15001    # everything else -> outbound listener
//!   }
//!   chain prerouting {                       # connections arriving from the network
//!     type nat hook prerouting priority dstnat; policy accept;
//!     meta l4proto != tcp return
//!     tcp dport 15000 return                 # --own-ports: admin, outbound, inbound
//!     tcp dport 15001 return
//!     tcp dport 15006 return
//!     tcp dport 22 return                    # one rule per --skip-inbound-ports entry
//!     ip saddr 10.0.0.5 tcp dport 8080 return  # one rule per --probe-sources x --probe-ports
//!     meta l4proto tcp redirect to :15006    # everything else -> inbound listener
//!   }
//! }
//! ```
//!
//! Why each piece:
//!
//! * **`redirect`** rewrites the destination to the namespace itself (`127.0.0.1` / `::1`
//!   in `output`, the receiving interface's address in `prerouting`), keeping the port we
//!   give. Conntrack remembers the original destination, which the proxy reads back with
//!   `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` ([`original_dst`]). NAT chains only see the
//!   first packet of a connection, so the rules cost nothing per packet afterwards.
//! * **The proxy is excluded by uid** (`--proxy-uid`, default 1337) and optionally by
//!   socket mark (`--proxy-mark`): without it, the proxy's own connection to the real
//!   destination would be redirected back to itself, forever.
//! * **Loopback is excluded** so the application can reach the proxy's admin port and
//!   its own sidecar-local services, and so the proxy can hand inbound connections to the
//!   application on `127.0.0.1` without being captured again.
//! * **Own ports are never redirected inbound**, so the admin endpoint (health checks)
//!   stays reachable and a peer dialling the inbound port directly is not re-NATed. The
//!   proxy must still refuse a direct connection to its *outbound* port from outside: for
//!   such a connection [`original_dst`] returns the listener's own address (see there).
//! * **Skip lists** (`--skip-cidrs`, `--skip-outbound-ports`, `--skip-inbound-ports`) are
//!   the escape hatches for traffic the mesh must not touch (the control plane, the
//!   cloud metadata service, a database speaking its own TLS, SSH).
//! * **Probe ports** (`--probe-ports` with `--probe-sources`, see [`probe`]) are skipped
//!   only for connections from the given sources (the node, for kubelet probes); from
//!   anywhere else they are redirected like any port. No source, no exemption.
//!
//! Known trade-offs:
//!
//! * **An application calling its own pod IP** (not `127.0.0.1`) is captured by `output`
//!   and goes through the outbound listener; the proxy's onward connection is to a local
//!   address, which never traverses `prerouting`, so it reaches the application directly
//!   in plaintext, without inbound policy. Same behaviour as Istio's sidecar mode.
//! * **Exclusion by uid trusts the namespace**: anything else running as uid 1337 (or
//!   setting the proxy mark, which needs `CAP_NET_ADMIN`) bypasses the mesh.
//! * **UDP is not captured** (DNS keeps working without a DNS proxy; QUIC/HTTP3 is not
//!   protected).
//! * One rule per skip entry rather than an nftables set: the lists are short, and the rules
//!   read the same in `nft list ruleset` and in the iptables fallback.
//! * The NAT chains share their priority with iptables' `nat` table. If another
//!   interception (another mesh, a leftover) also redirects, the first one to set up the NAT
//!   binding wins. Validation (below) catches the case where that is not us.
//!
//! # Backends
//!
//! * **`nft`** ([`nft`]): nftables spoken directly over netlink (`NETLINK_NETFILTER`), no
//!   external tool, so `init` works from a `FROM scratch` image holding only the static
//!   binary. Install is one atomic batch: *add table, delete table, add table + chains +
//!   rules*, which makes a second run replace the first exactly (idempotent, never two
//!   copies, never a moment without rules). Cleanup deletes table `inet ferrule` and
//!   nothing else.
//! * **`iptables`** ([`iptables`]): the fallback for kernels without nf_tables, through
//!   `iptables-restore` / `ip6tables-restore --noflush` (whatever backend `iptables` is),
//!   with chains `FERRULE_OUTPUT` / `FERRULE_PREROUTING` in the `nat` table jumped to from
//!   `OUTPUT` / `PREROUTING`. Cleanup removes exactly those jumps and chains.
//! * **`auto`** (default): `nft` when the kernel accepts it, else `iptables` when its tools
//!   are installed, else an error that says both reasons.
//!
//! # Validation
//!
//! Unless `--no-validate`, `init` proves the outbound redirect without sending a packet off
//! the host ([`validate`]): it listens on the outbound port on loopback, dials one of the
//! namespace's own non-loopback addresses from this (non-proxy) process, and checks the
//! connection lands on that listener with the dialled address as its original destination.
//! If it does not, the rules are removed again and `init` fails: a pod whose interception
//! silently does nothing would send plaintext.

mod args;
pub mod iptables;
mod netlink;
pub mod nft;
pub mod probe;
pub mod rules;
pub mod validate;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
use std::process::ExitCode;

pub use args::{Backend, InitArgs, InitConfig};
pub use netlink::NetlinkError;
pub use probe::ProbeSource;
pub use rules::{Cidr, CidrError};

use iptables::IptablesError;
use validate::ValidationError;

/// What can go wrong in `ferrule-proxy init`.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A flag (or its `FERRULE_*` variable) has an invalid value. Exit code 64.
    #[error("invalid {flag}: {reason}")]
    InvalidFlag {
        /// The flag and environment variable at fault.
        flag: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// The nftables backend failed: no `NETLINK_NETFILTER` socket, or the kernel rejected a
    /// message of the batch (the error names the message and the errno).
    #[error("nftables: {0}")]
    Nft(#[from] NetlinkError),
    /// The iptables backend failed: a tool is missing or `*-restore` rejected the rules.
    #[error("iptables: {0}")]
    Iptables(#[from] IptablesError),
    /// `--backend auto` found no backend that works here.
    #[error(
        "no usable interception backend: nftables over netlink failed ({nft}); \
         iptables fallback failed ({iptables})"
    )]
    NoBackend {
        /// Why the built-in nftables backend could not be used.
        nft: NetlinkError,
        /// Why the iptables fallback could not be used.
        iptables: IptablesError,
    },
    /// The rules were installed but do not redirect traffic; they have been removed again
    /// (unless `cleanup_error` says otherwise).
    #[error("{error}{}", cleanup_note(.cleanup_error))]
    Validation {
        /// What the validation observed.
        error: ValidationError,
        /// Set when removing the ineffective rules failed too.
        cleanup_error: Option<Box<InitError>>,
    },
}

fn cleanup_note(e: &Option<Box<InitError>>) -> String {
    match e {
        None => "; the rules were removed again".to_string(),
        Some(e) => format!("; removing the rules again also failed: {e}"),
    }
}

impl InitError {
    /// The process exit code for this error: 64 (usage) for bad flags, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::InvalidFlag { .. } => 64,
            _ => 1,
        }
    }
}

/// Which backend holds the rules after [`install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// Table `inet ferrule`, through netlink.
    Nft,
    /// Chains `FERRULE_*` in the `nat` tables of iptables / ip6tables.
    Iptables,
}

/// What [`cleanup`] found and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removed {
    /// Table `inet ferrule` existed and was deleted.
    pub nft_table: bool,
    /// `FERRULE_*` chains or jumps existed and were deleted.
    pub iptables_chains: bool,
}

/// Installs (or replaces) the interception rules in the current network namespace with
/// the configured backend. Does not validate: see [`validate::validate_redirect`].
pub fn install(config: &InitConfig) -> Result<Installed, InitError> {
    let probe_sources = probe_sources(config);
    let rules = rules::RuleSet::from_config(config, &probe_sources);
    match config.backend {
        Backend::Nft => {
            nft::install(&rules)?;
            Ok(Installed::Nft)
        }
        Backend::Iptables => {
            iptables::install(&rules)?;
            Ok(Installed::Iptables)
        }
        Backend::Auto => match nft::install(&rules) {
            Ok(()) => Ok(Installed::Nft),
            Err(e) if e.is_permission_denied() => Err(e.into()),
            Err(nft) => {
                tracing::warn!(error = %nft, "nftables over netlink unavailable, falling back to iptables");
                match iptables::install(&rules) {
                    Ok(()) => Ok(Installed::Iptables),
                    Err(iptables) => Err(InitError::NoBackend { nft, iptables }),
                }
            }
        },
    }
}

/// Resolves `--probe-sources` when there are probe ports to exempt, and says what the
/// exemption will be. No source: no exemption (fail closed), with a warning.
fn probe_sources(config: &InitConfig) -> Vec<Cidr> {
    if config.probe_ports.is_empty() || !config.inbound {
        return Vec::new();
    }
    let sources = probe::resolve(&config.probe_sources);
    let ports = config
        .probe_ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if sources.is_empty() {
        tracing::warn!(
            probe_ports = %ports,
            given = ?config.probe_sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "no probe source: the probe ports are NOT exempted from inbound capture (fail \
             closed); plaintext probes to them will fail"
        );
    } else {
        let list = sources.iter().map(ToString::to_string).collect::<Vec<_>>();
        tracing::info!(probe_ports = %ports, sources = %list.join(","), "probe ports exempted for these sources only");
    }
    sources
}

/// Removes what [`install`] created (and nothing else) from the current network namespace.
/// `auto` looks in both backends; a backend with nothing of ours is not an error.
pub fn cleanup(backend: Backend) -> Result<Removed, InitError> {
    let mut removed = Removed::default();
    match backend {
        Backend::Nft => removed.nft_table = nft::cleanup()?,
        Backend::Iptables => removed.iptables_chains = iptables::cleanup()?,
        Backend::Auto => {
            match nft::cleanup() {
                Ok(found) => removed.nft_table = found,
                // No nf_tables in this kernel: nothing of ours can be there.
                Err(e) if e.is_unsupported() => {
                    tracing::debug!(error = %e, "nftables unavailable, nothing to remove there")
                }
                Err(e) => return Err(e.into()),
            }
            if iptables::available() {
                removed.iptables_chains = iptables::cleanup()?;
            }
        }
    }
    Ok(removed)
}

/// `ferrule-proxy init`: parse, install (or clean up), validate, and map the outcome to an
/// exit code (0, 1 on failure, 64 on a bad flag), printing a one-line reason on failure.
pub fn run_init(args: InitArgs) -> ExitCode {
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrule-proxy init: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    crate::telemetry::init_logging(config.log_json);
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrule-proxy init: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The body of `ferrule-proxy init` for an already validated configuration.
pub fn run(config: &InitConfig) -> Result<(), InitError> {
    if config.cleanup {
        let removed = cleanup(config.backend)?;
        if removed == Removed::default() {
            tracing::info!(backend = ?config.backend, "no Ferrule interception rules found; nothing to remove");
        } else {
            tracing::info!(
                nft_table = removed.nft_table,
                iptables_chains = removed.iptables_chains,
                "interception rules removed"
            );
        }
        return Ok(());
    }
    let installed = install(config)?;
    tracing::info!(
        backend = ?installed,
        outbound = config.outbound,
        inbound = config.inbound,
        outbound_port = config.outbound_port,
        inbound_port = config.inbound_port,
        proxy_uid = config.proxy_uid,
        proxy_mark = ?config.proxy_mark,
        "interception rules installed"
    );
    if !config.validate {
        tracing::info!("validation disabled (--no-validate)");
        return Ok(());
    }
    match validate::validate_redirect(config) {
        Ok(outcome) => {
            outcome.log();
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "redirect validation failed; removing the rules again");
            let backend = match installed {
                Installed::Nft => Backend::Nft,
                Installed::Iptables => Backend::Iptables,
            };
            let cleanup_error = cleanup(backend).err().map(Box::new);
            Err(InitError::Validation {
                error,
                cleanup_error,
            })
        }
    }
}

/// The destination a redirected connection was originally addressed to, read from
/// conntrack (`SO_ORIGINAL_DST` for IPv4, also on a dual-stack socket carrying IPv4;
/// `IP6T_SO_ORIGINAL_DST` for IPv6).
///
/// For a connection that was *not* redirected (dialled straight at the proxy's port) this
/// is the address it was really sent to, i.e. the socket's own `local_addr()`: callers
/// must treat "original destination == my listener" as a direct connection and refuse it
/// rather than loop back to themselves. Fails with `ENOENT` (`io::ErrorKind::NotFound`)
/// when conntrack does not track the connection at all.
pub fn original_dst(stream: &tokio::net::TcpStream) -> io::Result<SocketAddr> {
    original_dst_fd(stream, stream.peer_addr()?)
}

/// [`original_dst`] for any connected TCP socket (`std::net::TcpStream`, a raw `OwnedFd`):
/// `peer` selects the address family (an IPv4-mapped IPv6 peer counts as IPv4).
pub fn original_dst_fd<F: AsFd>(socket: &F, peer: SocketAddr) -> io::Result<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let is_v4 = match peer.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    if is_v4 {
        let sin = getsockopt(socket, sockopt::OriginalDst).map_err(io::Error::from)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            u32::from_be(sin.sin_addr.s_addr).into(),
            u16::from_be(sin.sin_port),
        )))
    } else {
        let sin6 = getsockopt(socket, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            sin6.sin6_addr.s6_addr.into(),
            u16::from_be(sin6.sin6_port),
            u32::from_be(sin6.sin6_flowinfo),
            sin6.sin6_scope_id,
        )))
    }
}
