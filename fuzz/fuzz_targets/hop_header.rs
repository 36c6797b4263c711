//! The mesh hop header (`proxy/src/hop.rs`): `"FRL1"`, the target port (u16 BE), two
//! reserved zero bytes. Any authenticated mesh peer controls these bytes, and they pick
//! the application port the inbound proxy forwards to.
//!
//! Invariants: a header decodes exactly when its magic is right, its reserved bytes are
//! zero and its port is not 0; a decoded header re-encodes to the same 8 bytes; reading
//! the header from a stream agrees with decoding it, and a short stream is an error.
#![no_main]

use std::time::Duration;

use ferrule_proxy::hop::{self, HEADER_LEN, HopError, MAGIC};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    let read = RT.with(|rt| rt.block_on(hop::read_header(&mut reader, Duration::from_secs(5))));
    let Some(head) = data.get(..HEADER_LEN) else {
        assert!(
            matches!(read, Err(HopError::Io(_))),
            "short header read as {read:?}"
        );
        return;
    };
    let head: &[u8; HEADER_LEN] = head.try_into().expect("8 bytes");
    let decoded = hop::decode(head);
    let well_formed = &head[..4] == MAGIC && head[6] == 0 && head[7] == 0;
    let port = u16::from_be_bytes([head[4], head[5]]);
    match &decoded {
        Ok(p) => {
            assert!(well_formed && *p == port && port != 0, "accepted {head:?}");
            assert_eq!(&hop::encode(*p), head, "decode/encode round trip");
        }
        Err(HopError::ZeroPort) => assert!(well_formed && port == 0),
        Err(HopError::Malformed) => assert!(!well_formed),
        Err(e) => panic!("decode cannot fail with {e:?}"),
    }
    // Reading from a stream consumes exactly the header and agrees with decode.
    assert_eq!(reader.len(), data.len() - HEADER_LEN);
    assert_eq!(read.ok(), decoded.ok());
});
