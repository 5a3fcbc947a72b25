//! The second fence's adapter: Cipherlane's nftables table ([`cipherlane_datapath::fence`]) as
//! nf_tables netlink messages, sent on a `NETLINK_NETFILTER` socket. Pure netlink: the agent image
//! needs no `nft` binary and no libnftnl.
//!
//! The table is always written whole, in one nf_tables batch (a transaction the kernel applies
//! atomically): create it if absent, delete it, create it again with its sets, chains and rules.
//! There is never a moment without the fence, and a half-written one is never visible. Nothing
//! outside the table `inet cipherlane` is read or written.
//!
//! The encoding follows the kernel's UAPI (`linux/netfilter/nf_tables.h`, `nfnetlink.h`); what
//! `nft --debug=netlink` prints for the same rules is in the tests.

use std::net::IpAddr;

use cipherlane_datapath::fence::{
    fence_rules, peer_ips, peer_set_families, Family, FenceChain, FenceRule, FenceSpec, Match,
    FENCE_TABLE,
};
use ipnet::IpNet;

use crate::XfrmError;

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

// attribute numbers (nf_tables.h)
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
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
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_RT_DREG: u16 = 1;
const NFTA_RT_KEY: u16 = 2;
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
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFT_META_NFPROTO: u32 = 15;
const NFT_META_SECPATH: u32 = 25;
const NFT_RT_XFRM: u32 = 4;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
/// After source NAT (`srcnat` is 100): the fence sees the addresses that go on the wire.
pub const OUT_PRIORITY: i32 = 110;
/// `raw`: before conntrack spends anything on a packet that is dropped.
pub const IN_PRIORITY: i32 = -300;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
/// Elements per NEWSETELEM message (keeps each message well under the socket's limits).
const ELEMENTS_PER_MESSAGE: usize = 512;

/// Netlink attributes, appended to a buffer.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn bytes(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.bytes(ty, &b)
    }
    fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }
    fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut inner = Attrs::default();
        f(&mut inner);
        self.bytes(ty | NLA_F_NESTED, &inner.0)
    }
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Attrs)) -> &mut Self {
        self.nest(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, name);
            e.nest(NFTA_EXPR_DATA, data);
        })
    }
}

/// One netlink message of a batch.
struct Message {
    ty: u16,
    flags: u16,
    family: u8,
    res_id: u16,
    attrs: Vec<u8>,
}

fn msg(ty: u16, flags: u16, family: u8, attrs: Attrs) -> Message {
    Message {
        ty: (NFNL_SUBSYS_NFTABLES << 8) | ty,
        flags: NLM_F_REQUEST | flags,
        family,
        res_id: 0,
        attrs: attrs.0,
    }
}

/// Encodes messages with sequence numbers from `seq` (nlmsghdr + nfgenmsg + attributes).
fn encode(messages: &[Message], seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let len = 16 + 4 + m.attrs.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&m.ty.to_ne_bytes());
        out.extend_from_slice(&m.flags.to_ne_bytes());
        out.extend_from_slice(&(seq + i as u32).to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.push(m.family);
        out.push(0); // NFNETLINK_V0
        out.extend_from_slice(&m.res_id.to_be_bytes());
        out.extend_from_slice(&m.attrs);
    }
    out
}

fn batch(kind: u16) -> Message {
    Message {
        ty: kind,
        flags: NLM_F_REQUEST,
        family: 0,
        res_id: NFNL_SUBSYS_NFTABLES,
        attrs: Vec::new(),
    }
}

fn table_attrs() -> Attrs {
    let mut a = Attrs::default();
    a.str(NFTA_TABLE_NAME, FENCE_TABLE);
    a
}

fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn load(a: &mut Attrs, offset: u32, len: u32) {
    a.expr("payload", |d| {
        d.be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
            .be32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER)
            .be32(NFTA_PAYLOAD_OFFSET, offset)
            .be32(NFTA_PAYLOAD_LEN, len);
    });
}

fn cmp(a: &mut Attrs, op: u32, value: &[u8]) {
    a.expr("cmp", |d| {
        d.be32(NFTA_CMP_SREG, NFT_REG_1)
            .be32(NFTA_CMP_OP, op)
            .nest(NFTA_CMP_DATA, |v| {
                v.bytes(NFTA_DATA_VALUE, value);
            });
    });
}

/// `ip saddr|daddr [!=] CIDR`: loads the prefix's bytes (masked when it ends inside a byte).
fn prefix_match(a: &mut Attrs, family: Family, src: bool, net: &IpNet, negate: bool) {
    let (src_off, dst_off) = match family {
        Family::V4 => (12, 16),
        Family::V6 => (8, 24),
    };
    let bits = u32::from(net.prefix_len());
    let len = bits.div_ceil(8).max(1);
    load(a, if src { src_off } else { dst_off }, len);
    let addr = addr_bytes(&net.network());
    let value = &addr[..len as usize];
    if bits % 8 != 0 {
        let mask: Vec<u8> = (0..len)
            .map(|i| {
                let left = bits.saturating_sub(i * 8).min(8);
                (0xffu16 << (8 - left)) as u8
            })
            .collect();
        a.expr("bitwise", |d| {
            d.be32(NFTA_BITWISE_SREG, NFT_REG_1)
                .be32(NFTA_BITWISE_DREG, NFT_REG_1)
                .be32(NFTA_BITWISE_LEN, len)
                .nest(NFTA_BITWISE_MASK, |v| {
                    v.bytes(NFTA_DATA_VALUE, &mask);
                })
                .nest(NFTA_BITWISE_XOR, |v| {
                    v.bytes(NFTA_DATA_VALUE, &vec![0; len as usize]);
                });
        });
    }
    cmp(a, if negate { NFT_CMP_NEQ } else { NFT_CMP_EQ }, value);
}

fn set_id(family: Family) -> u32 {
    match family {
        Family::V4 => 1,
        Family::V6 => 2,
    }
}

fn rule_expressions(rule: &FenceRule) -> Attrs {
    let mut a = Attrs::default();
    a.expr("meta", |d| {
        d.be32(NFTA_META_DREG, NFT_REG_1)
            .be32(NFTA_META_KEY, NFT_META_NFPROTO);
    });
    cmp(
        &mut a,
        NFT_CMP_EQ,
        &[match rule.family {
            Family::V4 => NFPROTO_IPV4,
            Family::V6 => NFPROTO_IPV6,
        }],
    );
    for m in &rule.matches {
        match m {
            Match::SrcIn(n) => prefix_match(&mut a, rule.family, true, n, false),
            Match::SrcNotIn(n) => prefix_match(&mut a, rule.family, true, n, true),
            Match::DstIn(n) => prefix_match(&mut a, rule.family, false, n, false),
            Match::DstNotIn(n) => prefix_match(&mut a, rule.family, false, n, true),
            Match::DstPeerNode => {
                match rule.family {
                    Family::V4 => load(&mut a, 16, 4),
                    Family::V6 => load(&mut a, 24, 16),
                }
                a.expr("lookup", |d| {
                    d.str(NFTA_LOOKUP_SET, rule.family.peer_set())
                        .be32(NFTA_LOOKUP_SREG, NFT_REG_1)
                        .be32(NFTA_LOOKUP_SET_ID, set_id(rule.family));
                });
            }
            Match::RouteWithoutIpsec => {
                a.expr("rt", |d| {
                    d.be32(NFTA_RT_DREG, NFT_REG_1)
                        .be32(NFTA_RT_KEY, NFT_RT_XFRM);
                });
                cmp(&mut a, NFT_CMP_EQ, &[0]);
            }
            Match::NotDecrypted => {
                a.expr("meta", |d| {
                    d.be32(NFTA_META_DREG, NFT_REG_1)
                        .be32(NFTA_META_KEY, NFT_META_SECPATH);
                });
                cmp(&mut a, NFT_CMP_EQ, &[0]);
            }
        }
    }
    a.expr("counter", |_| {});
    a.expr("immediate", |d| {
        d.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
            .nest(NFTA_IMMEDIATE_DATA, |v| {
                v.nest(NFTA_DATA_VERDICT, |c| {
                    c.be32(NFTA_VERDICT_CODE, NF_DROP);
                });
            });
    });
    a
}

/// The messages that replace the fence table with `spec`'s, in one batch.
fn install_messages(spec: &FenceSpec) -> Vec<Message> {
    let new_table = || {
        let mut table = table_attrs();
        table.be32(NFTA_TABLE_FLAGS, 0);
        msg(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE | NLM_F_ACK,
            NFPROTO_INET,
            table,
        )
    };
    // Create the table if absent, delete it, create it afresh: the batch replaces a stale table
    // whole, and works the same when there is none.
    let mut m = vec![batch(NFNL_MSG_BATCH_BEGIN), new_table()];
    m.push(msg(
        NFT_MSG_DELTABLE,
        NLM_F_ACK,
        NFPROTO_INET,
        table_attrs(),
    ));
    m.push(new_table());
    for f in peer_set_families(spec) {
        let mut s = Attrs::default();
        s.str(NFTA_SET_TABLE, FENCE_TABLE)
            .str(NFTA_SET_NAME, f.peer_set())
            .be32(NFTA_SET_FLAGS, 0)
            .be32(
                NFTA_SET_KEY_TYPE,
                match f {
                    Family::V4 => TYPE_IPADDR,
                    Family::V6 => TYPE_IP6ADDR,
                },
            )
            .be32(
                NFTA_SET_KEY_LEN,
                match f {
                    Family::V4 => 4,
                    Family::V6 => 16,
                },
            )
            .be32(NFTA_SET_ID, set_id(f));
        m.push(msg(
            NFT_MSG_NEWSET,
            NLM_F_CREATE | NLM_F_ACK,
            NFPROTO_INET,
            s,
        ));
        for chunk in peer_ips(spec, f).chunks(ELEMENTS_PER_MESSAGE) {
            let mut e = Attrs::default();
            e.str(NFTA_SET_ELEM_LIST_TABLE, FENCE_TABLE)
                .str(NFTA_SET_ELEM_LIST_SET, f.peer_set())
                .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
                    for ip in chunk {
                        list.nest(NFTA_LIST_ELEM, |el| {
                            el.nest(NFTA_SET_ELEM_KEY, |k| {
                                k.bytes(NFTA_DATA_VALUE, &addr_bytes(ip));
                            });
                        });
                    }
                });
            m.push(msg(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE | NLM_F_ACK,
                NFPROTO_INET,
                e,
            ));
        }
    }
    for (chain, hook, prio) in [
        (FenceChain::Out, NF_INET_POST_ROUTING, OUT_PRIORITY),
        (FenceChain::In, NF_INET_PRE_ROUTING, IN_PRIORITY),
    ] {
        let mut c = Attrs::default();
        c.str(NFTA_CHAIN_TABLE, FENCE_TABLE)
            .str(NFTA_CHAIN_NAME, chain.name())
            .nest(NFTA_CHAIN_HOOK, |h| {
                h.be32(NFTA_HOOK_HOOKNUM, hook)
                    .be32(NFTA_HOOK_PRIORITY, prio as u32);
            })
            .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
            .str(NFTA_CHAIN_TYPE, "filter");
        m.push(msg(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE | NLM_F_ACK,
            NFPROTO_INET,
            c,
        ));
    }
    for rule in fence_rules(spec) {
        let mut r = Attrs::default();
        r.str(NFTA_RULE_TABLE, FENCE_TABLE)
            .str(NFTA_RULE_CHAIN, rule.chain.name());
        let exprs = rule_expressions(&rule);
        r.bytes(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &exprs.0);
        m.push(msg(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
            NFPROTO_INET,
            r,
        ));
    }
    m.push(batch(NFNL_MSG_BATCH_END));
    m
}

fn nft_err(op: &str, errno: i32) -> XfrmError {
    XfrmError::Netlink {
        op: op.to_string(),
        message: std::io::Error::from_raw_os_error(errno).to_string(),
        errno,
    }
}

fn socket(op: &str) -> Result<netlink_sys::Socket, XfrmError> {
    let mut s =
        netlink_sys::Socket::new(NETLINK_NETFILTER).map_err(|source| XfrmError::Socket {
            what: "NETLINK_NETFILTER (nftables)",
            source,
        })?;
    s.bind_auto().map_err(|source| XfrmError::Socket {
        what: "NETLINK_NETFILTER bind",
        source,
    })?;
    let _ = op;
    Ok(s)
}

/// The netlink messages in one datagram: (type, payload after the nlmsghdr).
fn split(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        out.push((ty, &buf[at + 16..at + len]));
        at += len.next_multiple_of(4);
    }
    out
}

fn errno_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// Sends `messages` and waits for one acknowledgement per message that asked for one.
fn transact(op: &str, messages: &[Message]) -> Result<(), XfrmError> {
    let s = socket(op)?;
    let bytes = encode(messages, 1);
    s.send(&bytes, 0).map_err(|source| XfrmError::Socket {
        what: "NETLINK_NETFILTER send",
        source,
    })?;
    let mut want = messages.iter().filter(|m| m.flags & NLM_F_ACK != 0).count();
    while want > 0 {
        let (buf, _) = s.recv_from_full().map_err(|source| XfrmError::Socket {
            what: "NETLINK_NETFILTER receive",
            source,
        })?;
        for (ty, payload) in split(&buf) {
            if ty == NLMSG_ERROR {
                let errno = errno_of(payload);
                if errno != 0 {
                    return Err(nft_err(op, errno));
                }
                want = want.saturating_sub(1);
            }
        }
    }
    Ok(())
}

/// Replaces the fence table with `spec`'s, atomically.
pub fn install(spec: &FenceSpec) -> Result<(), XfrmError> {
    transact(
        "installing the nftables fence (table inet cipherlane)",
        &install_messages(spec),
    )
}

/// Removes the fence table; `false` when it was not there.
pub fn remove() -> Result<bool, XfrmError> {
    let m = [
        batch(NFNL_MSG_BATCH_BEGIN),
        msg(NFT_MSG_DELTABLE, NLM_F_ACK, NFPROTO_INET, table_attrs()),
        batch(NFNL_MSG_BATCH_END),
    ];
    match transact("removing the nftables fence (table inet cipherlane)", &m) {
        Ok(()) => Ok(true),
        Err(XfrmError::Netlink { errno: 2, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How many rules the fence table holds now; `None` when the table is absent.
pub fn rule_count() -> Result<Option<usize>, XfrmError> {
    let op = "reading the nftables fence (table inet cipherlane)";
    let s = socket(op)?;
    let get = [msg(
        NFT_MSG_GETTABLE,
        NLM_F_ACK,
        NFPROTO_INET,
        table_attrs(),
    )];
    s.send(&encode(&get, 1), 0)
        .map_err(|source| XfrmError::Socket {
            what: "NETLINK_NETFILTER send",
            source,
        })?;
    'table: loop {
        let (buf, _) = s.recv_from_full().map_err(|source| XfrmError::Socket {
            what: "NETLINK_NETFILTER receive",
            source,
        })?;
        for (ty, payload) in split(&buf) {
            if ty == NLMSG_ERROR {
                match errno_of(payload) {
                    0 => break 'table,
                    2 => return Ok(None),
                    e => return Err(nft_err(op, e)),
                }
            }
        }
    }
    let mut dump = Attrs::default();
    dump.str(NFTA_RULE_TABLE, FENCE_TABLE);
    let get = [msg(NFT_MSG_GETRULE, NLM_F_DUMP, NFPROTO_INET, dump)];
    s.send(&encode(&get, 2), 0)
        .map_err(|source| XfrmError::Socket {
            what: "NETLINK_NETFILTER send",
            source,
        })?;
    let mut rules = 0;
    loop {
        let (buf, _) = s.recv_from_full().map_err(|source| XfrmError::Socket {
            what: "NETLINK_NETFILTER receive",
            source,
        })?;
        for (ty, payload) in split(&buf) {
            match ty {
                NLMSG_DONE => return Ok(Some(rules)),
                NLMSG_ERROR => {
                    let e = errno_of(payload);
                    if e != 0 {
                        return Err(nft_err(op, e));
                    }
                }
                t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => rules += 1,
                _ => {}
            }
        }
    }
}

/// The number of rules `spec`'s table holds.
pub fn expected_rules(spec: &FenceSpec) -> usize {
    fence_rules(spec).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn a_byte_aligned_prefix_loads_only_its_bytes_like_nft_does() {
        // nft: ip daddr 10.244.0.0/16 -> [ payload load 2b @ network header + 16 ] [ cmp eq 0x0000f40a ]
        let mut a = Attrs::default();
        prefix_match(&mut a, Family::V4, false, &net("10.244.0.0/16"), false);
        let b = a.0;
        let payload_len = [0, 0, 0, 2]; // NFTA_PAYLOAD_LEN, be32 2
        assert!(b.windows(4).any(|w| w == payload_len));
        assert!(b.windows(2).any(|w| w == [10, 244]));
        assert!(!b.windows(8).any(|w| w == b"bitwise\0"), "no mask needed");
    }

    #[test]
    fn a_prefix_inside_a_byte_is_masked() {
        let mut a = Attrs::default();
        prefix_match(&mut a, Family::V4, true, &net("10.240.0.0/12"), true);
        let b = a.0;
        assert!(b.windows(8).any(|w| w == b"bitwise\0"));
        assert!(
            b.windows(2).any(|w| w == [0xff, 0xf0]),
            "mask /12 over 2 bytes"
        );
    }

    #[test]
    fn the_batch_replaces_the_table_and_asks_an_ack_for_every_change() {
        let spec = FenceSpec {
            cluster_pod_cidrs: vec![net("10.244.0.0/16")],
            local_pod_cidrs: vec![net("10.244.1.0/24")],
            peer_node_ips: vec!["198.18.0.2".parse().expect("ip")],
        };
        let m = install_messages(&spec);
        let types: Vec<u16> = m.iter().map(|m| m.ty & 0xff).collect();
        assert_eq!(
            types,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                NFT_MSG_NEWTABLE,
                NFT_MSG_DELTABLE,
                NFT_MSG_NEWTABLE,
                NFT_MSG_NEWSET,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWCHAIN,
                NFT_MSG_NEWCHAIN,
                NFT_MSG_NEWRULE,
                NFT_MSG_NEWRULE,
                NFT_MSG_NEWRULE,
                NFNL_MSG_BATCH_END
            ]
        );
        assert!(m[1..m.len() - 1].iter().all(|m| m.flags & NLM_F_ACK != 0));
        let bytes = encode(&m, 1);
        let parts = split(&bytes);
        assert_eq!(parts.len(), m.len(), "every message is framed whole");
        assert_eq!(expected_rules(&spec), 3);
    }
}
