//! Child-process management for the real binaries. Every child is killed on drop, and
//! its log is kept in the test's temp dir so a failing test can print it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Path of a workspace binary in the Cargo target directory.
pub fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let p = target.join(profile).join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (`cargo build --bins`, or run tests/run.sh)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 for a child process to bind.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`), handed out
/// by a process-wide counter: a port the kernel picked for `bind(…:0)` and released at
/// once can be picked again by another test, or taken as the source port of any outgoing
/// connection, before the child binds it (CI saw both). Ports outside the ephemeral range
/// are never assigned implicitly, and the counter never repeats one within a test binary.
/// The start is spread by PID so test binaries run back to back do not reuse the ports of
/// children still closing. Each port is checked bindable before it is returned. (Two test
/// binaries running at the same time can still race between that check and a child's
/// bind; `cargo test` runs them one after the other.)
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};

    static RANGE: OnceLock<(u32, u32)> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let &(low, span) = RANGE.get_or_init(|| {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32768);
        // Above the benchmarks' ports (benches/lib/ferrule.sh: 22000-23443 by default),
        // so tests run beside a benchmark do not take them.
        let low = 24_000u32;
        let span = ephemeral_low.saturating_sub(low);
        // In u64: PIDs go up to 2^22 (`kernel.pid_max`), and PID × 7919 overflows a u32
        // (a panic in debug builds) past PID 542,354.
        let start = u64::from(std::process::id()) * 7919 % u64::from(span.max(1));
        NEXT.store(u32::try_from(start).expect("below span"), Ordering::Relaxed);
        (low, span)
    });
    if span < 1000 {
        // No room below the ephemeral range: fall back to a kernel-picked port.
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
    }
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("port below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{low}..{}", low + span)
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
        Ok(Self { child, log })
    }

    fn stop(&mut self) {
        // SIGTERM first, so graceful shutdown is exercised; then SIGKILL.
        let pid = self.child.id() as i32;
        unsafe_kill(pid, 15);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    // `kill` from the shell keeps this crate free of libc/unsafe.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A command for `bin`, run inside the network namespace `netns` (`ip netns exec`) and as
/// `uid`/gid `uid` with no supplementary groups (`setpriv`) when given. Both tools exec the
/// program, so the child's pid is the program's.
fn command_in(bin: PathBuf, netns: Option<&str>, uid: Option<u32>) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns].map(Into::into));
    }
    if let Some(uid) = uid {
        argv.push("setpriv".into());
        argv.push(format!("--reuid={uid}").into());
        argv.push(format!("--regid={uid}").into());
        argv.push("--clear-groups".into());
    }
    argv.push(bin.into_os_string());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// Whether `addr` accepts TCP, tried from inside `netns` when given.
fn tcp_accepts(addr: SocketAddr, netns: Option<&str>) -> bool {
    let dial = move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
    match netns {
        None => dial(),
        Some(ns) => crate::netns::enter_named(ns, dial).unwrap_or(false),
    }
}

/// Options for starting the control plane.
#[derive(Debug, Clone)]
pub struct CpOptions {
    /// Trust domain.
    pub trust_domain: String,
    /// Certificate lifetime given to `--svid-ttl` (e.g. "1h", "6s").
    pub svid_ttl: String,
    /// Extra arguments.
    pub extra_args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Run inside this network namespace (`ip netns` name); set `listen` to one of its
    /// addresses then.
    pub netns: Option<String>,
    /// Identity API address (default: a free port on 127.0.0.1).
    pub listen: Option<SocketAddr>,
}

impl Default for CpOptions {
    fn default() -> Self {
        Self {
            trust_domain: "demo.local".into(),
            svid_ttl: "1h".into(),
            extra_args: vec![],
            env: vec![],
            netns: None,
            listen: None,
        }
    }
}

/// A running `ferrule-control-plane` with its own data directory.
pub struct ControlPlane {
    proc: Option<Running>,
    /// Temporary directory holding the data dir and logs.
    pub dir: tempfile::TempDir,
    /// Identity API address.
    pub addr: SocketAddr,
    /// `/metrics` and `/healthz` address.
    pub metrics_addr: SocketAddr,
    /// Options it was started with (reused by `restart`).
    pub opts: CpOptions,
    starts: u32,
}

impl ControlPlane {
    /// Starts a control plane and waits until it serves.
    pub fn start(opts: CpOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr: SocketAddr = match opts.listen {
            Some(a) => a,
            None => format!("127.0.0.1:{}", free_port()).parse()?,
        };
        // Loopback in whichever namespace it runs in; a free host port is free there too.
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut cp = Self {
            proc: None,
            dir,
            addr,
            metrics_addr,
            opts,
            starts: 0,
        };
        cp.spawn()?;
        cp.wait_serving()?;
        Ok(cp)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir().join("admin.sock")
    }

    /// The bundle PEM the control plane writes for proxies.
    pub fn bundle_file(&self) -> PathBuf {
        self.data_dir().join("bundle.pem")
    }

    fn command(&self) -> Command {
        let mut cmd = command_in(
            bin_path("ferrule-control-plane"),
            self.opts.netns.as_deref(),
            None,
        );
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--trust-domain")
            .arg(&self.opts.trust_domain)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics_addr.to_string())
            .arg("--svid-ttl")
            .arg(&self.opts.svid_ttl)
            .args(&self.opts.extra_args)
            .env("RUST_LOG", "info,ferrule_control_plane=debug");
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawns the process without waiting (for tests that expect a start-up failure).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("control-plane.{}.log", self.starts));
        self.proc = Some(Running::spawn(self.command(), log)?);
        Ok(())
    }

    /// Runs the control plane binary to completion with the given extra args (for
    /// start-up validation tests); returns its output.
    pub fn run_to_exit(&self, extra: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = self.command();
        cmd.args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(child.wait_with_output()?);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "control plane did not exit: {:?}",
                    child.wait_with_output()?
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the identity API accepts TCP and the admin socket answers.
    pub fn wait_serving(&mut self) -> anyhow::Result<()> {
        let ok = wait_for(Duration::from_secs(20), || {
            if let Some(p) = self.proc.as_mut()
                && p.exited().is_some()
            {
                return Some(false);
            }
            let up = tcp_accepts(self.addr, self.opts.netns.as_deref())
                && self.admin_socket().exists()
                && self.bundle_file().exists();
            up.then_some(true)
        });
        match ok {
            Some(true) => Ok(()),
            _ => bail!("control plane did not start; log:\n{}", self.log()),
        }
    }

    /// Stops (SIGTERM, then SIGKILL) the control plane.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Kills the control plane abruptly.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts it again on the same address and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()?;
        self.wait_serving()
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().and_then(|p| p.exited())
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Runs `ferrulectl` against this control plane.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_output(&self.admin_socket(), args)
    }

    /// Runs `ferrulectl` and returns stdout, failing on a non-zero exit.
    pub fn ctl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ctl(args);
        if !out.status.success() {
            bail!(
                "ferrulectl {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Creates a join token and returns the secret.
    pub fn create_token(&self, spiffe_id: &str, uses: u32, ttl: &str) -> anyhow::Result<String> {
        let uses = uses.to_string();
        let out = self.ctl_ok(&[
            "token",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--uses",
            &uses,
            "--ttl",
            ttl,
        ])?;
        Ok(out.trim().to_string())
    }
}

/// Runs `ferrulectl --socket <socket> <args>`.
pub fn ctl_output(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin_path("ferrulectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run ferrulectl")
}

/// Options for starting a proxy.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Join token (passed through a 0600 file, as recommended).
    pub token: Option<String>,
    /// Expected SPIFFE ID (`--spiffe-id`).
    pub spiffe_id: Option<String>,
    /// Extra arguments to `ferrule-proxy run`.
    pub extra_args: Vec<String>,
    /// Data-path config file contents (YAML), passed with `--config`.
    pub config_yaml: Option<String>,
    /// Run inside this network namespace (`ip netns` name). The admin endpoint is then
    /// reached from inside it, too.
    pub netns: Option<String>,
    /// Run as this uid and gid (e.g. 1337, the uid `ferrule-proxy init` exempts from
    /// interception). The proxy's files (token, config, a copy of the bundle) are given to it.
    pub uid: Option<u32>,
    /// `--admin-listen` (default: a free loopback port; `127.0.0.1:15000` in a namespace).
    pub admin_listen: Option<SocketAddr>,
    /// Start with this RLIMIT_NOFILE (soft and hard, through `prlimit`, which execs the
    /// proxy), so descriptor-exhaustion tests stay cheap.
    pub nofile: Option<u64>,
}

/// A running `ferrule-proxy`.
pub struct Proxy {
    proc: Option<Running>,
    dir: tempfile::TempDir,
    /// Admin endpoint address.
    pub admin: SocketAddr,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
}

impl Proxy {
    /// Starts a proxy against `cp` (does not wait for readiness).
    pub fn start(cp: &ControlPlane, opts: ProxyOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let admin: SocketAddr = match (opts.admin_listen, &opts.netns) {
            (Some(a), _) => a,
            (None, Some(_)) => SocketAddr::from(([127, 0, 0, 1], 15000)),
            (None, None) => format!("127.0.0.1:{}", free_port()).parse()?,
        };
        // Another uid cannot read the control plane's 0700 data directory: give it a copy.
        let bundle = match opts.uid {
            None => cp.bundle_file(),
            Some(_) => {
                let copy = dir.path().join("bundle.pem");
                std::fs::copy(cp.bundle_file(), &copy)?;
                copy
            }
        };
        let mut cmd = command_in(bin_path("ferrule-proxy"), opts.netns.as_deref(), opts.uid);
        if let Some(n) = opts.nofile {
            // `prlimit --nofile=N:N <program> <args>` execs the program: same pid.
            let program = cmd.get_program().to_owned();
            let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
            cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={n}:{n}")).arg(program).args(args);
        }
        cmd.arg("run")
            .arg("--trust-domain")
            .arg(&cp.opts.trust_domain)
            .arg("--control-plane")
            .arg(cp.addr.to_string())
            .arg("--bundle-file")
            .arg(bundle)
            .arg("--admin-listen")
            .arg(admin.to_string())
            .env("RUST_LOG", "info,ferrule_proxy=debug");
        if let Some(t) = &opts.token {
            let path = dir.path().join("token");
            std::fs::write(&path, t)?;
            cmd.arg("--join-token-file").arg(path);
        }
        if let Some(id) = &opts.spiffe_id {
            cmd.arg("--spiffe-id").arg(id);
        }
        // Without a config, still keep the inbound listener off the shared default port.
        let yaml = opts
            .config_yaml
            .clone()
            .unwrap_or_else(|| format!("inbound:\n  listen: 127.0.0.1:{}\n", free_port()));
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, yaml)?;
        cmd.arg("--config").arg(path);
        cmd.args(&opts.extra_args);
        if let Some(uid) = opts.uid {
            let owner = Some(uid);
            std::os::unix::fs::chown(dir.path(), owner, owner)?;
            for entry in std::fs::read_dir(dir.path())? {
                std::os::unix::fs::chown(entry?.path(), owner, owner)?;
            }
        }
        let log = dir.path().join("proxy.log");
        let proc = Running::spawn(cmd, log)?;
        Ok(Self {
            proc: Some(proc),
            dir,
            admin,
            netns: opts.netns.clone(),
        })
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    /// The proxy's log so far without the terminal colour codes it writes even to a
    /// file, so a test can match structured fields such as `reason="expired"`.
    pub fn plain_log(&self) -> String {
        strip_ansi(&self.log())
    }

    /// Waits (at most 5 s) until the proxy's [plain log](Self::plain_log) contains
    /// `needle` at least `count` times: the proxy logs a refusal just after closing the
    /// connection, so the client can see the close first.
    pub fn logged(&self, needle: &str, count: usize) -> bool {
        wait_for(Duration::from_secs(5), || {
            (self.plain_log().matches(needle).count() >= count).then_some(())
        })
        .is_some()
    }

    /// The process id while it runs (for `/proc/<pid>/status`, `prlimit`).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Temp dir of this proxy.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// GET on the admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        match &self.netns {
            None => crate::http::get(self.admin, path),
            Some(ns) => crate::netns::enter_named(ns, || crate::http::get(self.admin, path))?,
        }
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        match wait_for(timeout, || {
            matches!(self.admin_get("/ready"), Ok((200, _))).then_some(())
        }) {
            Some(()) => Ok(()),
            None => bail!(
                "proxy not ready after {timeout:?}: {:?}\nlog:\n{}",
                self.admin_get("/ready"),
                self.log()
            ),
        }
    }

    /// The `/identity` JSON.
    pub fn identity(&self) -> anyhow::Result<serde_json::Value> {
        let (code, body) = self.admin_get("/identity")?;
        anyhow::ensure!(code == 200, "/identity answered {code}: {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Current serial number, if any.
    pub fn serial(&self) -> Option<String> {
        self.identity()
            .ok()?
            .get("serial")?
            .as_str()
            .map(str::to_string)
    }

    /// Sends SIGTERM and waits for the exit (at most `timeout`); returns the status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let p = self.proc.as_mut()?;
        unsafe_kill(p.child.id() as i32, 15);
        wait_for(timeout, || p.exited())
    }

    /// Kills the proxy.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Whether it exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().and_then(|p| p.exited())
    }
}

/// `text` without ANSI CSI sequences (ESC `[` parameters, then a final letter).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
