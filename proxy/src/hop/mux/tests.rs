//! `ferrule/2` streams over an in-memory pipe: byte-exact both ways, half-close, aborts
//! that read as errors (never as a clean end), refusals, and flow-control backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// A client connection and a server connection over one pipe; the server's streams are
/// handed to `serve`, one task each.
async fn pair<F, Fut>(serve: F) -> h2::client::SendRequest<Bytes>
where
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (a, b): (DuplexStream, DuplexStream) = tokio::io::duplex(256 * 1024);
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        let mut conn = server_builder().handshake::<_, Bytes>(b).await.unwrap();
        while let Some(Ok((req, respond))) = conn.accept().await {
            tokio::spawn(serve(req, respond));
        }
    });
    let (send, conn) = client_builder().handshake::<_, Bytes>(a).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn open(send: &h2::client::SendRequest<Bytes>, port: u16) -> MuxStream {
    let mut send = send.clone().ready().await.unwrap();
    let req = connect_request([127, 0, 0, 1].into(), port).unwrap();
    let (response, stream) = send.send_request(req, false).unwrap();
    MuxStream::client(stream, response)
}

#[test]
fn connect_requests_round_trip_and_bad_ones_are_refused() {
    let req = connect_request([10, 0, 0, 2].into(), 8080).unwrap();
    assert_eq!(parse_connect(&req).unwrap(), 8080);
    let v6 = connect_request("fd00::2".parse().unwrap(), 443).unwrap();
    assert_eq!(parse_connect(&v6).unwrap(), 443);
    let get = Request::get("http://a:80/").body(()).unwrap();
    assert!(matches!(parse_connect(&get), Err(HopError::BadConnect(_))));
    let zero = Request::builder()
        .method(Method::CONNECT)
        .uri("a:0")
        .body(())
        .unwrap();
    assert!(matches!(parse_connect(&zero), Err(HopError::ZeroPort)));
    let no_port = Request::builder()
        .method(Method::CONNECT)
        .uri("a")
        .body(())
        .unwrap();
    assert!(matches!(
        parse_connect(&no_port),
        Err(HopError::BadConnect(_))
    ));
}

#[tokio::test]
async fn streams_are_byte_exact_both_ways_with_half_close() {
    // The server reads to the client's END_STREAM, then answers with the bytes reversed
    // and ends its side: a request/response protocol that relies on half-close.
    let send = pair(|req, respond| async move {
        assert_eq!(parse_connect(&req).unwrap(), 9000);
        let mut s = MuxStream::server(req.into_body(), respond);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got.reverse();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    let mut tasks = Vec::new();
    for (i, n) in [0usize, 1, 16383, 16384, 16385, 65537, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(n, i as u32);
            let s = open(&send, 9000).await;
            let (mut r, mut w) = tokio::io::split(s);
            let writer = tokio::spawn(async move {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
                data
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            let mut data = writer.await.unwrap();
            data.reverse();
            assert_eq!(back.len(), n, "length for {n}");
            assert!(back == data, "content for {n}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn an_aborted_stream_reads_as_an_error_never_as_the_end() {
    // The server takes some bytes, then drops the stream without ending it (its
    // application connection failed): the client must see an error, so it can abort its
    // own application connection instead of passing on a truncated stream as complete.
    let send = pair(|req, respond| async move {
        let mut s = MuxStream::server(req.into_body(), respond);
        s.write_all(b"partial").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        drop(s);
    })
    .await;
    let mut s = open(&send, 9000).await;
    s.write_all(b"ping").await.unwrap();
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got).await;
    assert!(r.is_err(), "an abort read as a clean end after {got:?}");
    assert_eq!(got, b"partial");
}

#[tokio::test]
async fn a_refused_stream_reads_as_connection_refused() {
    let send = pair(|_req, mut respond| async move {
        let resp = Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(())
            .unwrap();
        let _ = respond.send_response(resp, true);
    })
    .await;
    let mut s = open(&send, 9000).await;
    let mut got = Vec::new();
    let e = s.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    let send2 = pair(|_req, mut respond| async move {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
    })
    .await;
    let mut s = open(&send2, 9000).await;
    assert!(s.read_to_end(&mut got).await.is_err());
}

#[tokio::test]
async fn a_reader_that_does_not_read_stops_the_writer_at_the_window() {
    // The server accepts the stream but never reads: the client's writes must stall once
    // the stream window (plus what h2 and the pipe buffer) is used, not grow memory.
    let send = pair(|req, respond| async move {
        let s = MuxStream::server(req.into_body(), respond);
        std::future::pending::<()>().await;
        drop(s);
    })
    .await;
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let s = open(&send, 9000).await;
    let writer = tokio::spawn(async move {
        let mut s = s;
        let chunk = vec![7u8; 64 * 1024];
        loop {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
            w.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    // Let every task run until nothing moves any more.
    let mut last = usize::MAX;
    for _ in 0..100 {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        let now = written.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let total = written.load(Ordering::Relaxed);
    assert!(
        total <= STREAM_WINDOW as usize + (1 << 20),
        "{total} bytes accepted by a stream nobody reads"
    );
    assert!(total >= 64 * 1024, "nothing was written ({total})");
    writer.abort();
}
