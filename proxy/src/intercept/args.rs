//! `ferrule-proxy init` flags and `FERRULE_*` variables, validated into [`InitConfig`].
//!
//! Values are taken as strings and parsed here (not by clap) so that a bad value names its
//! flag and variable and exits 64, the convention for usage errors.

use clap::Args as ClapArgs;

use super::InitError;
use super::probe::ProbeSource;
use super::rules::Cidr;

/// Raw arguments of `ferrule-proxy init`.
#[derive(Debug, Clone, ClapArgs)]
pub struct InitArgs {
    /// Remove the rules a previous `init` installed (only Ferrule's own table/chains), then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Port of the proxy's outbound listener; captured outbound TCP is redirected there.
    #[arg(long, env = "FERRULE_OUTBOUND_PORT", default_value = "15001")]
    pub outbound_port: String,
    /// Port of the proxy's inbound listener; captured inbound TCP is redirected there.
    #[arg(long, env = "FERRULE_INBOUND_PORT", default_value = "15006")]
    pub inbound_port: String,
    /// The uid the proxy runs as; its connections are never captured (no loop).
    #[arg(long, env = "FERRULE_PROXY_UID", default_value = "1337")]
    pub proxy_uid: String,
    /// A socket mark (SO_MARK, decimal or 0x-hex) the proxy sets on its upstream sockets;
    /// connections carrying it are never captured. Optional, in addition to the uid.
    #[arg(long, env = "FERRULE_PROXY_MARK")]
    pub proxy_mark: Option<String>,
    /// Comma-separated destination ports whose inbound connections are not captured.
    #[arg(long, env = "FERRULE_SKIP_INBOUND_PORTS", default_value = "")]
    pub skip_inbound_ports: String,
    /// Comma-separated ports whose inbound connections are not captured when they come
    /// from one of --probe-sources (kubelet probes from the node); from anywhere else
    /// they are. Nothing is exempted while --probe-sources is empty (fail closed).
    #[arg(long, env = "FERRULE_PROBE_PORTS", default_value = "")]
    pub probe_ports: String,
    /// Comma-separated sources for --probe-ports: IP addresses, CIDRs (not /0), or
    /// `gateway` (this namespace's default gateways, which is the node's address on the
    /// pod link with bridge and point-to-point CNIs). Empty entries are ignored.
    #[arg(long, env = "FERRULE_PROBE_SOURCES", default_value = "")]
    pub probe_sources: String,
    /// Comma-separated destination ports whose outbound connections are not captured.
    #[arg(long, env = "FERRULE_SKIP_OUTBOUND_PORTS", default_value = "")]
    pub skip_outbound_ports: String,
    /// Comma-separated IPv4/IPv6 CIDRs (or bare addresses) excluded from outbound capture.
    #[arg(long, env = "FERRULE_SKIP_CIDRS", default_value = "")]
    pub skip_cidrs: String,
    /// The proxy's own ports (admin, outbound, inbound): never redirected inbound.
    #[arg(long, env = "FERRULE_OWN_PORTS", default_value = "15000,15001,15006")]
    pub own_ports: String,
    /// Do not capture inbound connections.
    #[arg(long, env = "FERRULE_NO_INBOUND")]
    pub no_inbound: bool,
    /// Do not capture outbound connections.
    #[arg(long, env = "FERRULE_NO_OUTBOUND")]
    pub no_outbound: bool,
    /// How to program netfilter: `nft` (built-in netlink, no tools needed), `iptables`
    /// (`iptables-restore`/`ip6tables-restore`), or `auto` (nft, else iptables).
    #[arg(long, env = "FERRULE_BACKEND", default_value = "auto")]
    pub backend: String,
    /// Skip the post-install check that a connection really gets redirected.
    #[arg(long, env = "FERRULE_NO_VALIDATE")]
    pub no_validate: bool,
    /// Log format: `text` or `json`.
    #[arg(long, env = "FERRULE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Which netfilter interface `init` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nftables over netlink when the kernel accepts it, else iptables.
    Auto,
    /// nftables over netlink only.
    Nft,
    /// `iptables-restore` / `ip6tables-restore` only.
    Iptables,
}

/// Validated `init` configuration: plain data, one line to build in a test
/// (`InitConfig { outbound_port: 9, ..InitConfig::default() }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// Remove instead of install.
    pub cleanup: bool,
    /// Redirect target for outbound TCP.
    pub outbound_port: u16,
    /// Redirect target for inbound TCP.
    pub inbound_port: u16,
    /// Connections owned by this uid are not captured.
    pub proxy_uid: u32,
    /// Connections carrying this socket mark are not captured.
    pub proxy_mark: Option<u32>,
    /// Inbound destination ports not captured (in addition to `own_ports`).
    pub skip_inbound_ports: Vec<u16>,
    /// Inbound destination ports not captured from [`InitConfig::probe_sources`] only.
    pub probe_ports: Vec<u16>,
    /// Where probe connections may come from (see `intercept::probe`).
    pub probe_sources: Vec<ProbeSource>,
    /// Outbound destination ports not captured.
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destinations not captured.
    pub skip_cidrs: Vec<Cidr>,
    /// The proxy's own ports, never redirected inbound.
    pub own_ports: Vec<u16>,
    /// Capture inbound connections.
    pub inbound: bool,
    /// Capture outbound connections.
    pub outbound: bool,
    /// Netfilter interface.
    pub backend: Backend,
    /// Prove the redirect after installing.
    pub validate: bool,
    /// JSON logs.
    pub log_json: bool,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            cleanup: false,
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            proxy_mark: None,
            skip_inbound_ports: Vec::new(),
            probe_ports: Vec::new(),
            probe_sources: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_cidrs: Vec::new(),
            own_ports: vec![15000, 15001, 15006],
            inbound: true,
            outbound: true,
            backend: Backend::Auto,
            validate: true,
            log_json: false,
        }
    }
}

fn bad(flag: &'static str, reason: impl Into<String>) -> InitError {
    InitError::InvalidFlag {
        flag,
        reason: reason.into(),
    }
}

fn port(flag: &'static str, s: &str) -> Result<u16, InitError> {
    match s.trim().parse::<u16>() {
        Ok(0) => Err(bad(flag, "port 0 is not a port")),
        Ok(p) => Ok(p),
        Err(_) => Err(bad(flag, format!("{s:?} is not a port number (1-65535)"))),
    }
}

fn list<T>(
    flag: &'static str,
    s: &str,
    mut item: impl FnMut(&'static str, &str) -> Result<T, InitError>,
) -> Result<Vec<T>, InitError> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| item(flag, x))
        .collect()
}

fn u32_value(flag: &'static str, s: &str) -> Result<u32, InitError> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| bad(flag, format!("{s:?} is not an unsigned 32-bit number")))
}

impl InitArgs {
    /// Validates every value, naming the flag and variable of the first bad one.
    pub fn validate(self) -> Result<InitConfig, InitError> {
        const OUT: &str = "--outbound-port / FERRULE_OUTBOUND_PORT";
        const IN: &str = "--inbound-port / FERRULE_INBOUND_PORT";
        const UID: &str = "--proxy-uid / FERRULE_PROXY_UID";
        const MARK: &str = "--proxy-mark / FERRULE_PROXY_MARK";
        const SKIP_IN: &str = "--skip-inbound-ports / FERRULE_SKIP_INBOUND_PORTS";
        const PROBE_PORTS: &str = "--probe-ports / FERRULE_PROBE_PORTS";
        const PROBE_SOURCES: &str = "--probe-sources / FERRULE_PROBE_SOURCES";
        const SKIP_OUT: &str = "--skip-outbound-ports / FERRULE_SKIP_OUTBOUND_PORTS";
        const CIDRS: &str = "--skip-cidrs / FERRULE_SKIP_CIDRS";
        const OWN: &str = "--own-ports / FERRULE_OWN_PORTS";
        const BACKEND: &str = "--backend / FERRULE_BACKEND";
        const LOG: &str = "--log-format / FERRULE_LOG_FORMAT";

        let outbound_port = port(OUT, &self.outbound_port)?;
        let inbound_port = port(IN, &self.inbound_port)?;
        let proxy_uid = u32_value(UID, &self.proxy_uid)?;
        if proxy_uid == 0 {
            return Err(bad(
                UID,
                "0 (root) would exempt every root process from the mesh; run the proxy as its own uid",
            ));
        }
        let proxy_mark = match self.proxy_mark.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => match u32_value(MARK, s)? {
                0 => {
                    return Err(bad(
                        MARK,
                        "0 is the mark of unmarked sockets; choose a non-zero mark",
                    ));
                }
                m => Some(m),
            },
        };
        let skip_inbound_ports = list(SKIP_IN, &self.skip_inbound_ports, port)?;
        let probe_ports = list(PROBE_PORTS, &self.probe_ports, port)?;
        let probe_sources = list(PROBE_SOURCES, &self.probe_sources, |flag, s| {
            s.parse::<ProbeSource>()
                .map_err(|e| bad(flag, e.to_string()))
        })?;
        let skip_outbound_ports = list(SKIP_OUT, &self.skip_outbound_ports, port)?;
        let skip_cidrs = list(CIDRS, &self.skip_cidrs, |flag, s| {
            s.parse::<Cidr>().map_err(|e| bad(flag, e.to_string()))
        })?;
        let own_ports = list(OWN, &self.own_ports, port)?;
        let backend = match self.backend.trim() {
            "auto" => Backend::Auto,
            "nft" | "nftables" => Backend::Nft,
            "iptables" => Backend::Iptables,
            other => {
                return Err(bad(
                    BACKEND,
                    format!("{other:?}: expected auto, nft or iptables"),
                ));
            }
        };
        let log_json = match self.log_format.trim() {
            "text" => false,
            "json" => true,
            other => return Err(bad(LOG, format!("{other:?}: expected text or json"))),
        };
        let inbound = !self.no_inbound;
        let outbound = !self.no_outbound;
        if !self.cleanup {
            if !inbound && !outbound {
                return Err(bad(
                    "--no-inbound / --no-outbound",
                    "both directions disabled: nothing to capture (use --cleanup to remove rules)",
                ));
            }
            if outbound && inbound && outbound_port == inbound_port {
                return Err(bad(
                    OUT,
                    format!("{outbound_port} is also the inbound port"),
                ));
            }
        }
        Ok(InitConfig {
            cleanup: self.cleanup,
            outbound_port,
            inbound_port,
            proxy_uid,
            proxy_mark,
            skip_inbound_ports,
            probe_ports,
            probe_sources,
            skip_outbound_ports,
            skip_cidrs,
            own_ports,
            inbound,
            outbound,
            backend,
            validate: !self.no_validate,
            log_json,
        })
    }
}
