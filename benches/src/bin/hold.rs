//! `ferrule-bench-hold`: memory per idle established connection through a proxy pair.
//!
//! For each count N in `--counts`: reads the RSS (VmRSS) and RssAnon of the `--pids`,
//! opens N TCP connections to `--target` (the client proxy's upstream port) and waits
//! until the `--sink` listener (the application behind the server proxy) has accepted
//! all N — so every connection is established end to end: app → client proxy, mTLS hop,
//! server proxy → app. After `--settle`, it reads the memory again, closes everything,
//! waits for the proxies to let go, and reads it a third time. No byte is sent: the
//! connections are idle.
//!
//! Counts may repeat (`1000,9900,9900`): a later wave reuses memory the allocator kept from
//! the earlier ones, which is what a long-running proxy with connection churn looks like.
//!
//! Prints `key value` lines, prefixed `w<wave>_n<count>`, e.g. `w1_n1000.bytes_per_conn.pair
//! 41234` (RSS growth during the wave / connections) and `...held_bytes_per_conn...` (RSS with
//! the connections open minus the RSS before the first wave, / connections). Bounded by
//! `--timeout` per phase. Raise the fd limit first (`ulimit -n 65536`): it needs 2N fds.
//!
//! `--local-copy ADDR` runs the proxy's copy loop in this process instead, as a baseline: a
//! plain-TCP relay on ADDR that, per accepted connection, dials `--sink` and runs
//! `ferrule_proxy::io::copy_bidirectional` (no TLS, no handshake), with `--target` = ADDR
//! and `--pids`/`--names` = this process. The difference to the real pair is what TLS and the
//! rest of the proxy add per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use ferrule_benches::relay::{self, listen};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(about = "Memory per idle established connection through a proxy pair")]
struct Args {
    /// Where to connect (the client proxy's upstream listener).
    #[arg(long)]
    target: SocketAddr,
    /// Listen here as the application behind the server proxy.
    #[arg(long)]
    sink: SocketAddr,
    /// Connection counts, one phase each, e.g. 1000,10000.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    counts: Vec<usize>,
    /// Processes to measure, e.g. 1234,5678.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Names of those processes (same order), used in the keys.
    #[arg(long, value_delimiter = ',')]
    names: Vec<String>,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds to wait after the last connection before reading memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Upper bound for one phase, seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Baseline: run a plain-TCP relay with the proxy's copy loop on this address (see above).
    #[arg(long)]
    local_copy: Option<SocketAddr>,
}

/// (VmRSS, RssAnon) in KiB.
fn mem_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("RssAnon:")))
}

/// Open file descriptors of `pid`; an error (process gone, no permission) rather than 0, which
/// would read as "every connection closed".
fn fd_count(pid: u32) -> anyhow::Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir}"))?
        .count())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.local_copy.is_none() && args.pids.len() != args.names.len() {
        bail!("--pids and --names must have the same length");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(addr) = args.local_copy {
        let listener =
            listen(addr).with_context(|| format!("binding the local relay on {addr}"))?;
        tokio::spawn(relay::serve(listener, args.sink));
        args.target = addr;
        args.pids = vec![std::process::id()];
        if args.names.is_empty() {
            args.names = vec!["local-copy".into()];
        }
    }
    let listener =
        listen(args.sink).with_context(|| format!("binding the sink on {}", args.sink))?;
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let (held, accepted) = (held.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        held.lock().await.push(s);
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("# sink accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let base_fds: Vec<usize> = args
        .pids
        .iter()
        .map(|&p| fd_count(p))
        .collect::<Result<_, _>>()?;
    let base_mem: Vec<(u64, u64)> = args
        .pids
        .iter()
        .map(|&p| mem_kb(p))
        .collect::<Result<_, _>>()?;
    for (i, &n) in args.counts.iter().enumerate() {
        let limit = Duration::from_secs_f64(args.timeout);
        let key = format!("w{}_n{n}", i + 1);
        tokio::time::timeout(
            limit,
            phase(&args, n, &key, &held, &accepted, &base_fds, &base_mem),
        )
        .await
        .with_context(|| format!("phase with {n} connections exceeded {limit:?}"))??;
    }
    Ok(())
}

async fn phase(
    args: &Args,
    n: usize,
    key: &str,
    held: &Arc<Mutex<Vec<TcpStream>>>,
    accepted: &Arc<AtomicUsize>,
    base_fds: &[usize],
    base_mem: &[(u64, u64)],
) -> anyhow::Result<()> {
    let before: Vec<(u64, u64)> = args
        .pids
        .iter()
        .map(|&p| mem_kb(p))
        .collect::<Result<_, _>>()?;
    accepted.store(0, Ordering::Relaxed);
    let t0 = Instant::now();
    // Open n connections, at most `connect_concurrency` in flight.
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let target = args.target;
        tasks.spawn(async move {
            let r = TcpStream::connect(target).await;
            drop(permit);
            r
        });
    }
    let mut clients = Vec::with_capacity(n);
    let mut connect_errors = 0usize;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(s) => clients.push(s),
            Err(e) => {
                connect_errors += 1;
                if connect_errors <= 3 {
                    eprintln!("# connect: {e}");
                }
            }
        }
    }
    // Established end to end once the app side has accepted all of them.
    while accepted.load(Ordering::Relaxed) < clients.len() {
        if t0.elapsed() > Duration::from_secs_f64(args.timeout) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let established = accepted.load(Ordering::Relaxed);
    let open_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after: Vec<(u64, u64)> = args
        .pids
        .iter()
        .map(|&p| mem_kb(p))
        .collect::<Result<_, _>>()?;
    // Still established? A proxy that dropped connections would show fewer fds.
    let fds: Vec<usize> = args
        .pids
        .iter()
        .map(|&p| fd_count(p))
        .collect::<Result<_, _>>()?;

    println!("{key}.requested {n}");
    println!("{key}.established {established}");
    println!("{key}.connect_errors {connect_errors}");
    println!("{key}.open_seconds {open_s:.3}");
    // RSS growth, RssAnon growth and RSS held (KiB) over the established connections, in
    // bytes per connection (nothing when none was established).
    let per_conn = |who: &str, rss_kb: i64, anon_kb: i64, held_kb: i64| {
        if established == 0 {
            return;
        }
        for (what, kb) in [
            ("bytes", rss_kb),
            ("anon_bytes", anon_kb),
            ("held_bytes", held_kb),
        ] {
            println!(
                "{key}.{what}_per_conn.{who} {:.0}",
                kb as f64 * 1024.0 / established as f64
            );
        }
    };
    let (mut pair_rss, mut pair_anon, mut pair_held) = (0i64, 0i64, 0i64);
    for (i, name) in args.names.iter().enumerate() {
        let d_rss = after[i].0 as i64 - before[i].0 as i64;
        let d_anon = after[i].1 as i64 - before[i].1 as i64;
        let held_kb = after[i].0 as i64 - base_mem[i].0 as i64;
        pair_rss += d_rss;
        pair_anon += d_anon;
        pair_held += held_kb;
        println!(
            "{key}.rss_before_mib.{name} {:.1}",
            before[i].0 as f64 / 1024.0
        );
        println!(
            "{key}.rss_after_mib.{name} {:.1}",
            after[i].0 as f64 / 1024.0
        );
        println!(
            "{key}.anon_after_mib.{name} {:.1}",
            after[i].1 as f64 / 1024.0
        );
        println!(
            "{key}.fds_added.{name} {}",
            fds[i] as i64 - base_fds[i] as i64
        );
        per_conn(name, d_rss, d_anon, held_kb);
    }
    per_conn("pair", pair_rss, pair_anon, pair_held);

    // Close everything and let the proxies notice: their fds go back to the base, or (pooled
    // mesh connections opened during the burst stay in the pool) stop falling for a second.
    drop(clients);
    held.lock().await.clear();
    let t1 = Instant::now();
    let (mut last, mut since) = (Vec::new(), Instant::now());
    while t1.elapsed() < Duration::from_secs(20) {
        let fds: Vec<usize> = args
            .pids
            .iter()
            .map(|&p| fd_count(p))
            .collect::<Result<_, _>>()?;
        if fds.iter().zip(base_fds).all(|(f, b)| *f <= *b + 2) {
            break;
        }
        if fds != last {
            (last, since) = (fds, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, name) in args.names.iter().enumerate() {
        let (rss, _) = mem_kb(args.pids[i])?;
        println!("{key}.rss_closed_mib.{name} {:.1}", rss as f64 / 1024.0);
        // What is still open after the wave: pooled mesh connections (and their peers) that
        // outlive it, or a leak if it grows wave after wave.
        println!(
            "{key}.fds_left.{name} {}",
            fd_count(args.pids[i])? as i64 - base_fds[i] as i64
        );
    }
    if established < n {
        eprintln!("# only {established} of {n} connections were established end to end");
    }
    Ok(())
}
