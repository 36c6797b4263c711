//! `ferrule-bench-certify`: certificates issued per second by the control plane.
//!
//! Calls the identity API's `Certify` with join tokens (create them with many uses:
//! `ferrulectl token create --spiffe-id ... --uses 10000`, the maximum per token; give one
//! per line in `--token-file`, workers take them round-robin), from `--concurrency` workers,
//! each on its own TLS channel (as separate proxies would be), for `--duration`.
//! CSRs (P-256 keys) are generated before the clock starts so the client spends almost no
//! CPU during the measurement. Every response is checked (a leaf for the expected SPIFFE
//! ID). Prints `key value` lines:
//!
//! ```text
//! issued 12345          certificates received
//! errors 0              failed calls (the first few reasons go to stderr)
//! seconds 10.00         measured wall time
//! certs_per_s 1234.5
//! p50_ms 6.4            Certify latency percentiles
//! p99_ms 12.9
//! ```
//!
//! Bounded: stops after `--duration` (and the whole run after `--duration` + 30 s).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use ferrule_benches::control::{ControlPlaneArgs, certify, key_and_csr, read_tokens};
use ferrule_benches::stats::percentile_ms;
use ferrule_proto::identity::v1::identity_client::IdentityClient;

#[derive(Debug, Parser)]
#[command(about = "Certificates issued per second (identity API Certify with a join token)")]
struct Args {
    #[command(flatten)]
    cp: ControlPlaneArgs,
    /// File holding join tokens, one per line, with enough uses for the whole run.
    #[arg(long)]
    token_file: PathBuf,
    /// The SPIFFE ID the token is bound to (checked in every response).
    #[arg(long)]
    spiffe_id: String,
    /// Concurrent workers (one channel each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Measurement time in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Distinct CSRs generated up front and reused round-robin.
    #[arg(long, default_value_t = 256)]
    csrs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.duration <= 0.0 || args.csrs == 0 {
        bail!("--concurrency, --duration and --csrs must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs_f64(args.duration + 30.0);
    rt.block_on(async { tokio::time::timeout(limit, run(args)).await })
        .context("benchmark exceeded its time limit")?
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cp = args.cp.control_plane()?;
    let client = cp.client(None)?;
    let tokens = read_tokens(&args.token_file)?;
    let expected = args.spiffe_id.clone();

    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.csrs)
            .map(|_| key_and_csr().map(|(_, csr)| csr))
            .collect::<Result<_, _>>()?,
    );
    let mut channels = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        channels.push(IdentityClient::new(client.connect().await?));
    }
    // One warm-up call per channel (not counted): proves the token and the checks work.
    for (w, ch) in channels.iter_mut().enumerate() {
        let r = certify(ch, &csrs[0], &tokens[w % tokens.len()], &expected).await;
        r.context("warm-up Certify failed")?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut workers = Vec::new();
    for (w, mut ch) in channels.into_iter().enumerate() {
        let token = tokens[w % tokens.len()].clone();
        let (stop, csrs, expected) = (stop.clone(), csrs.clone(), expected.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match certify(&mut ch, &csrs[i % csrs.len()], &token, &expected).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("# worker {w}: {e:#}");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                i += args.concurrency;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        lat.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| percentile_ms(&lat, p);
    println!("issued {}", lat.len());
    println!("errors {errors}");
    println!("seconds {secs:.3}");
    println!("certs_per_s {:.1}", lat.len() as f64 / secs);
    println!("p50_ms {:.3}", pct(0.50));
    println!("p99_ms {:.3}", pct(0.99));
    if lat.is_empty() {
        bail!("no certificate issued");
    }
    Ok(())
}
