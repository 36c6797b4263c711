//! Network namespaces for end-to-end tests that need real netfilter rules: a private,
//! uniquely named namespace per test, veth links between two of them, commands and
//! in-process sockets inside, everything deleted on drop.
//!
//! Needs root and `ip netns`; tests call [`skip_reason`] (or the [`require_netns!`]
//! macro) first and return early with a printed reason instead of failing elsewhere.
//!
//! Addresses live only inside the namespaces (`10.250.<subnet>.0/24` and
//! `fd00:250:<subnet>::/64`), so no test packet can leave the machine: a veth pair joins
//! two test namespaces and nothing else.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use ferrule_tests::netns::{NetNs, veth};
//! let pod = NetNs::new("pod")?;
//! let peer = NetNs::new("peer")?;
//! let link = veth(&pod, &peer, 1)?; // pod 10.250.1.1 / fd00:250:1::1, peer .2 / ::2
//! let listener = peer.enter(|| std::net::TcpListener::bind((link.b.v4, 8080)))??;
//! let out = pod.output("nft", ["list", "ruleset"])?;
//! # Ok(()) }
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};

/// Prefix of every namespace this harness creates (`<prefix><pid>-<n>-<tag>`).
const PREFIX: &str = "ferrule-t";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why namespace tests cannot run here (`None` when they can): not root, or no working
/// `ip netns`.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network namespace tests need root".into());
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`ip netns list` failed ({})", out.status)),
        Err(e) => Some(format!("`ip` (iproute2) is not available: {e}")),
    }
}

/// Where `program` is on `PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    })
}

/// Whether `program` is on `PATH` (for tests that also need `nft`, `iptables-save`...).
pub fn have(program: &str) -> bool {
    which(program).is_some()
}

/// Returns from the calling test, printing why, when namespaces are unavailable (not
/// root, no `ip netns`). A listed program that is missing fails the test like any
/// missing tool ([`crate::tools::system_tool`]), or skips it with
/// `FERRULE_SKIP_GRADERS=1`.
#[macro_export]
macro_rules! require_netns {
    ($($program:expr),* $(,)?) => {
        if let Some(reason) = $crate::netns::skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
        $(
            if $crate::tools::system_tool($program, $crate::tools::debian_package($program))
                .is_none()
            {
                return;
            }
        )*
    };
}

/// A network namespace created with `ip netns add`, with `lo` up; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes namespaces left behind by earlier test processes that died before their drops.
fn reap_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

impl NetNs {
    /// Creates a fresh namespace; `tag` (a short word) only makes the name readable.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        if COUNTER.load(Ordering::Relaxed) == 0 {
            reap_stale();
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> <program>`: add arguments, then spawn or run it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args...` inside and returns its output, whatever its exit status.
    pub fn output<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        cmd.output().with_context(|| format!("run {cmd:?}"))
    }

    /// Runs `program args...` inside; fails unless it exits 0; returns its stdout.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref().to_owned();
        let out = self.output(&program, args)?;
        if !out.status.success() {
            bail!(
                "{} in {} failed ({}): {}",
                program.to_string_lossy(),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `program args...` inside (stdout and stderr piped).
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> anyhow::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().with_context(|| format!("spawn {cmd:?}"))
    }

    /// Runs `f` on a thread that has joined this namespace, so sockets it creates belong
    /// to the namespace for their whole life (they can be used from any thread afterwards).
    /// The calling thread and the rest of the process are not moved.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        enter_named(&self.name, f)
    }
}

/// [`NetNs::enter`] by namespace name (`ip netns` name), for code that only holds the name
/// (e.g. a process started inside a namespace).
pub fn enter_named<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let handle = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("open /run/netns/{name}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&handle, CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also destroys its end of every veth pair (and so the pair).
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("netns cleanup: {e:#}");
        }
    }
}

/// One end of a veth pair.
#[derive(Debug, Clone)]
pub struct Link {
    /// The namespace holding this end.
    pub netns: String,
    /// Interface name inside that namespace.
    pub ifname: String,
    /// Its IPv4 address (prefix /24).
    pub v4: Ipv4Addr,
    /// Its IPv6 address (prefix /64, no duplicate address detection: usable at once).
    pub v6: Ipv6Addr,
}

/// A veth pair between two namespaces; it disappears with either namespace.
#[derive(Debug, Clone)]
pub struct VethPair {
    /// The end in the first namespace: `10.250.<subnet>.1`, `fd00:250:<subnet>::1`.
    pub a: Link,
    /// The end in the second namespace: `10.250.<subnet>.2`, `fd00:250:<subnet>::2`.
    pub b: Link,
}

/// Joins `a` and `b` with a veth pair on subnet `subnet` (pick distinct subnets for
/// several pairs on the same namespace). The pair is created directly inside the
/// namespaces, so its names never clash with the host's or another test's.
pub fn veth(a: &NetNs, b: &NetNs, subnet: u8) -> anyhow::Result<VethPair> {
    let ifname = format!("veth{subnet}");
    ip(&[
        "-n", &a.name, "link", "add", &ifname, "type", "veth", "peer", "name", &ifname, "netns",
        &b.name,
    ])?;
    let end = |ns: &NetNs, host: u8| -> anyhow::Result<Link> {
        let v4 = Ipv4Addr::new(10, 250, subnet, host);
        let v6 = Ipv6Addr::new(
            0xfd00,
            0x250,
            u16::from(subnet),
            0,
            0,
            0,
            0,
            u16::from(host),
        );
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            &ifname,
        ])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            &ifname,
            "nodad",
        ])?;
        ip(&["-n", &ns.name, "link", "set", &ifname, "up"])?;
        Ok(Link {
            netns: ns.name.clone(),
            ifname: ifname.clone(),
            v4,
            v6,
        })
    };
    Ok(VethPair {
        a: end(a, 1)?,
        b: end(b, 2)?,
    })
}

/// One shared L2 segment: a bridge `br<subnet>` in a hub namespace with one veth port per
/// member namespace, all on one /24 and /64, so every member reaches the hub and every
/// other member directly (like pods on a node's bridge).
#[derive(Debug, Clone)]
pub struct Lan {
    /// The bridge's own address, in the hub namespace: `10.250.<subnet>.1`,
    /// `fd00:250:<subnet>::1`.
    pub hub: Link,
    /// Member `i`'s interface: `10.250.<subnet>.<i + 2>`, `fd00:250:<subnet>::<i + 2>`.
    pub members: Vec<Link>,
}

/// Builds a [`Lan`] with a bridge in `hub` and one port per member (at most 200 members).
/// Everything disappears with the namespaces.
pub fn bridge(hub: &NetNs, members: &[&NetNs], subnet: u8) -> anyhow::Result<Lan> {
    let addrs = |host: u8| {
        (
            Ipv4Addr::new(10, 250, subnet, host),
            Ipv6Addr::new(
                0xfd00,
                0x250,
                u16::from(subnet),
                0,
                0,
                0,
                0,
                u16::from(host),
            ),
        )
    };
    let address = |ns: &str, ifname: &str, host: u8| -> anyhow::Result<Link> {
        let (v4, v6) = addrs(host);
        ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", ifname])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            ifname,
            "nodad",
        ])?;
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        Ok(Link {
            netns: ns.to_string(),
            ifname: ifname.to_string(),
            v4,
            v6,
        })
    };
    anyhow::ensure!(members.len() <= 200, "too many members");
    let br = format!("br{subnet}");
    ip(&[
        "-n",
        &hub.name,
        "link",
        "add",
        &br,
        "type",
        "bridge",
        "forward_delay",
        "0",
        "stp_state",
        "0",
    ])?;
    let hub_link = address(&hub.name, &br, 1)?;
    let mut links = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let port = format!("p{subnet}-{i}");
        let ifname = format!("eth{subnet}");
        ip(&[
            "-n", &hub.name, "link", "add", &port, "type", "veth", "peer", "name", &ifname,
            "netns", &m.name,
        ])?;
        ip(&["-n", &hub.name, "link", "set", &port, "master", &br])?;
        ip(&["-n", &hub.name, "link", "set", &port, "up"])?;
        links.push(address(&m.name, &ifname, i as u8 + 2)?);
    }
    Ok(Lan {
        hub: hub_link,
        members: links,
    })
}

/// A TCP connection made inside `ns` from source address `from` (bound before
/// connecting, any port) to `to`: how a test makes a namespace with several addresses
/// (a node's primary address and its address on a pod link) speak from a chosen one.
pub fn connect_from(
    ns: &NetNs,
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> anyhow::Result<std::net::TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, socket,
    };
    use std::os::fd::AsRawFd;
    ns.enter(|| -> anyhow::Result<std::net::TcpStream> {
        let family = if from.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        let local = SockaddrStorage::from(std::net::SocketAddr::new(from, 0));
        bind(fd.as_raw_fd(), &local).with_context(|| format!("bind {from}"))?;
        connect(fd.as_raw_fd(), &SockaddrStorage::from(to))
            .with_context(|| format!("connect from {from} to {to} in {}", ns.name))?;
        Ok(std::net::TcpStream::from(fd))
    })?
}
