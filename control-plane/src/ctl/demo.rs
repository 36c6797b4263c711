//! `ferrulectl demo serve|call`: the two tiny HTTP applications of the demo.
//!
//! They know nothing about the mesh: `serve` answers plain HTTP on a local port and
//! `call` sends a plain HTTP request every interval and prints what it got. Ferrule
//! proxies carry the bytes between them over mTLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `GET /*` with a one-line greeting naming this service, forever.
pub async fn serve(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("demo {name}: serving HTTP on {listen}");
    let mut count: u64 = 0;
    loop {
        let (tcp, _) = listener.accept().await?;
        count += 1;
        let name = name.clone();
        let n = count;
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| {
                    let body = format!(
                        "hello from {name} (request {n}, {:?} {} {})\n",
                        req.version(),
                        req.method(),
                        req.uri().path()
                    );
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
                },
            );
            // HTTP/1.1 and HTTP/2 (prior knowledge), like a typical service.
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
        });
    }
}

/// Calls `http://<target><path>` every `every`, printing one line per attempt.
/// `target` is `host:port`; a name is resolved at every call (DNS in a pod: a restarted
/// server has a new address). Stops after `count` calls when given (exit 1 if the last
/// one failed).
pub async fn call(
    target: String,
    path: String,
    every: Duration,
    count: Option<u64>,
) -> anyhow::Result<bool> {
    let mut i = 0u64;
    loop {
        i += 1;
        let started = std::time::Instant::now();
        let ok = match tokio::time::timeout(Duration::from_secs(5), get(&target, &path)).await {
            Ok(Ok((status, body))) => {
                println!(
                    "call {i}: {status} {} ({} ms)",
                    body.trim(),
                    started.elapsed().as_millis()
                );
                status.starts_with("200")
            }
            Ok(Err(e)) => {
                println!("call {i}: failed: {e}");
                false
            }
            Err(_) => {
                println!("call {i}: failed: timed out");
                false
            }
        };
        if count.is_some_and(|c| i >= c) {
            return Ok(ok);
        }
        tokio::time::sleep(every).await;
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`; returns the status line's code and
/// reason, and the body.
async fn get(target: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(target).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            if buf.is_empty() {
                "connection closed without a response".to_string()
            } else {
                "malformed response".to_string()
            },
        ));
    };
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_once(' ').map(|(_, s)| s.to_string()))
        .unwrap_or_default();
    Ok((status, body.to_string()))
}
