//! Protocol detection on the inbound listener (`proxy/src/inbound/detect.rs`): the first
//! bytes of every connection, mesh or not, go through it before any authentication.
//!
//! Input: one control byte (bit 0: the peer goes silent instead of closing after its
//! bytes; the rest seeds how the bytes are split into reads), then the bytes.
//!
//! Invariants:
//! * detection loses, duplicates and reorders nothing: the returned stream replays
//!   exactly the bytes the peer sent;
//! * the verdict does not depend on how the bytes were split into reads (a fragmented
//!   ClientHello is still a ClientHello, RUSTSEC-2024-0399), except that a hello that
//!   is only complete past the 32 KiB buffer limit may be refused as too large;
//! * a connection is only classified as a mesh hop if it starts like a TLS handshake
//!   record and carries a mesh ALPN id (`ferrule/1`, `ferrule/2`) in its bytes.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ferrule_proxy::inbound::detect::{DetectError, Protocol, detect};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// A peer that sends `chunks`, one per read, then closes or goes silent.
struct Script {
    chunks: VecDeque<Vec<u8>>,
    silent_at_end: bool,
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(chunk) = self.chunks.front_mut() else {
            // Silent: never ready (the paused clock lets the detection timeout fire).
            return if self.silent_at_end {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            };
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    Mesh,
    OtherTls,
    Plaintext,
    Silent,
    Eof,
    Truncated,
    TooLarge,
}

/// Runs detection over `data` split by `sizes`; returns the class and what the returned
/// stream replays (up to `data.len()` bytes, or to EOF).
fn run(data: &[u8], sizes: impl Iterator<Item = usize>, silent: bool) -> (Class, Option<Vec<u8>>) {
    let mut chunks = VecDeque::new();
    let mut rest = data;
    for size in sizes {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(size.min(rest.len()));
        chunks.push_back(a.to_vec());
        rest = b;
    }
    let script = Script {
        chunks,
        silent_at_end: silent,
    };
    RT.with(|rt| {
        rt.block_on(async {
            match detect(script, Duration::from_secs(1)).await {
                Ok((proto, mut io)) => {
                    let class = match proto {
                        Protocol::Mesh => Class::Mesh,
                        Protocol::OtherTls => Class::OtherTls,
                        Protocol::Plaintext => Class::Plaintext,
                        Protocol::Silent => Class::Silent,
                    };
                    let mut replay = vec![0u8; data.len()];
                    io.read_exact(&mut replay)
                        .await
                        .expect("replay the peer's bytes");
                    if !silent {
                        let mut more = Vec::new();
                        io.read_to_end(&mut more).await.expect("read to EOF");
                        assert!(more.is_empty(), "replayed {} extra bytes", more.len());
                    }
                    (class, Some(replay))
                }
                Err(DetectError::Io(_)) => (Class::Eof, None),
                Err(DetectError::Truncated) => (Class::Truncated, None),
                Err(DetectError::TooLarge) => (Class::TooLarge, None),
            }
        })
    })
}

thread_local! {
    /// A paused clock: the detection timeout fires as soon as the peer goes silent.
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let silent = control & 1 == 1;
    let (class, replay) = run(data, ferrule_fuzz::chunk_sizes(control >> 1, 600), silent);
    if let Some(replay) = replay {
        assert_eq!(replay, data, "detection changed the byte stream");
    }
    if class == Class::Mesh {
        assert!(
            data.starts_with(&[0x16, 0x03]),
            "mesh verdict without a TLS record"
        );
        assert!(
            data.windows(9)
                .any(|w| w == b"ferrule/1" || w == b"ferrule/2"),
            "mesh verdict without a mesh ALPN id in the bytes"
        );
    }
    // The same bytes in one piece (detection reads at most 4 KiB at a time anyway).
    let (whole, _) = run(data, std::iter::repeat(data.len().max(1)), silent);
    if class != Class::TooLarge && whole != Class::TooLarge {
        assert_eq!(class, whole, "verdict depends on how the bytes were split");
    }
});
