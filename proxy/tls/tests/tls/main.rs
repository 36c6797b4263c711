//! Integration tests for ferrule-tls: verification rules without sockets, and real
//! handshakes over 127.0.0.1 with PKI generated per test.

mod handshake;
mod harness;
mod peer;
mod pki;
mod rotation;
mod verify;
