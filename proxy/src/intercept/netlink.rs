//! Minimal `NETLINK_NETFILTER` client: builds nfnetlink batches and collects the kernel's
//! per-message ACKs. Wire format from `linux/netlink.h` and `linux/netfilter/nfnetlink.h`:
//!
//! ```text
//! nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid }   host byte order
//! nfgenmsg  { u8 family; u8 version; be16 res_id }
//! nlattr    { u16 len; u16 type }  + payload, padded to 4 bytes (nested: type | 0x8000)
//! ```
//!
//! A batch is `NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`, sent in one
//! datagram; the kernel applies it as one transaction. Every message carries `NLM_F_ACK`,
//! and the kernel answers each with an `NLMSG_ERROR` (errno 0 = ACK), so a failure names the
//! exact message that caused it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLA_F_NESTED: u16 = 0x8000;
/// `NFNL_MSG_BATCH_BEGIN` = `NLMSG_MIN_TYPE`.
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`.
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNETLINK_V0: u8 = 0;

/// How long to wait for the kernel's answers (module autoloading included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive buffer for the answers: room for thousands of ACKs.
const RCVBUF: usize = 4 << 20;

/// What went wrong talking to nf_tables over netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The `NETLINK_NETFILTER` socket could not be opened or bound (no nfnetlink in this
    /// kernel, or a seccomp/LSM policy forbids it).
    #[error("cannot open a NETLINK_NETFILTER socket: {0}")]
    Socket(#[source] io::Error),
    /// Sending the batch failed.
    #[error("sending the netlink batch: {0}")]
    Send(#[source] io::Error),
    /// Receiving the kernel's answers failed or timed out.
    #[error("waiting for the kernel's netlink answers: {0}")]
    Recv(#[source] io::Error),
    /// The kernel rejected one message of the batch; the transaction was rolled back.
    #[error("kernel rejected `{what}`: {source}")]
    Rejected {
        /// The message, in `nft` terms (e.g. `add chain inet ferrule output`).
        what: String,
        /// The errno the kernel answered with.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer did not parse as netlink.
    #[error("malformed netlink answer: {0}")]
    Malformed(&'static str),
}

impl NetlinkError {
    /// The errno the kernel gave for a rejected message.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Rejected { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Missing privileges (`CAP_NET_ADMIN` in the namespace's user namespace): no other
    /// backend would do better.
    pub fn is_permission_denied(&self) -> bool {
        let errno = match self {
            NetlinkError::Rejected { source, .. }
            | NetlinkError::Socket(source)
            | NetlinkError::Send(source) => source.raw_os_error(),
            _ => None,
        };
        matches!(errno, Some(libc_errno) if libc_errno == Errno::EPERM as i32 || libc_errno == Errno::EACCES as i32)
    }

    /// This kernel has no nf_tables (no netlink family, no subsystem, or no `nat` chain
    /// type): nothing of ours can exist there.
    pub fn is_unsupported(&self) -> bool {
        match self {
            NetlinkError::Socket(e) => e.raw_os_error() == Some(Errno::EPROTONOSUPPORT as i32),
            NetlinkError::Rejected { source, .. } => matches!(
                source.raw_os_error(),
                Some(e) if e == Errno::EOPNOTSUPP as i32 || e == Errno::EPROTONOSUPPORT as i32
            ),
            _ => false,
        }
    }
}

/// Netlink attributes being written into a message.
pub(crate) struct Attrs<'a> {
    buf: &'a mut Vec<u8>,
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

impl Attrs<'_> {
    /// An attribute with raw bytes as payload.
    pub(crate) fn bytes(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).expect("netlink attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad4(self.buf);
        self
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.bytes(ty, &data)
    }

    /// A big-endian `u32` (nf_tables' convention for numeric attributes).
    pub(crate) fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    /// A nested attribute whose contents `f` writes.
    pub(crate) fn nested(&mut self, ty: u16, f: impl FnOnce(&mut Attrs<'_>)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        f(&mut Attrs { buf: self.buf });
        let len = u16::try_from(self.buf.len() - start).expect("netlink attribute under 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }
}

/// An nfnetlink batch under construction.
pub(crate) struct Batch {
    buf: Vec<u8>,
    /// Sequence number and `nft`-style description of each acknowledged message.
    messages: Vec<(u32, String)>,
    begin_seq: u32,
    next_seq: u32,
    subsys: u16,
}

impl Batch {
    /// A batch for nfnetlink subsystem `subsys` (e.g. `NFNL_SUBSYS_NFTABLES`).
    pub(crate) fn new(subsys: u16) -> Self {
        // Distinct sequence numbers per run make stray answers recognisable.
        let begin_seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let mut b = Batch {
            buf: Vec::with_capacity(4096),
            messages: Vec::new(),
            begin_seq,
            next_seq: begin_seq,
            subsys,
        };
        b.raw_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, subsys, |_| {});
        b
    }

    fn raw_message(
        &mut self,
        ty: u16,
        flags: u16,
        family: u8,
        res_id: u16,
        body: impl FnOnce(&mut Attrs<'_>),
    ) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]); // length, patched below
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        body(&mut Attrs { buf: &mut self.buf });
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        seq
    }

    /// Appends message `msg` of this batch's subsystem for protocol `family`, with
    /// `NLM_F_REQUEST | NLM_F_ACK | flags`. `what` names it in errors.
    pub(crate) fn push(
        &mut self,
        msg: u8,
        flags: u16,
        family: u8,
        what: String,
        body: impl FnOnce(&mut Attrs<'_>),
    ) {
        let ty = (self.subsys << 8) | u16::from(msg);
        let seq = self.raw_message(ty, NLM_F_REQUEST | NLM_F_ACK | flags, family, 0, body);
        self.messages.push((seq, what));
    }

    /// The batch's bytes, closed with `NFNL_MSG_BATCH_END`.
    fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>, u32) {
        let subsys = self.subsys;
        self.raw_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, subsys, |_| {});
        (self.buf, self.messages, self.begin_seq)
    }

    /// The encoded messages (header through END), for tests.
    #[cfg(test)]
    pub(crate) fn bytes_for_test(self) -> Vec<u8> {
        self.finish().0
    }
}

/// A bound `NETLINK_NETFILTER` socket.
pub(crate) struct NetfilterSocket {
    fd: OwnedFd,
}

impl NetfilterSocket {
    /// Opens and binds the socket in the current network namespace.
    pub(crate) fn open() -> Result<Self, NetlinkError> {
        let sock = |e: Errno| NetlinkError::Socket(io::Error::from(e));
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(sock)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(sock)?;
        let timeout = TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(sock)?;
        // The kernel queues every ACK while it processes the batch inside our send(), so
        // the receive buffer must hold them all (a few hundred bytes each). We have
        // CAP_NET_ADMIN, so go past rmem_max; fall back to what we may have.
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF);
        }
        Ok(Self { fd })
    }

    /// Sends `batch` and waits for the kernel's answer to every message. The first
    /// rejected message (in batch order) is the error; the batch is then not applied.
    pub(crate) fn transact(&self, batch: Batch) -> Result<(), NetlinkError> {
        let (bytes, messages, begin_seq) = batch.finish();
        // The whole batch goes in one datagram, which must fit the send buffer (as `nft`
        // does, raise it past wmem_max with CAP_NET_ADMIN when a batch is large).
        let sndbuf = bytes.len() + 64 * 1024;
        if setsockopt(&self.fd, sockopt::SndBufForce, &sndbuf).is_err() {
            let _ = setsockopt(&self.fd, sockopt::SndBuf, &sndbuf);
        }
        let sent = send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty())
            .map_err(|e| NetlinkError::Send(e.into()))?;
        if sent != bytes.len() {
            return Err(NetlinkError::Send(io::Error::other("short write")));
        }
        let mut pending: Vec<u32> = messages.iter().map(|(seq, _)| *seq).collect();
        let mut failures: Vec<(u32, i32)> = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        while !pending.is_empty() {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                // The kernel answers every message before send() returns; a timeout after
                // a failure means it stopped early (it does on ENOMEM): report what we have.
                Err(Errno::EAGAIN) if !failures.is_empty() => break,
                Err(Errno::ENOBUFS) => {
                    return Err(NetlinkError::Recv(io::Error::other(
                        "answers overflowed the receive buffer (ENOBUFS); the outcome is unknown",
                    )));
                }
                Err(Errno::EAGAIN) => {
                    return Err(NetlinkError::Recv(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no answer for {} message(s) after {REPLY_TIMEOUT:?}",
                            pending.len()
                        ),
                    )));
                }
                Err(e) => return Err(NetlinkError::Recv(e.into())),
            };
            for Message { ty, seq, payload } in parse_messages(&buf[..n])? {
                if ty == NLMSG_DONE {
                    continue;
                }
                if ty != NLMSG_ERROR {
                    // Not an answer we asked for (no GET in our batches): ignore.
                    continue;
                }
                let errno = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .ok_or(NetlinkError::Malformed("short NLMSG_ERROR"))?;
                if !pending.contains(&seq) {
                    if errno != 0
                        && (seq == begin_seq
                            || seq == begin_seq.wrapping_add(messages.len() as u32 + 1))
                    {
                        // The batch as a whole was refused (e.g. EPERM, or no nf_tables).
                        let what = if -errno == Errno::EPERM as i32 {
                            "the whole batch (CAP_NET_ADMIN in this network namespace is required)"
                        } else {
                            "the whole batch"
                        };
                        return Err(NetlinkError::Rejected {
                            what: what.to_string(),
                            source: io::Error::from_raw_os_error(-errno),
                        });
                    }
                    continue;
                }
                pending.retain(|s| *s != seq);
                if errno != 0 {
                    if failures.is_empty() {
                        // The rest should already be queued; don't wait long for it.
                        let short = TimeVal::new(0, 200_000);
                        let _ = setsockopt(&self.fd, sockopt::ReceiveTimeout, &short);
                    }
                    failures.push((seq, -errno));
                }
            }
        }
        let Some(&(seq, errno)) = failures
            .iter()
            .min_by_key(|(seq, _)| seq.wrapping_sub(begin_seq))
        else {
            return Ok(());
        };
        let describe = |seq: u32| {
            messages
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, w)| w.clone())
                .unwrap_or_default()
        };
        for (other, errno) in failures.iter().filter(|(s, _)| *s != seq) {
            tracing::debug!(message = %describe(*other), errno, "also rejected in the same batch");
        }
        Err(NetlinkError::Rejected {
            what: describe(seq),
            source: io::Error::from_raw_os_error(errno),
        })
    }
}

/// One netlink message of a received datagram.
struct Message<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits a datagram into netlink messages.
fn parse_messages(mut data: &[u8]) -> Result<Vec<Message<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let ty = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(NetlinkError::Malformed("message length out of bounds"));
        }
        out.push(Message {
            ty,
            seq,
            payload: &data[NLMSG_HDRLEN..len],
        });
        let aligned = (len + 3) & !3;
        data = &data[aligned.min(data.len())..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut buf = Vec::new();
        Attrs { buf: &mut buf }.str(1, "ab").nested(4, |a| {
            a.be32(1, 3);
        });
        assert_eq!(
            buf,
            [
                7, 0, 1, 0, b'a', b'b', 0, 0, // "ab\0" + 1 byte of padding
                12, 0, 4, 0x80, // nested, NLA_F_NESTED set
                8, 0, 1, 0, 0, 0, 0, 3, // big-endian 3
            ]
        );
    }

    #[test]
    fn batch_is_framed_by_begin_and_end() {
        let mut b = Batch::new(10);
        b.push(0, 0, 1, "add table".into(), |a| {
            a.str(1, "t");
        });
        let bytes = b.bytes_for_test();
        let msgs = parse_messages(&bytes).unwrap();
        let types: Vec<u16> = msgs.iter().map(|m| m.ty).collect();
        assert_eq!(types, [0x10, 10 << 8, 0x11]);
        // BEGIN carries res_id = NFNL_SUBSYS_NFTABLES in network order.
        assert_eq!(msgs[0].payload, [0, 0, 0, 10]);
        // The table message is for NFPROTO_INET and asks for an ACK.
        assert_eq!(&msgs[1].payload[..4], &[1, 0, 0, 0]);
        let flags = u16::from_ne_bytes(bytes[20 + 6..20 + 8].try_into().unwrap());
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
    }
}
