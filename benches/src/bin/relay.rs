//! `ferrule-bench-relay`: a proxy pair without TLS, for comparison.
//!
//! A plain-TCP relay: for each connection accepted on a route's listen address it dials
//! the route's target and runs Ferrule's own copy loop (`ferrule_proxy::io::copy_bidirectional`) between
//! the two, on the proxy's runtime (multi-thread; `TOKIO_WORKER_THREADS` workers, as
//! `benches/run.sh` gives the proxies: a current-thread runtime measured ~25 % more
//! latency at 500 req/s in the proxy). No TLS, no policy, no metrics, no pooling: two of
//! them chained (`client → relay → relay → server`) have the hops of a sidecar pair, so
//! what they add over a direct connection is what moving the bytes through two user-space
//! processes costs on this machine. Not a lower bound for a pair: the pooled hop batches
//! more per system call and can beat it (it did on closed-loop throughput).
//! `benches/run.sh` measures them as the `plain-relay` configuration.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use ferrule_benches::relay::{listen as listen_on, serve};

#[derive(Debug, Parser)]
#[command(
    about = "Plain-TCP relay using Ferrule's copy loop (a reference without TLS, not a lower bound)"
)]
struct Args {
    /// `LISTEN=CONNECT`, e.g. `127.0.0.1:8000=127.0.0.1:8080`; repeatable.
    #[arg(long = "route", value_parser = parse_route, required = true)]
    routes: Vec<(SocketAddr, SocketAddr)>,
}

fn parse_route(s: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (listen, connect) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected LISTEN=CONNECT"))?;
    let addr = |a: &str| a.parse::<SocketAddr>().map_err(|e| format!("{a:?}: {e}"));
    Ok((addr(listen)?, addr(connect)?))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(async {
            let mut routes = Vec::new();
            for (listen, connect) in args.routes {
                let listener = listen_on(listen).with_context(|| format!("binding {listen}"))?;
                routes.push(tokio::spawn(serve(listener, connect)));
            }
            for r in routes {
                r.await.context("a route's task ended")?;
            }
            Ok(())
        })
}
