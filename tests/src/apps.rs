//! Tiny application servers and clients for data-path tests (plain TCP, threads).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use aws_lc_rs::digest;

/// What a test server does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Echo every byte back; on EOF, half-close the write side.
    Echo,
    /// Read until EOF, then answer with `"<bytes> <sha256 hex>\n"` and close.
    Sink,
    /// Speak first: send `n` pattern bytes, then close (ignores input).
    Source(usize),
    /// Speak first: send `n` pattern bytes and half-close, then read until EOF and
    /// record what arrived (see [`AppServer::received`]): the server ends its direction
    /// first, the client's stays open.
    SourceThenSink(usize),
    /// Read until EOF or an error and record which (see [`AppServer::received`]).
    Record,
    /// Send `n` pattern bytes, then abort the connection with a TCP reset.
    Reset(usize),
}

/// How a [`Behaviour::Record`] or [`Behaviour::SourceThenSink`] connection's input ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A clean end of stream after `bytes` bytes with SHA-256 `sha256`.
    Eof {
        /// Bytes read.
        bytes: u64,
        /// Their SHA-256, hex.
        sha256: String,
    },
    /// A read error (e.g. a reset) after `bytes` bytes.
    Error {
        /// Bytes read before the error.
        bytes: u64,
        /// The error kind.
        kind: std::io::ErrorKind,
    },
}

/// A test server on 127.0.0.1 (or a given address) counting its connections.
pub struct AppServer {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl AppServer {
    /// Starts a server with `behaviour` on a free loopback port.
    pub fn start(behaviour: Behaviour) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behaviour)
    }

    /// Starts a server with `behaviour` on `addr`.
    pub fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind(addr).expect("bind app server");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = accepted.clone();
        let log = received.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                thread::spawn(move || serve(conn, behaviour, &log));
            }
        });
        Self {
            addr,
            accepted,
            received,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How the input of each finished `Record` / `SourceThenSink` connection ended, in
    /// the order they finished.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads `conn` to its end, hashing, and says how it ended.
fn drain(conn: &mut TcpStream) -> Received {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => {
                return Received::Eof {
                    bytes,
                    sha256: hex(ctx.finish().as_ref()),
                };
            }
            Ok(n) => {
                ctx.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) => {
                return Received::Error {
                    bytes,
                    kind: e.kind(),
                };
            }
        }
    }
}

/// Closes `conn` with a TCP reset (SO_LINGER 0), not a FIN.
pub fn reset(conn: TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&conn, nix::sys::socket::sockopt::Linger, &linger);
    drop(conn);
}

fn serve(mut conn: TcpStream, behaviour: Behaviour, log: &Mutex<Vec<Received>>) {
    match behaviour {
        Behaviour::Echo => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = conn.shutdown(Shutdown::Write);
        }
        Behaviour::Sink => {
            let mut ctx = digest::Context::new(&digest::SHA256);
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        ctx.update(&buf[..n]);
                        total += n as u64;
                    }
                    Err(_) => return,
                }
            }
            let _ = writeln!(conn, "{total} {}", hex(ctx.finish().as_ref()));
            let _ = conn.shutdown(Shutdown::Write);
        }
        Behaviour::Source(n) => {
            let data = pattern(n, 7);
            let _ = conn.write_all(&data);
            let _ = conn.shutdown(Shutdown::Write);
        }
        Behaviour::SourceThenSink(n) => {
            let _ = conn.write_all(&pattern(n, 7));
            let _ = conn.shutdown(Shutdown::Write);
            let got = drain(&mut conn);
            log.lock().unwrap().push(got);
        }
        Behaviour::Record => {
            let got = drain(&mut conn);
            log.lock().unwrap().push(got);
        }
        Behaviour::Reset(n) => {
            let _ = conn.write_all(&pattern(n, 7));
            // Let the bytes leave before the reset discards the send queue.
            std::thread::sleep(std::time::Duration::from_millis(200));
            reset(conn);
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// SHA-256 hex of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends `data` to an echo server through `addr`, half-closes, reads everything back.
pub fn echo_roundtrip(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut w = conn.try_clone()?;
    let payload = data.to_vec();
    let writer = thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&payload)?;
        w.shutdown(Shutdown::Write)
    });
    let mut out = Vec::with_capacity(data.len());
    let mut r = conn;
    r.read_to_end(&mut out)?;
    writer.join().expect("writer thread")?;
    Ok(out)
}

/// Streams `n` pattern bytes to a sink server through `addr`; returns its answer line.
pub fn sink_send(addr: SocketAddr, n: usize, seed: u64) -> std::io::Result<(String, String)> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let chunk = pattern(1 << 20, seed);
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        conn.write_all(&chunk[..k])?;
        ctx.update(&chunk[..k]);
        left -= k;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok((
        format!("{n} {}", hex(ctx.finish().as_ref())),
        answer.trim().to_string(),
    ))
}

/// A real HTTP/1.1 + HTTP/2 (prior knowledge) application: `ferrulectl demo serve` on a
/// free loopback port, answering every `GET` with one line naming the service, the
/// protocol version and the path. Killed on drop.
pub struct HttpApp {
    /// Where it listens.
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl HttpApp {
    /// Starts it and waits until it accepts connections.
    pub fn start(name: &str) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::process::free_port())
            .parse()
            .unwrap();
        let child = std::process::Command::new(crate::bin_path("ferrulectl"))
            .args([
                "demo",
                "serve",
                "--listen",
                &addr.to_string(),
                "--name",
                name,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ferrulectl demo serve");
        let app = Self { addr, child };
        crate::process::wait_for(std::time::Duration::from_secs(10), || {
            TcpStream::connect(addr).ok()
        })
        .expect("demo app listening");
        app
    }
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
