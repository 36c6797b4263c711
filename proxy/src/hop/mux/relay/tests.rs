//! The zero-copy relay between real TCP sockets and `ferrule/2` streams over an in-memory
//! pipe: byte-exact both ways with half-close (sizes around the read and frame sizes), and
//! an application's reset reaching the other side as an error.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::{client_builder, connect_request, server_builder};
use super::*;

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(17).wrapping_add(seed) % 253) as u8)
        .collect()
}

/// A TCP "application" that reads to the end, answers with the bytes reversed, closes.
async fn reversing_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                got.reverse();
                s.write_all(&got).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// A TCP "application" that reads a little, then resets its connection.
async fn resetting_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 4];
            let _ = s.read_exact(&mut b).await;
            crate::io::ResetHandle::new(&s).unwrap().reset();
            drop(s);
        }
    });
    addr
}

/// A pair of proxies in one process: a client-side listener whose connections are
/// relayed over `ferrule/2` streams to a server side that relays them to `app`.
/// Returns the client-side listener's address and a channel of relay results
/// (client side, server side).
async fn proxies(
    app: SocketAddr,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(&'static str, bool)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (a, b) = tokio::io::duplex(1 << 20);
    let server_tx = tx.clone();
    tokio::spawn(async move {
        let mut conn = server_builder().handshake::<_, Bytes>(b).await.unwrap();
        while let Some(Ok((req, respond))) = conn.accept().await {
            let tx = server_tx.clone();
            tokio::spawn(async move {
                let app = TcpStream::connect(app).await.unwrap();
                let r = MuxStream::server(req.into_body(), respond)
                    .relay(app, None)
                    .await;
                let _ = tx.send(("server", r.is_ok()));
            });
        }
    });
    let (send, conn) = client_builder().handshake::<_, Bytes>(a).await.unwrap();
    tokio::spawn(conn);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let send = send.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut send = send.ready().await.unwrap();
                let req = connect_request([127, 0, 0, 1].into(), 9000).unwrap();
                let (response, stream) = send.send_request(req, false).unwrap();
                let r = MuxStream::client(stream, response).relay(s, None).await;
                let _ = tx.send(("client", r.is_ok()));
            });
        }
    });
    (front, rx)
}

#[tokio::test]
async fn the_relay_is_byte_exact_both_ways_with_half_close() {
    let (front, mut results) = proxies(reversing_app().await).await;
    let sizes = [
        0usize,
        1,
        FIRST_READ - 1,
        FIRST_READ,
        FIRST_READ + 1,
        BULK_READ,
        BULK_READ + 1,
        4 << 20,
    ];
    for (i, n) in sizes.into_iter().enumerate() {
        let data = pattern(n, i as u32);
        let mut c = TcpStream::connect(front).await.unwrap();
        let (mut r, mut w) = c.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let (_, got) = tokio::join!(send, recv);
        got.unwrap();
        let mut expected = data.clone();
        expected.reverse();
        assert_eq!(back.len(), n, "length for {n}");
        assert!(back == expected, "content for {n}");
        for _ in 0..2 {
            let (side, ok) = results.recv().await.unwrap();
            assert!(ok, "{side} relay failed for {n}");
        }
    }
}

#[tokio::test]
async fn an_applications_reset_reaches_the_other_side_as_an_error() {
    let (front, mut results) = proxies(resetting_app().await).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    c.write_all(b"ping and more").await.unwrap();
    let mut got = Vec::new();
    let end = c.read_to_end(&mut got).await;
    // Whichever way it surfaces here, neither relay reports a clean end.
    let mut outcomes = vec![results.recv().await.unwrap(), results.recv().await.unwrap()];
    outcomes.sort();
    assert_eq!(outcomes, [("client", false), ("server", false)], "{end:?}");
    assert!(got.is_empty());
}
