//! Reading what really crossed the wire: `tcpdump` started inside a test namespace writes
//! a classic pcap file, and [`tcp_segments`] pulls the TCP payloads back out, so a test
//! can assert "this was TLS" or "this marker never appeared in plaintext".
//!
//! Only what the tests capture is understood: pcap (either byte order, micro- or
//! nanosecond timestamps), Ethernet or Linux cooked (v1/v2) link layers, IPv4 and IPv6
//! (no extension headers), TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::netns::NetNs;
use crate::process::wait_for;

/// One captured TCP segment.
#[derive(Clone)]
pub struct Segment {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10, ...).
    pub flags: u8,
    /// TCP payload (possibly several MSS after GRO).
    pub payload: Vec<u8>,
}

impl Segment {
    /// A connection's first segment (SYN without ACK).
    pub fn opens(&self) -> bool {
        self.flags & 0x12 == 0x02
    }

    /// FIN set: this direction is done.
    pub fn fin(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// RST set: the connection is gone.
    pub fn rst(&self) -> bool {
        self.flags & 0x04 != 0
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.payload[..self.payload.len().min(48)];
        write!(
            f,
            "{} > {} flags {:#04x} len {} {:02x?}",
            self.src,
            self.dst,
            self.flags,
            self.payload.len(),
            shown
        )
    }
}

/// Whether at least one connection started in the capture and every one that did has
/// ended on the wire (a FIN from each side, or an RST): then none of their packets can
/// still be missing from the capture.
pub fn all_closed(segs: &[Segment]) -> bool {
    let opened: Vec<(SocketAddr, SocketAddr)> = segs
        .iter()
        .filter(|s| s.opens())
        .map(|s| (s.src, s.dst))
        .collect();
    let between = |s: &Segment, a: SocketAddr, b: SocketAddr| {
        (s.src, s.dst) == (a, b) || (s.src, s.dst) == (b, a)
    };
    !opened.is_empty()
        && opened.iter().all(|&(c, srv)| {
            let rst = segs.iter().any(|s| s.rst() && between(s, c, srv));
            let fin = |from, to| segs.iter().any(|s| s.fin() && (s.src, s.dst) == (from, to));
            rst || (fin(c, srv) && fin(srv, c))
        })
}

/// Parses a pcap file's contents into TCP segments, in capture order.
pub fn tcp_segments(pcap: &[u8]) -> anyhow::Result<Vec<Segment>> {
    anyhow::ensure!(pcap.len() >= 24, "pcap too short");
    let magic = [pcap[0], pcap[1], pcap[2], pcap[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file (magic {magic:02x?})"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let linktype = u32_at(pcap, 20);
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32_at(pcap, at + 8) as usize;
        let start = at + 16;
        let end = start + caplen;
        if end > pcap.len() {
            break; // truncated last record (capture stopped mid-write)
        }
        if let Some(seg) = frame(&pcap[start..end], linktype) {
            out.push(seg);
        }
        at = end;
    }
    Ok(out)
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn frame(f: &[u8], linktype: u32) -> Option<Segment> {
    let (ethertype, l3) = match linktype {
        1 => (be16(f, 12)?, 14),   // Ethernet (no VLAN tags in test namespaces)
        113 => (be16(f, 14)?, 16), // Linux cooked v1
        276 => (be16(f, 0)?, 20),  // Linux cooked v2
        _ => return None,
    };
    let ip = f.get(l3..)?;
    let (src, dst, proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                ip[9],
                ip.get(ihl..total.min(ip.len()))?,
            )
        }
        0x86dd => {
            let plen = usize::from(be16(ip, 4)?);
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                ip[6],
                ip.get(40..(40 + plen).min(ip.len()))?,
            )
        }
        _ => return None,
    };
    if proto != 6 {
        return None;
    }
    let sport = be16(l4, 0)?;
    let dport = be16(l4, 2)?;
    let off = usize::from(l4.get(12)? >> 4) * 4;
    let flags = *l4.get(13)?;
    let payload = l4.get(off..)?;
    Some(Segment {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        flags,
        payload: payload.to_vec(),
    })
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A running `tcpdump` inside a namespace, writing to a pcap file.
pub struct Capture {
    child: Option<Child>,
    /// The pcap file.
    pub file: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i <ifname> <filter>` in `ns`, writing to `file`, and waits until it
    /// is capturing. Needs `tcpdump` on PATH.
    pub fn start(ns: &NetNs, ifname: &str, filter: &str, file: &Path) -> anyhow::Result<Self> {
        // Run as root (-Z root) so it can write into the test's private temp dir; -s 0
        // keeps whole packets. --immediate-mode hands every packet over at once: otherwise
        // the kernel delivers them in blocks retired up to a second later, and the packets
        // of a short test still sit in an unretired block when the capture is stopped.
        // -U then writes each one to the file as it comes.
        let mut child = ns
            .command("tcpdump")
            .args([
                "--immediate-mode",
                "-Z",
                "root",
                "-U",
                "-n",
                "-s",
                "0",
                "-i",
                ifname,
            ])
            .arg("-w")
            .arg(file)
            .arg(filter)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("spawn tcpdump")?;
        // tcpdump says "listening on <if>" on stderr once the socket is bound.
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut seen = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("listening on") {
                    let _ = tx.send(Ok(()));
                }
            }
            let _ = tx.send(Err(seen));
        });
        let mut capture = Self {
            child: Some(child),
            file: file.to_path_buf(),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(capture),
            Ok(Err(stderr)) => {
                capture.stop_child();
                bail!("tcpdump exited: {stderr}")
            }
            Err(_) => {
                capture.stop_child();
                bail!("tcpdump did not start capturing within 10 s")
            }
        }
    }

    fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: tcpdump flushes and exits.
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            if wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten()).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// What has been captured so far.
    pub fn segments(&self) -> anyhow::Result<Vec<Segment>> {
        let bytes =
            std::fs::read(&self.file).with_context(|| format!("read {}", self.file.display()))?;
        tcp_segments(&bytes)
    }

    /// Waits (at most 10 s) until every connection in the capture has closed on the wire
    /// ([`all_closed`]), so none of their packets can be missing, then stops the capture
    /// and returns every TCP segment.
    pub fn finish(mut self) -> anyhow::Result<Vec<Segment>> {
        let done = wait_for(Duration::from_secs(10), || {
            self.segments().ok().filter(|s| all_closed(s)).map(|_| ())
        });
        self.stop_child();
        let segs = self.segments()?;
        anyhow::ensure!(
            done.is_some(),
            "captured connections did not all close on the wire: {segs:?}"
        );
        Ok(segs)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_child();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ethernet_ipv4_tcp_frame() {
        let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        pcap.extend([0u8; 8]);
        pcap.extend(65535u32.to_le_bytes());
        pcap.extend(1u32.to_le_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let payload = b"\x16\x03\x01hello";
        let total = 20 + 20 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            6,
            0,
            0,
        ];
        ip.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        frame.extend(ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
        tcp[12] = 5 << 4;
        frame.extend(tcp);
        frame.extend(payload);
        pcap.extend([0u8; 8]);
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend((frame.len() as u32).to_le_bytes());
        pcap.extend(&frame);
        let segs = tcp_segments(&pcap).unwrap();
        assert_eq!(segs.len(), 1);
        assert!(!segs[0].opens() && !segs[0].fin() && !segs[0].rst());
        assert_eq!(segs[0].dst, "10.0.0.2:8080".parse().unwrap());
        assert_eq!(segs[0].payload, payload);
        assert!(contains(&segs[0].payload, b"hello"));
    }
}
