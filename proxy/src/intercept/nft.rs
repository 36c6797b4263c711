//! The built-in nftables backend: table `inet ferrule`, programmed over netlink with no
//! external tool (works in a `FROM scratch` image).
//!
//! Each [`Rule`] becomes the same expressions `nft` itself generates for the rule text in
//! the module header (compare with `nft --debug=netlink`), so `nft list ruleset` prints
//! them back as readable rules:
//!
//! ```text
//! meta l4proto != tcp return  [ meta load l4proto => reg 1 ] [ cmp neq reg 1 0x06 ]
//!                             [ immediate reg 0 return ]
//! meta skuid 1337 return      [ meta load skuid => reg 1 ] [ cmp eq reg 1 0x00000539 ]  (host order)
//! ip daddr 10.250.0.0/15 ...  [ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x02 ]
//!                             [ payload load 4b @ network header + 16 => reg 1 ]
//!                             [ bitwise reg 1 = (reg 1 & 0xfffe0000) ^ 0 ] [ cmp eq reg 1 ... ]
//! tcp dport 22 return         [ meta load l4proto ...tcp ] [ payload load 2b @ transport header + 2 ]
//!                             [ cmp eq reg 1 0x0016 ]
//! ip saddr 10.0.0.5 tcp dport 8080 return
//!                             [ meta load nfproto ... ] [ payload load 4b @ network header + 12 ]
//!                             [ cmp eq reg 1 0x0a000005 (network order) ]
//!                             [ meta load l4proto ...tcp ] [ payload load 2b @ transport header + 2 ]
//!                             [ cmp eq reg 1 0x1f90 ]
//! meta l4proto tcp redirect to :15001
//!                             [ meta load l4proto ...tcp ] [ immediate reg 1 0x3a99 ]
//!                             [ redir proto_min reg 1 flags 0x2 ]
//! ```
//!
//! Byte-aligned prefixes load only the prefix bytes and skip the bitwise mask, as `nft` does.
//! Constants are from `linux/netfilter/nf_tables.h`, `nfnetlink.h` and `nf_nat.h`.

use super::netlink::{Attrs, Batch, NetfilterSocket, NetlinkError};
use super::rules::{Action, Chain, Cidr, Hook, Match, Rule, RuleSet};

/// The table holding all of Ferrule's rules.
pub const TABLE: &str = "ferrule";
/// Family of [`TABLE`]: `inet` covers IPv4 and IPv6.
pub const FAMILY: &str = "inet";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

// enum nf_tables_msg_types
const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_NEWRULE: u8 = 6;

const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
const NFTA_REDIR_FLAGS: u16 = 3;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_RETURN: i32 = -5;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_MARK: u32 = 3;
const NFT_META_SKUID: u32 = 10;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NF_ACCEPT: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
/// `NF_IP_PRI_NAT_DST`: nft's `dstnat`, iptables' `nat` table.
const PRIORITY_DSTNAT: i32 = -100;
/// `NF_NAT_RANGE_PROTO_SPECIFIED`.
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
/// libnftnl's `NFTNL_UDATA_{TABLE,RULE}_COMMENT`: how `nft` stores `comment "..."`.
const UDATA_COMMENT: u8 = 0;

/// The chain name used for `hook`.
pub fn chain_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Output => "output",
        Hook::Prerouting => "prerouting",
    }
}

/// Installs `rules` as table `inet ferrule`, replacing any previous copy atomically.
pub fn install(rules: &RuleSet) -> Result<(), NetlinkError> {
    let socket = NetfilterSocket::open()?;
    socket.transact(install_batch(rules))?;
    tracing::debug!(table = TABLE, family = FAMILY, "nftables batch committed");
    Ok(())
}

/// Deletes table `inet ferrule` (and so its chains and rules). `Ok(false)` if it did not
/// exist. No other table is touched.
pub fn cleanup() -> Result<bool, NetlinkError> {
    let socket = NetfilterSocket::open()?;
    let mut batch = Batch::new(NFNL_SUBSYS_NFTABLES);
    batch.push(
        NFT_MSG_DELTABLE,
        0,
        NFPROTO_INET,
        format!("delete table {FAMILY} {TABLE}"),
        |a| {
            a.str(NFTA_TABLE_NAME, TABLE);
        },
    );
    match socket.transact(batch) {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT as i32) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The whole install transaction: `add table` (a no-op if it exists), `delete table`,
/// then the table, chains and rules from scratch. Running it twice leaves one copy, and
/// the old rules stay in force until the new ones commit.
pub(crate) fn install_batch(rules: &RuleSet) -> Batch {
    let mut b = Batch::new(NFNL_SUBSYS_NFTABLES);
    let table = |a: &mut Attrs<'_>| {
        a.str(NFTA_TABLE_NAME, TABLE);
    };
    b.push(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        NFPROTO_INET,
        format!("add table {FAMILY} {TABLE}"),
        table,
    );
    b.push(
        NFT_MSG_DELTABLE,
        0,
        NFPROTO_INET,
        format!("delete table {FAMILY} {TABLE}"),
        table,
    );
    b.push(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE | NLM_F_EXCL,
        NFPROTO_INET,
        format!("create table {FAMILY} {TABLE}"),
        |a| {
            a.str(NFTA_TABLE_NAME, TABLE).bytes(
                NFTA_TABLE_USERDATA,
                &comment_udata(
                    "managed by ferrule-proxy init; remove with ferrule-proxy init --cleanup",
                ),
            );
        },
    );
    for chain in &rules.chains {
        add_chain(&mut b, chain);
    }
    b
}

fn add_chain(b: &mut Batch, chain: &Chain) {
    let name = chain_name(chain.hook);
    let hooknum = match chain.hook {
        Hook::Output => NF_INET_LOCAL_OUT,
        Hook::Prerouting => NF_INET_PRE_ROUTING,
    };
    b.push(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        NFPROTO_INET,
        format!("add chain {FAMILY} {TABLE} {name} {{ type nat hook {name} priority {PRIORITY_DSTNAT}; }}"),
        |a| {
            a.str(NFTA_CHAIN_TABLE, TABLE)
                .str(NFTA_CHAIN_NAME, name)
                .str(NFTA_CHAIN_TYPE, "nat")
                .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
                .nested(NFTA_CHAIN_HOOK, |h| {
                    h.be32(NFTA_HOOK_HOOKNUM, hooknum)
                        .be32(NFTA_HOOK_PRIORITY, PRIORITY_DSTNAT as u32);
                });
        },
    );
    for rule in &chain.rules {
        b.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            NFPROTO_INET,
            format!("add rule {FAMILY} {TABLE} {name} {}", describe(rule)),
            |a| {
                a.str(NFTA_RULE_TABLE, TABLE)
                    .str(NFTA_RULE_CHAIN, name)
                    .nested(NFTA_RULE_EXPRESSIONS, |list| rule_exprs(list, rule))
                    .bytes(NFTA_RULE_USERDATA, &comment_udata(rule.comment));
            },
        );
    }
}

/// A rule in `nft` syntax, for messages and logs.
pub fn describe(rule: &Rule) -> String {
    let m = match rule.matches {
        Match::NotTcp => "meta l4proto != tcp".to_string(),
        Match::SocketUid(uid) => format!("meta skuid {uid}"),
        Match::Mark(mark) => format!("meta mark {mark:#010x}"),
        Match::DestCidr(c) if c.addr().is_ipv4() => format!("ip daddr {c}"),
        Match::DestCidr(c) => format!("ip6 daddr {c}"),
        Match::TcpDestPort(p) => format!("tcp dport {p}"),
        Match::SourceTcpDestPort(c, p) if c.addr().is_ipv4() => {
            format!("ip saddr {c} tcp dport {p}")
        }
        Match::SourceTcpDestPort(c, p) => format!("ip6 saddr {c} tcp dport {p}"),
        Match::Tcp => "meta l4proto tcp".to_string(),
    };
    match rule.action {
        Action::Return => format!("{m} return"),
        Action::Redirect(p) => format!("{m} redirect to :{p}"),
    }
}

/// libnftnl's user-data TLV for a comment: type, length, NUL-terminated text.
fn comment_udata(comment: &str) -> Vec<u8> {
    let text = &comment.as_bytes()[..comment.len().min(126)];
    let mut v = vec![UDATA_COMMENT, (text.len() + 1) as u8];
    v.extend_from_slice(text);
    v.push(0);
    v
}

fn expr(list: &mut Attrs<'_>, name: &str, data: impl FnOnce(&mut Attrs<'_>)) {
    list.nested(NFTA_LIST_ELEM, |e| {
        e.str(NFTA_EXPR_NAME, name).nested(NFTA_EXPR_DATA, data);
    });
}

fn meta(list: &mut Attrs<'_>, key: u32) {
    expr(list, "meta", |a| {
        a.be32(NFTA_META_KEY, key).be32(NFTA_META_DREG, NFT_REG_1);
    });
}

fn cmp(list: &mut Attrs<'_>, op: u32, value: &[u8]) {
    expr(list, "cmp", |a| {
        a.be32(NFTA_CMP_SREG, NFT_REG_1)
            .be32(NFTA_CMP_OP, op)
            .nested(NFTA_CMP_DATA, |d| {
                d.bytes(NFTA_DATA_VALUE, value);
            });
    });
}

fn payload(list: &mut Attrs<'_>, base: u32, offset: u32, len: u32) {
    expr(list, "payload", |a| {
        a.be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
            .be32(NFTA_PAYLOAD_BASE, base)
            .be32(NFTA_PAYLOAD_OFFSET, offset)
            .be32(NFTA_PAYLOAD_LEN, len);
    });
}

fn bitwise_mask(list: &mut Attrs<'_>, mask: &[u8]) {
    expr(list, "bitwise", |a| {
        a.be32(NFTA_BITWISE_SREG, NFT_REG_1)
            .be32(NFTA_BITWISE_DREG, NFT_REG_1)
            .be32(NFTA_BITWISE_LEN, mask.len() as u32)
            .nested(NFTA_BITWISE_MASK, |d| {
                d.bytes(NFTA_DATA_VALUE, mask);
            })
            .nested(NFTA_BITWISE_XOR, |d| {
                d.bytes(NFTA_DATA_VALUE, &vec![0; mask.len()]);
            });
    });
}

fn tcp_only(list: &mut Attrs<'_>) {
    meta(list, NFT_META_L4PROTO);
    cmp(list, NFT_CMP_EQ, &[IPPROTO_TCP]);
}

fn tcp_dport(list: &mut Attrs<'_>, port: u16) {
    tcp_only(list);
    payload(list, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2); // offsetof(struct tcphdr, dest)
    cmp(list, NFT_CMP_EQ, &port.to_be_bytes());
}

/// Which address of the IP header a CIDR match reads.
#[derive(Clone, Copy)]
enum Address {
    Source,
    Destination,
}

/// `ip saddr|daddr <cidr>` / `ip6 ...`: the family check, then the prefix bytes (masked
/// when the prefix is not byte-aligned).
fn address(list: &mut Attrs<'_>, cidr: Cidr, which: Address) {
    // offsetof(struct iphdr, saddr / daddr), offsetof(struct ipv6hdr, saddr / daddr)
    let (nfproto, offset) = match (cidr.addr().is_ipv4(), which) {
        (true, Address::Source) => (NFPROTO_IPV4, 12),
        (true, Address::Destination) => (NFPROTO_IPV4, 16),
        (false, Address::Source) => (NFPROTO_IPV6, 8),
        (false, Address::Destination) => (NFPROTO_IPV6, 24),
    };
    meta(list, NFT_META_NFPROTO);
    cmp(list, NFT_CMP_EQ, &[nfproto]);
    let prefix = usize::from(cidr.prefix());
    if prefix == 0 {
        return;
    }
    let addr = cidr.addr_bytes();
    if prefix % 8 == 0 {
        let n = prefix / 8;
        payload(list, NFT_PAYLOAD_NETWORK_HEADER, offset, n as u32);
        cmp(list, NFT_CMP_EQ, &addr[..n]);
    } else {
        payload(list, NFT_PAYLOAD_NETWORK_HEADER, offset, addr.len() as u32);
        bitwise_mask(list, &cidr.mask_bytes());
        cmp(list, NFT_CMP_EQ, &addr);
    }
}

fn rule_exprs(list: &mut Attrs<'_>, rule: &Rule) {
    match rule.matches {
        Match::NotTcp => {
            meta(list, NFT_META_L4PROTO);
            cmp(list, NFT_CMP_NEQ, &[IPPROTO_TCP]);
        }
        // skuid and mark compare in host byte order, as the kernel stores them.
        Match::SocketUid(uid) => {
            meta(list, NFT_META_SKUID);
            cmp(list, NFT_CMP_EQ, &uid.to_ne_bytes());
        }
        Match::Mark(mark) => {
            meta(list, NFT_META_MARK);
            cmp(list, NFT_CMP_EQ, &mark.to_ne_bytes());
        }
        Match::DestCidr(cidr) => address(list, cidr, Address::Destination),
        Match::SourceTcpDestPort(cidr, port) => {
            address(list, cidr, Address::Source);
            tcp_dport(list, port);
        }
        Match::TcpDestPort(port) => tcp_dport(list, port),
        Match::Tcp => tcp_only(list),
    }
    match rule.action {
        Action::Return => expr(list, "immediate", |a| {
            a.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
                .nested(NFTA_IMMEDIATE_DATA, |d| {
                    d.nested(NFTA_DATA_VERDICT, |v| {
                        v.be32(NFTA_VERDICT_CODE, NFT_RETURN as u32);
                    });
                });
        }),
        Action::Redirect(port) => {
            expr(list, "immediate", |a| {
                a.be32(NFTA_IMMEDIATE_DREG, NFT_REG_1)
                    .nested(NFTA_IMMEDIATE_DATA, |d| {
                        d.bytes(NFTA_DATA_VALUE, &port.to_be_bytes());
                    });
            });
            expr(list, "redir", |a| {
                a.be32(NFTA_REDIR_REG_PROTO_MIN, NFT_REG_1)
                    .be32(NFTA_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
            });
        }
    }
}
