//! The proxy's copy loop (`ferrule_proxy::io::copy_bidirectional`) over in-memory tokio
//! duplex streams: client → [copy loop] → server, then the server answers 1 KiB back and
//! both sides close (half-close exercised). Measures the loop's own cost (buffering,
//! split halves, the activity signal, flushes, task wake-ups) without sockets or TLS.
//!
//! Payloads: 64 KiB and 1 MiB. Duplex capacity 64 KiB per direction (like a socket buffer).
//! Run: `cargo bench -p ferrule-benches --bench copy`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferrule_proxy::io::copy_bidirectional;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DUPLEX_CAP: usize = 64 * 1024;

async fn one_transfer(payload: &[u8]) {
    let (client, proxy_a) = tokio::io::duplex(DUPLEX_CAP);
    let (proxy_b, server) = tokio::io::duplex(DUPLEX_CAP);
    let copy = tokio::spawn(copy_bidirectional(proxy_a, proxy_b, None));
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let data = payload.to_vec();
    let writer = tokio::spawn(async move {
        cw.write_all(&data).await.unwrap();
        cw.shutdown().await.unwrap();
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    loop {
        let n = sr.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, payload.len());
    sw.write_all(&[b'x'; 1024]).await.unwrap();
    sw.shutdown().await.unwrap();
    let mut answer = Vec::with_capacity(1024);
    cr.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer.len(), 1024);
    writer.await.unwrap();
    let stats = copy.await.unwrap().unwrap();
    assert_eq!(stats.a_to_b, payload.len() as u64);
}

fn bench_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("copy_bidirectional");
    for (name, size) in [("64KiB", 64 * 1024usize), ("1MiB", 1024 * 1024)] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        for (rt_name, rt) in [
            (
                "current_thread",
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap(),
            ),
            (
                "multi_thread2",
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap(),
            ),
        ] {
            group.bench_with_input(BenchmarkId::new(rt_name, name), &payload, |b, p| {
                b.iter(|| rt.block_on(one_transfer(p)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_copy);
criterion_main!(benches);
