//! `ferrule-bench-relay`: the floor of a user-space proxy pair, for comparison.
//!
//! A plain-TCP relay: for each connection accepted on `--listen` it dials `--connect`
//! and runs Ferrule's own copy loop (`ferrule_proxy::io::copy_bidirectional`) between
//! the two, on a current-thread tokio runtime. No TLS, no policy, no metrics: two of them
//! chained (`client → relay → relay → server`) have exactly the hops and wake-ups of a
//! sidecar pair and nothing else, so what they add over a direct connection is the part
//! of a pair's latency and CPU that no proxy of this shape can remove on this machine.
//! `benches/run.sh` measures them as the `relay-floor` configuration.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(about = "Plain-TCP relay using Ferrule's copy loop (a lower bound for a proxy pair)")]
struct Args {
    /// Listen here.
    #[arg(long)]
    listen: SocketAddr,
    /// Dial this for each accepted connection.
    #[arg(long)]
    connect: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: report and keep serving what is open.
                eprintln!("ferrule-bench-relay: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let connect = args.connect;
        tokio::spawn(async move {
            let server = match TcpStream::connect(connect).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("ferrule-bench-relay: connecting to {connect}: {e}");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = ferrule_proxy::io::copy_bidirectional(client, server, None).await;
        });
    }
}
