//! `ferrule-bench-load`: a *fixed amount* of HTTP/1.1 work against a URL-less target, for
//! instruction counts (`benches/count.sh`), where the time-based load tools (wrk, oha -z)
//! would make every run do a different amount of work.
//!
//! Modes (all against `--target`, e.g. the client proxy's upstream port, with nginx behind
//! the pair):
//! * `conn`: `--n` requests, each on a new TCP connection (`Connection: close`), at most
//!   `--concurrency` at once: through a pair, every one is a new mesh connection.
//! * `req`: `--n` requests over `--concurrency` keep-alive connections, opened first.
//! * `bulk`: one request for `--mib` MiB of `--path` (a `Range` request), read to the end.
//!
//! With `--ready-file PATH` (modes `req` and `bulk`) the connections are opened and carry
//! one request each first; then the tool creates PATH and waits until it is removed before
//! the measured work, so a counter reset in between (`callgrind_control -z`) leaves
//! connection set-up out of the count.
//!
//! Every response must be `200`/`206` with the expected body length, or the run fails:
//! a counted workload that silently did less work would make the counts lie. Prints
//! `key value` lines (`done`, `failures`, `seconds`, `bytes`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Conn,
    Req,
    Bulk,
}

#[derive(Debug, Parser)]
#[command(about = "A fixed amount of HTTP/1.1 work (new connections, keep-alive requests, bulk)")]
struct Args {
    /// Where to connect.
    #[arg(long)]
    target: SocketAddr,
    /// What to do.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Requests (conn, req).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Connections in flight (conn) or keep-alive connections (req).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Bytes to download in `bulk` mode, in MiB.
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Upper bound for the whole run, seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Open and warm the connections, create this file, and start the measured work once
    /// it has been removed (`req` and `bulk`).
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

/// Creates `path` and waits until someone removes it.
async fn signal_ready_and_wait(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::write(path, b"ready\n").with_context(|| format!("creating {}", path.display()))?;
    while path.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs_f64(args.timeout);
    rt.block_on(async {
        tokio::time::timeout(limit, run(&args))
            .await
            .with_context(|| format!("the workload exceeded {limit:?}"))?
    })
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut bytes = 0u64;
    match args.mode {
        Mode::Conn | Mode::Req => {
            let next = Arc::new(AtomicUsize::new(0));
            // Keep-alive connections, opened and warmed before the measured requests.
            let mut warm: Vec<Option<Conn>> = Vec::new();
            if matches!(args.mode, Mode::Req) && args.ready_file.is_some() {
                for _ in 0..args.concurrency.max(1) {
                    let mut c = Conn::open(args.target).await?;
                    c.get(&args.path, true, None).await?;
                    warm.push(Some(c));
                }
            }
            if let Some(p) = &args.ready_file {
                signal_ready_and_wait(p).await?;
            }
            let t0 = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..args.concurrency.max(1) {
                let (next, done, failures) = (next.clone(), done.clone(), failures.clone());
                let (target, n, path, mode) = (args.target, args.n, args.path.clone(), args.mode);
                let first = warm.get_mut(i).and_then(Option::take);
                tasks.spawn(async move {
                    let mut conn: Option<Conn> = first;
                    let mut moved = 0u64;
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let keep = matches!(mode, Mode::Req);
                        if conn.is_none() {
                            conn = Conn::open(target).await.ok();
                        }
                        let r = match conn.as_mut() {
                            Some(c) => c.get(&path, keep, None).await,
                            None => Err(anyhow::anyhow!("connect failed")),
                        };
                        let ok = match r {
                            Ok(len) => {
                                moved += len;
                                done.fetch_add(1, Ordering::Relaxed);
                                true
                            }
                            Err(e) => {
                                if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                                    eprintln!("# request failed: {e:#}");
                                }
                                false
                            }
                        };
                        if !keep || !ok {
                            conn = None;
                        }
                    }
                    moved
                });
            }
            while let Some(r) = tasks.join_next().await {
                bytes += r?;
            }
            println!("measured_seconds {:.3}", t0.elapsed().as_secs_f64());
        }
        Mode::Bulk => {
            let mut c = Conn::open(args.target).await?;
            if let Some(p) = &args.ready_file {
                c.get("/", true, None).await?;
                signal_ready_and_wait(p).await?;
            }
            let want = args.mib << 20;
            bytes = c.get(&args.path, false, Some(want)).await?;
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let (done, failures) = (
        done.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    println!("done {done}");
    println!("failures {failures}");
    println!("bytes {bytes}");
    println!("seconds {:.3}", t0.elapsed().as_secs_f64());
    if failures > 0 {
        bail!("{failures} requests failed");
    }
    Ok(())
}

/// One client connection with a read buffer.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(target: SocketAddr) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            tcp,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends one GET and reads the whole response; returns the body length. `range`:
    /// ask for exactly that many bytes (206 expected).
    async fn get(
        &mut self,
        path: &str,
        keep_alive: bool,
        range: Option<u64>,
    ) -> anyhow::Result<u64> {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n");
        if !keep_alive {
            req.push_str("Connection: close\r\n");
        }
        if let Some(n) = range {
            req.push_str(&format!("Range: bytes=0-{}\r\n", n.saturating_sub(1)));
        }
        req.push_str("\r\n");
        self.tcp.write_all(req.as_bytes()).await?;
        // Headers.
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                bail!("response headers too long");
            }
            let mut chunk = [0u8; 8192];
            let n = self.tcp.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed before the response headers");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..end]).context("headers are not UTF-8")?;
        let status = head.split(' ').nth(1).unwrap_or("");
        let expect = if range.is_some() { "206" } else { "200" };
        if status != expect {
            bail!("status {status:?}, expected {expect}");
        }
        let len: u64 = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("no content-length")?;
        if let Some(n) = range
            && len != n
        {
            bail!("content-length {len}, expected {n}");
        }
        // Body.
        let mut have = (self.buf.len() - end) as u64;
        let mut big = vec![0u8; 64 * 1024];
        while have < len {
            let n = self.tcp.read(&mut big).await?;
            if n == 0 {
                bail!("connection closed after {have} of {len} body bytes");
            }
            have += n as u64;
        }
        if have > len {
            bail!("{} bytes after the body", have - len);
        }
        self.buf.clear();
        if !keep_alive {
            // The server closes: read to EOF so the close is part of the measured work.
            let mut rest = [0u8; 64];
            while self.tcp.read(&mut rest).await? > 0 {}
        }
        Ok(len)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
