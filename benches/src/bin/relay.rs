//! `ferrule-bench-relay`: a proxy pair without TLS, for comparison.
//!
//! A plain-TCP relay: for each connection accepted on a route's listen address it dials
//! the route's target and runs Ferrule's own copy loop (`ferrule_proxy::io::copy_bidirectional`) between
//! the two, on the proxy's runtime (`ferrule_proxy::runtime`: current-thread for one worker,
//! else multi-thread; `TOKIO_WORKER_THREADS` workers, as `benches/run.sh` gives the proxies).
//! No TLS, no policy, no metrics, no pooling: two of
//! them chained (`client → relay → relay → server`) have the hops of a sidecar pair, so
//! what they add over a direct connection is what moving the bytes through two user-space
//! processes costs on this machine. Not a lower bound for a pair: the pooled hop batches
//! more per system call and can beat it (it did on closed-loop throughput).
//! `benches/run.sh` measures them as the `plain-relay` configuration (opt-in).
//!
//! `--threads`: the *floor relay* (`floor-relay`, measured by default). Blocking sockets,
//! one OS thread per direction of each connection, a 256 KiB buffer: per message the
//! woken thread's `read` returns and it makes one `write`, the fewest system calls and
//! wake-ups any relay that sleeps between messages can make (no `epoll_wait`, no
//! `EAGAIN` read, no runtime, no TLS). A target that two of these chained miss on this
//! machine cannot be met by a pair of user-space proxies that also decrypt and encrypt.
//!
//! `--tls client|server --certs DIR`: the *TLS floor relay* (`tls-floor-relay`): the floor
//! relay plus TLS 1.3 records sealed and opened in place after a rustls handshake with
//! Ferrule's configuration (`ferrule_benches::tls_floor`). `--make-certs DIR` writes its
//! certificates.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

use ferrule_benches::relay::{listen as listen_on, serve};
use ferrule_benches::tls_floor::{self, Role};

#[derive(Debug, Parser)]
#[command(
    about = "Reference relays: plain TCP on Ferrule's copy loop, (--threads) the floor relay, or (--tls) the TLS floor relay"
)]
struct Args {
    /// `LISTEN=CONNECT`, e.g. `127.0.0.1:8000=127.0.0.1:8080`; repeatable.
    #[arg(long = "route", value_parser = parse_route, required_unless_present = "make_certs")]
    routes: Vec<(SocketAddr, SocketAddr)>,
    /// The floor relay: blocking sockets, one thread per direction (see the module docs).
    #[arg(long)]
    threads: bool,
    /// The TLS floor relay (`ferrule_benches::tls_floor`) in this role: `client`
    /// (accepts plaintext, dials TLS) or `server` (accepts TLS, dials plaintext).
    #[arg(long, value_parser = parse_role, requires = "certs")]
    tls: Option<Role>,
    /// The TLS floor relay's certificates (written by `--make-certs`).
    #[arg(long)]
    certs: Option<PathBuf>,
    /// Writes the TLS floor relay pair's certificates into DIR, then exits.
    #[arg(long, value_name = "DIR", exclusive = true)]
    make_certs: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "client" => Ok(Role::Client),
        "server" => Ok(Role::Server),
        _ => Err(format!("{s:?}: expected client or server")),
    }
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
    if let Some(dir) = &args.make_certs {
        return tls_floor::make_certs(dir);
    }
    if let (Some(role), Some(certs)) = (args.tls, &args.certs) {
        return tls_floor::run(&args.routes, role, certs);
    }
    if args.threads {
        return floor::run(&args.routes);
    }
    let flavor = ferrule_proxy::runtime::flavor_from_env()?;
    ferrule_proxy::runtime::build(flavor)
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

/// The floor relay: blocking I/O, a thread per direction.
mod floor {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::thread;

    use anyhow::Context;
    use ferrule_benches::relay::serve_blocking;

    /// Bytes per `read`: larger than a socket's default receive window step, so a bulk
    /// transfer is never limited by the buffer.
    const BUF: usize = 256 * 1024;
    /// Each relay thread does one blocking loop; no deep recursion, small stacks.
    const STACK: usize = 64 * 1024;

    pub fn run(routes: &[(SocketAddr, SocketAddr)]) -> anyhow::Result<()> {
        serve_blocking(routes, "floor relay", |client, connect| {
            let server = match TcpStream::connect(connect) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("floor relay: connecting to {connect}: {e}");
                    return;
                }
            };
            if let Err(e) = spawn_pair(client, server) {
                eprintln!("floor relay: {e:#}");
            }
        })
    }

    fn spawn_pair(client: TcpStream, server: TcpStream) -> anyhow::Result<()> {
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let (c2, s2) = (client.try_clone()?, server.try_clone()?);
        for (from, to) in [(client, server), (s2, c2)] {
            thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || pump(from, to))
                .context("spawning a relay thread")?;
        }
        Ok(())
    }

    /// Copies `from` to `to` until EOF (then half-closes `to`) or an error (then shuts
    /// both down, so the other direction ends too).
    fn pump(mut from: TcpStream, mut to: TcpStream) {
        let mut buf = vec![0u8; BUF];
        loop {
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}
