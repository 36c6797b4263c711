//! A plain-TCP relay on the proxy's copy loop, and listeners for bursts: what
//! `ferrule-bench-relay` (the `plain-relay` pair) and `ferrule-bench-hold --local-copy`
//! (the copy-loop baseline) share, and the blocking relays' serving loop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A listener with a backlog for a burst of thousands of connections. With tokio's
/// default (1,024) the idle-connection sink's accept queue overflowed while the tool was
/// busy connecting; the kernel then dropped the handshakes' last ACKs, leaving
/// connections the proxy saw as established and the sink never accepted (a wave hung).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // Capped by net.core.somaxconn (4,096 by default).
    socket.listen(65_535)
}

/// For each connection accepted on `listener`, dials `connect` and runs
/// `ferrule_proxy::io::copy_bidirectional` between the two (no TLS, no idle timeout).
/// Accept and connect errors are reported on stderr and serving goes on.
pub async fn serve(listener: TcpListener, connect: SocketAddr) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: report, back off, keep serving what is open.
                eprintln!("relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let server = match TcpStream::connect(connect).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("relay: connecting to {connect}: {e}");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = ferrule_proxy::io::copy_bidirectional(client, server, None).await;
        });
    }
}

/// The blocking relays' serving loop (the floor relays, `ferrule-bench-relay --threads` and
/// `--tls`): binds every route (`LISTEN=CONNECT`), then accepts forever on one thread per
/// route and hands each connection, with the route's target, to `handle` on that thread.
/// Accept errors are reported on stderr (prefixed `name`) and serving goes on.
pub fn serve_blocking<F>(
    routes: &[(SocketAddr, SocketAddr)],
    name: &'static str,
    handle: F,
) -> anyhow::Result<()>
where
    F: Fn(std::net::TcpStream, SocketAddr) + Clone + Send + 'static,
{
    use anyhow::Context;
    let mut acceptors = Vec::new();
    for &(listen, connect) in routes {
        let listener =
            std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let handle = handle.clone();
        acceptors.push(std::thread::spawn(move || {
            loop {
                match listener.accept() {
                    Ok((c, _)) => handle(c, connect),
                    Err(e) => {
                        eprintln!("{name}: accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }));
    }
    // The accept threads never return; only a panic ends one.
    for a in acceptors {
        if a.join().is_err() {
            anyhow::bail!("an accept thread panicked");
        }
    }
    Ok(())
}
