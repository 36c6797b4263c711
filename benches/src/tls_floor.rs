//! The *TLS floor relay*: the least work any pair of user-space mTLS proxies can do per
//! message on this machine, measured as the `tls-floor-relay` configuration.
//!
//! It is the floor relay (`ferrule-bench-relay --threads`: blocking sockets, one OS thread
//! per direction, one wake-up, one read and one write per message) plus TLS 1.3 done the
//! way kernel TLS would do it, in user space: the handshake is rustls with Ferrule's own
//! configuration (`ferrule_tls::{client_config, server_config}`: the same suites, groups,
//! SPIFFE verification of both peers, TLS 1.3), then the traffic secrets are extracted and
//! every record is sealed and opened **in place** with aws-lc's AEAD:
//!
//! * plaintext → TLS: one `readv` straight into the data areas of up to 16 record slots
//!   (16 KiB each, header and tag room around them), seal each in place, one `write` of
//!   the contiguous records;
//! * TLS → plaintext: one `read` of up to 256 KiB of records, open each in place, one
//!   `writev` of the plaintext slices.
//!
//! No copy of the data in user space (but for moving a partial record to the front of the
//! read buffer about once per 16 records), no allocation per message, no runtime, no
//! HTTP/2, no policy.
//! What it adds over `direct`, and its CPU, bound from below what a sidecar pair that
//! encrypts in user space can reach here: a target this pair misses cannot be met by
//! such a pair on this machine. Not a proxy: no key updates (a peer's `KeyUpdate` ends
//! the connection), no session tickets (Ferrule's configuration sends none), no handshake
//! timeout, the upstream is dialled before the handshake, and errors end the connection
//! without an alert (both sockets shut down: the application sees a FIN, as with the
//! floor relay, so a length-checking application is what notices a broken transfer).

use std::io::{self, ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;

use anyhow::{Context, bail};
use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce};
use aws_lc_rs::aead::{NONCE_LEN, UnboundKey};
use ferrule_tls::TrustDomain;
use ferrule_tls::{ClientAuth, Credentials, IdentityHandle, SpiffeId, TlsOptions, TrustBundle};
use rustls::ConnectionTrafficSecrets;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// Trust domain of the relay pair's certificates.
const TRUST_DOMAIN: &str = "bench.local";
/// Largest TLS plaintext per record.
const REC: usize = 16 * 1024;
/// Record header (5), inner content type (1), AEAD tag (16).
const HEADER: usize = 5;
const TRAILER: usize = 1 + 16;
/// One full record.
const SLOT: usize = HEADER + REC + TRAILER;
/// Records per read (256 KiB of plaintext, as the floor relay's buffer).
const SLOTS: usize = 16;
/// Largest ciphertext length a TLS 1.3 record may declare.
const MAX_CIPHERTEXT: usize = REC + 256;
/// Each relay thread runs one loop; small stacks.
const STACK: usize = 256 * 1024;
/// TLS content types.
const APPLICATION_DATA: u8 = 0x17;
const ALERT: u8 = 0x15;

/// Which end of the mesh hop a relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts plaintext, dials the peer relay with TLS (`relay-out`).
    Client,
    /// Accepts TLS from the peer relay, dials the application in plaintext (`relay-in`).
    Server,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Client => "relay-out",
            Role::Server => "relay-in",
        }
    }
}

fn spiffe_id(role: Role) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/bench/sa/{}", role.name())
}

/// Writes a root (`root.der`) and an SVID with its PKCS#8 key for each role
/// (`relay-out.der`/`.key`, `relay-in.der`/`.key`) into `dir`.
pub fn make_certs(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "ferrule bench TLS floor root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_key = KeyPair::generate()?;
    let root_cert = root.self_signed(&root_key)?;
    std::fs::write(dir.join("root.der"), root_cert.der())?;
    let issuer = Issuer::from_params(&root, &root_key);
    for role in [Role::Client, Role::Server] {
        let mut leaf = CertificateParams::default();
        leaf.subject_alt_names = vec![SanType::URI(spiffe_id(role).try_into()?)];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.is_ca = IsCa::ExplicitNoCa;
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{}.der", role.name())), cert.der())?;
        std::fs::write(
            dir.join(format!("{}.key", role.name())),
            key.serialize_der(),
        )?;
    }
    Ok(())
}

/// The TLS side's configuration: Ferrule's, from `ferrule_tls`, with secret extraction on.
enum Config {
    Client(Arc<rustls::ClientConfig>),
    Server(Arc<rustls::ServerConfig>),
}

fn config(role: Role, dir: &Path) -> anyhow::Result<Config> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .with_context(|| format!("reading {}", dir.join(name).display()))
    };
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let bundle = TrustBundle::new(td, vec![CertificateDer::from(read("root.der")?)], 1)?;
    let chain = vec![CertificateDer::from(read(&format!("{}.der", role.name()))?)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read(&format!(
        "{}.key",
        role.name()
    ))?));
    let identity = IdentityHandle::new();
    identity.set_credentials(Credentials::new(chain, key)?);
    identity.set_bundle(bundle);
    let opts = TlsOptions {
        tls13_only: true,
        alpn: vec![],
    };
    Ok(match role {
        Role::Client => {
            let peer = SpiffeId::new(spiffe_id(Role::Server))?;
            let mut c = (*ferrule_tls::client_config(&identity, vec![peer], &opts)?).clone();
            c.enable_secret_extraction = true;
            Config::Client(Arc::new(c))
        }
        Role::Server => {
            let mut c =
                (*ferrule_tls::server_config(&identity, ClientAuth::Required, &opts)?).clone();
            c.enable_secret_extraction = true;
            Config::Server(Arc::new(c))
        }
    })
}

/// Serves `routes` (`LISTEN=CONNECT`) in `role` with the certificates in `dir`
/// ([`make_certs`]).
pub fn run(routes: &[(SocketAddr, SocketAddr)], role: Role, dir: &Path) -> anyhow::Result<()> {
    let config = Arc::new(config(role, dir)?);
    crate::relay::serve_blocking(routes, "tls floor relay", move |accepted, connect| {
        let config = config.clone();
        let spawned = thread::Builder::new().stack_size(STACK).spawn(move || {
            if let Err(e) = open(accepted, connect, &config) {
                eprintln!("tls floor relay: {e:#}");
            }
        });
        if let Err(e) = spawned {
            eprintln!("tls floor relay: spawning a thread: {e}");
        }
    })
}

/// Dials, handshakes, and starts the two directions of one connection.
fn open(accepted: TcpStream, connect: SocketAddr, config: &Config) -> anyhow::Result<()> {
    let dialled =
        TcpStream::connect(connect).with_context(|| format!("connecting to {connect}"))?;
    accepted.set_nodelay(true)?;
    dialled.set_nodelay(true)?;
    let (mut mesh, app, mut conn) = match config {
        Config::Client(c) => {
            let name = ServerName::try_from("ferrule.invalid")?;
            let conn = rustls::ClientConnection::new(c.clone(), name)?;
            (dialled, accepted, rustls::Connection::from(conn))
        }
        Config::Server(c) => {
            let conn = rustls::ServerConnection::new(c.clone())?;
            (accepted, dialled, rustls::Connection::from(conn))
        }
    };
    handshake(&mut conn, &mut mesh).context("TLS handshake")?;
    let secrets = conn.dangerous_extract_secrets()?;
    let (tx, rx) = (Aead::new(secrets.tx)?, Aead::new(secrets.rx)?);
    let (mesh2, app2) = (mesh.try_clone()?, app.try_clone()?);
    thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || seal_pump(app2, mesh2, tx))?;
    open_pump(mesh, app, rx);
    Ok(())
}

/// Runs the handshake one record at a time, so that no byte after the peer's last
/// handshake record is read into rustls (it would be lost with the connection object).
fn handshake(conn: &mut rustls::Connection, sock: &mut TcpStream) -> anyhow::Result<()> {
    let mut rec = vec![0u8; HEADER + MAX_CIPHERTEXT];
    loop {
        while conn.wants_write() {
            conn.write_tls(sock)?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        sock.read_exact(&mut rec[..HEADER])?;
        let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
        if len > MAX_CIPHERTEXT {
            bail!("record of {len} bytes");
        }
        sock.read_exact(&mut rec[HEADER..HEADER + len])?;
        let mut unread = &rec[..HEADER + len];
        while !unread.is_empty() {
            conn.read_tls(&mut unread)?;
        }
        if let Err(e) = conn.process_new_packets() {
            // Send the alert rustls queued, then fail.
            let _ = conn.write_tls(sock);
            return Err(e.into());
        }
    }
}

/// One direction's AEAD key and record sequence number.
struct Aead {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Aead {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> anyhow::Result<Self> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => bail!("unexpected cipher suite"),
        };
        let key = LessSafeKey::new(
            UnboundKey::new(alg, key.as_ref()).map_err(|_| anyhow::anyhow!("bad AEAD key"))?,
        );
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| anyhow::anyhow!("bad IV length"))?;
        Ok(Self { key, iv, seq })
    }

    /// The next record's nonce (RFC 8446 §5.3).
    fn nonce(&mut self) -> Nonce {
        let mut n = self.iv;
        for (b, s) in n[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(n)
    }

    /// Seals `slot[HEADER..HEADER + inner]` in place (inner = data + content type) and
    /// writes the header and tag around it; returns the record's length.
    fn seal(&mut self, slot: &mut [u8], inner: usize) -> io::Result<usize> {
        let len = inner + 16;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        slot[..HEADER].copy_from_slice(&header);
        let nonce = self.nonce();
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut slot[HEADER..HEADER + inner])
            .map_err(|_| io::Error::other("seal failed"))?;
        slot[HEADER + inner..HEADER + len].copy_from_slice(tag.as_ref());
        Ok(HEADER + len)
    }
}

/// Plaintext → records until EOF (then `close_notify` and a half-close) or an error (then
/// both sockets are shut down, which ends the other direction too).
fn seal_pump(mut from: TcpStream, mut to: TcpStream, mut tx: Aead) {
    let mut buf = vec![0u8; SLOT * SLOTS];
    let r: io::Result<()> = (|| loop {
        let n = {
            let mut slots = buf.chunks_exact_mut(SLOT);
            let mut iov: [IoSliceMut<'_>; SLOTS] = std::array::from_fn(|_| {
                let slot = slots.next().expect("SLOTS slots");
                IoSliceMut::new(&mut slot[HEADER..HEADER + REC])
            });
            match from.read_vectored(&mut iov) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // close_notify: alert level warning (1), description close_notify (0).
            buf[HEADER..HEADER + 3].copy_from_slice(&[1, 0, ALERT]);
            let len = tx.seal(&mut buf, 3)?;
            to.write_all(&buf[..len])?;
            return to.shutdown(Shutdown::Write);
        }
        let mut end = 0;
        for (i, slot) in buf.chunks_exact_mut(SLOT).enumerate() {
            let data = (n - i * REC).min(REC);
            slot[HEADER + data] = APPLICATION_DATA;
            end = i * SLOT + tx.seal(slot, data + 1)?;
            if data < REC || (i + 1) * REC == n {
                break;
            }
        }
        to.write_all(&buf[..end])?;
    })();
    if let Err(e) = r {
        report(&e);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// Records → plaintext until `close_notify` (then a half-close) or an error, including
/// EOF without `close_notify` (then both sockets are shut down).
fn open_pump(mut from: TcpStream, mut to: TcpStream, mut rx: Aead) {
    let mut buf = vec![0u8; SLOT * SLOTS + SLOT];
    // Records are parsed from `start`; a partial record is moved to the front only when less
    // than a whole record fits after `have` (rarely: once per ~16 records in a bulk transfer).
    let (mut start, mut have) = (0, 0);
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(SLOTS + 1);
    let r: io::Result<()> = (|| loop {
        let n = match from.read(&mut buf[have..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        have += n;
        let mut off = start;
        let mut closed = false;
        ranges.clear();
        while have - off >= HEADER && !closed {
            let h = &buf[off..off + HEADER];
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if h[0] != APPLICATION_DATA || !(17..=MAX_CIPHERTEXT).contains(&len) {
                return Err(io::Error::new(ErrorKind::InvalidData, "bad record header"));
            }
            if have - off < HEADER + len {
                break;
            }
            let (header, body) = buf[off..off + HEADER + len].split_at_mut(HEADER);
            let nonce = rx.nonce();
            let plain = rx
                .key
                .open_in_place(nonce, Aad::from(&*header), body)
                .map_err(|_| io::Error::new(ErrorKind::InvalidData, "bad record MAC"))?;
            let Some(ty_at) = plain.iter().rposition(|&b| b != 0) else {
                return Err(io::Error::new(ErrorKind::InvalidData, "no content type"));
            };
            if ty_at > REC {
                return Err(io::Error::new(ErrorKind::InvalidData, "record overflow"));
            }
            match plain[ty_at] {
                APPLICATION_DATA if ty_at > 0 => ranges.push((off + HEADER, off + HEADER + ty_at)),
                APPLICATION_DATA => {}
                ALERT if plain[..ty_at] == [1, 0] => closed = true,
                _ => {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "alert or handshake message after the handshake",
                    ));
                }
            }
            off += HEADER + len;
        }
        // Plaintext slices, written 64 at a time (a burst of small records can hold more).
        for chunk in ranges.chunks(64) {
            let mut iov = [IoSlice::new(&[]); 64];
            for (slot, &(a, b)) in iov.iter_mut().zip(chunk) {
                *slot = IoSlice::new(&buf[a..b]);
            }
            write_all_vectored(&mut to, &mut iov[..chunk.len()])?;
        }
        if closed {
            return to.shutdown(Shutdown::Write);
        }
        if off == have {
            (start, have) = (0, 0);
        } else if buf.len() - have < HEADER + MAX_CIPHERTEXT {
            buf.copy_within(off..have, 0);
            (start, have) = (0, have - off);
        } else {
            start = off;
        }
    })();
    if let Err(e) = r {
        report(&e);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// Reports a record-layer failure (a bad record, MAC or content type, or a failed seal) on
/// stderr; socket errors and EOFs, which every connection teardown produces, stay quiet.
fn report(e: &io::Error) {
    if matches!(e.kind(), ErrorKind::InvalidData | ErrorKind::Other) {
        eprintln!("tls floor relay: {e}");
    }
}

fn write_all_vectored(to: &mut TcpStream, mut iov: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !iov.is_empty() {
        match to.write_vectored(iov) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut iov, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
