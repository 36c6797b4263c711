//! External tools the adversarial tests drive as subprocesses, and what the tests read
//! back from the processes they start.
//!
//! * Python tools (sslyze, the `h2` package, slowloris) live in a virtualenv that
//!   `tests/ci/python-tools.sh` builds from the pinned `tests/ci/requirements.txt`;
//!   `tests/run.sh` exports its bin directory as `FERRULE_TOOLS_BIN`.
//! * Debian tools (testssl.sh, nmap, prlimit) come from `tests/run.sh`'s package list.
//!
//! A missing tool fails the test with the command that installs it, unless
//! `FERRULE_SKIP_GRADERS=1` is set: then the test prints `SKIPPED: ...` and passes.
//! Nobody should have to remember to install a grader for it to run in CI.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to skip (rather than fail) tests whose external tools are missing.
pub const SKIP_ENV: &str = "FERRULE_SKIP_GRADERS";

/// The virtualenv's bin directory: `$FERRULE_TOOLS_BIN`, else
/// `${FERRULE_TOOLS_VENV:-$HOME/.cache/ferrule/venv}/bin` (python-tools.sh's default).
pub fn venv_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FERRULE_TOOLS_BIN") {
        return bin.into();
    }
    let venv = std::env::var_os("FERRULE_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/ferrule/venv")
        });
    venv.join("bin")
}

/// Whether missing tools mean "skip".
pub fn skipping() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

fn missing(what: &str, install: &str) -> Option<PathBuf> {
    if skipping() {
        eprintln!("SKIPPED: {what} is not installed ({SKIP_ENV}=1)");
        return None;
    }
    panic!(
        "{what} is not installed: run tests/run.sh (it installs every tool), or `{install}`; \
         set {SKIP_ENV}=1 to skip these tests instead"
    );
}

/// A program from the tools virtualenv (e.g. `sslyze`, `slowloris`).
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let p = venv_bin().join(name);
    if p.is_file() {
        return Some(p);
    }
    missing(
        &format!("{name} (PyPI, in {})", venv_bin().display()),
        "tests/ci/python-tools.sh",
    )
}

/// The virtualenv's Python, checked to import every module in `modules`.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let python = venv_bin().join("python3");
    let imports = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = python.is_file()
        && Command::new(&python)
            .args(["-c", &imports])
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    missing(
        &format!("Python modules {modules:?} (in {})", venv_bin().display()),
        "tests/ci/python-tools.sh",
    )
}

/// A program on `PATH` from the Debian package `package`.
pub fn system_tool(program: &str, package: &str) -> Option<PathBuf> {
    match crate::netns::which(program) {
        Some(p) => Some(p),
        None => missing(
            &format!("{program} (Debian package {package})"),
            &format!("apt-get install {package}"),
        ),
    }
}

/// The Debian package that ships `program`, for the install hint of a missing tool
/// (the packages `tests/run.sh` installs).
pub fn debian_package(program: &str) -> &str {
    match program {
        "nft" => "nftables",
        "setpriv" | "prlimit" | "nsenter" => "util-linux",
        "gnutls-cli" => "gnutls-bin",
        "testssl" => "testssl.sh",
        p if p.starts_with("iptables") || p.starts_with("ip6tables") => "iptables",
        p => p,
    }
}

/// A probe script shipped in `tests/probes/`.
pub fn probe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("probes")
        .join(name)
}

/// Resident memory of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a tool run by [`run`] did.
#[derive(Debug)]
pub struct Ran {
    /// Its exit status and output.
    pub output: Output,
    /// It was killed because it ran past the timeout.
    pub timed_out: bool,
}

impl Ran {
    /// stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    /// stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs `cmd` to completion, or kills it after `timeout` (a hung tool must not hang the
/// suite), collecting its output either way.
pub fn run(mut cmd: Command, timeout: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    let collect = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let err = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for a killed child");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        output: Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        },
        timed_out,
    }
}
