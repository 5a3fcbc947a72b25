//! Translation between datapath values and netlink messages. Reading keeps only objects with
//! Cipherlane's markers; writing sets every field the kernel checks (template algorithm masks,
//! infinite lifetimes where no limit is set), as `ip xfrm` does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cipherlane_core::{SaKey, Suite};
use cipherlane_datapath::{
    is_our_reqid, Action, Direction, Flow, Policy, PolicyKey, Priority, Route, SaLimits, State,
    StateCounters, StateKey, Template, ROUTE_PROTOCOL,
};
use ipnet::IpNet;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_xfrm::{
    constants::{
        AF_INET, AF_INET6, IPPROTO_ESP, XFRM_INF, XFRM_MODE_TUNNEL, XFRM_POLICY_ALLOW,
        XFRM_POLICY_BLOCK, XFRM_POLICY_FWD, XFRM_POLICY_IN, XFRM_POLICY_OUT, XFRM_STATE_ESN,
    },
    Address, LifetimeConfig, UserTemplate, XfrmAttrs,
};

pub(crate) fn ip_of(addr: &Address, family: u16) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(addr.to_ipv4())),
        AF_INET6 => Some(IpAddr::V6(addr.to_ipv6())),
        _ => None,
    }
}

pub(crate) fn dir_code(dir: Direction) -> u8 {
    match dir {
        Direction::In => XFRM_POLICY_IN,
        Direction::Out => XFRM_POLICY_OUT,
        Direction::Fwd => XFRM_POLICY_FWD,
    }
}

fn dir_of(code: u8) -> Option<Direction> {
    match code {
        XFRM_POLICY_IN => Some(Direction::In),
        XFRM_POLICY_OUT => Some(Direction::Out),
        XFRM_POLICY_FWD => Some(Direction::Fwd),
        _ => None,
    }
}

pub(crate) fn action_code(action: Action) -> u8 {
    match action {
        Action::Allow => XFRM_POLICY_ALLOW,
        Action::Block => XFRM_POLICY_BLOCK,
    }
}

/// A kernel template for a datapath template: ESP, tunnel mode, every algorithm allowed.
pub(crate) fn user_template(t: &Template) -> UserTemplate {
    let mut ut = UserTemplate::default();
    ut.source(&t.src);
    ut.destination(&t.dst);
    ut.protocol(IPPROTO_ESP);
    ut.mode(XFRM_MODE_TUNNEL);
    ut.reqid(t.reqid);
    ut.optional(t.optional);
    ut.aalgos = u32::MAX;
    ut.ealgos = u32::MAX;
    ut.calgos = u32::MAX;
    ut
}

pub(crate) fn infinite_lifetime() -> LifetimeConfig {
    LifetimeConfig {
        soft_byte_limit: XFRM_INF,
        hard_byte_limit: XFRM_INF,
        soft_packet_limit: XFRM_INF,
        hard_packet_limit: XFRM_INF,
        ..Default::default()
    }
}

pub(crate) fn sa_lifetime(limits: &SaLimits) -> LifetimeConfig {
    LifetimeConfig {
        soft_byte_limit: limits.soft_bytes.unwrap_or(XFRM_INF),
        hard_byte_limit: limits.hard_bytes.unwrap_or(XFRM_INF),
        soft_packet_limit: limits.soft_packets.unwrap_or(XFRM_INF),
        hard_packet_limit: limits.hard_packets.unwrap_or(XFRM_INF),
        ..Default::default()
    }
}

fn limit(v: u64) -> Option<u64> {
    (v != XFRM_INF).then_some(v)
}

fn net(addr: &Address, prefix: u8, family: u16) -> Option<IpNet> {
    let ip = ip_of(addr, family)?;
    IpNet::new(ip, prefix).ok().map(|n| n.trunc())
}

/// A dumped policy, if it is one of ours.
pub(crate) fn policy_from_kernel(
    msg: &netlink_packet_xfrm::policy::ModifyMessage,
) -> Option<Policy> {
    let info = &msg.user_policy_info;
    Priority::from_value(info.priority)?;
    let sel = &info.selector;
    let key = PolicyKey {
        dir: dir_of(info.direction)?,
        src: net(&sel.saddr, sel.prefixlen_s, sel.family)?,
        dst: net(&sel.daddr, sel.prefixlen_d, sel.family)?,
    };
    let action = if info.action == XFRM_POLICY_BLOCK {
        Action::Block
    } else {
        Action::Allow
    };
    let template = msg.nlas.iter().find_map(|nla| match nla {
        XfrmAttrs::Template(ts) => ts.first().and_then(|t| {
            Some(Template {
                src: ip_of(&t.saddr, t.family)?,
                dst: ip_of(&t.id.daddr, t.family)?,
                reqid: t.reqid,
                optional: t.optional != 0,
            })
        }),
        _ => None,
    });
    Some(Policy {
        key,
        priority: info.priority,
        action,
        template,
    })
}

fn suite_of(alg: &str, key_len: usize) -> Option<Suite> {
    Suite::ALL
        .into_iter()
        .find(|s| s.kernel_alg() == alg && s.keymat_len() == key_len)
}

fn c_name(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A dumped SA, if it is one of ours (ESP, tunnel mode, our reqid range, a known AEAD).
pub(crate) fn state_from_kernel(
    msg: &netlink_packet_xfrm::state::ModifyMessage,
    local_ips: &[IpAddr],
) -> Option<(State, StateCounters)> {
    let info = &msg.user_sa_info;
    if !is_our_reqid(info.reqid) || info.id.proto != IPPROTO_ESP {
        return None;
    }
    let dst = ip_of(&info.id.daddr, info.family)?;
    let src = ip_of(&info.saddr, info.family)?;
    let mut aead = None;
    let mut replay_window = u32::from(info.replay_window);
    for nla in &msg.nlas {
        match nla {
            XfrmAttrs::EncryptionAlgAead(a) => {
                let suite = suite_of(&c_name(&a.alg_name), a.alg_key.len())?;
                aead = SaKey::new(suite, a.alg_key.clone()).ok();
            }
            XfrmAttrs::ReplayStateEsn(r) => replay_window = r.replay_window,
            _ => {}
        }
    }
    let (flow, peer) = if local_ips.contains(&dst) {
        (Flow::Inbound, src)
    } else {
        (Flow::Outbound, dst)
    };
    let lft = &info.lifetime_cfg;
    let state = State {
        key: StateKey {
            dst,
            spi: info.id.spi,
        },
        src,
        reqid: info.reqid,
        flow,
        peer,
        aead: aead?,
        esn: info.flags & XFRM_STATE_ESN != 0,
        replay_window,
        limits: SaLimits {
            soft_bytes: limit(lft.soft_byte_limit),
            hard_bytes: limit(lft.hard_byte_limit),
            soft_packets: limit(lft.soft_packet_limit),
            hard_packets: limit(lft.hard_packet_limit),
        },
    };
    let cur = &info.lifetime_cur;
    Some((
        state,
        StateCounters {
            bytes: cur.bytes,
            packets: cur.packets,
            add_time: cur.add_time,
        },
    ))
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Whether a dumped route carries Cipherlane's protocol number in the main table.
pub(crate) fn is_our_route(msg: &RouteMessage) -> bool {
    u8::from(msg.header.protocol) == ROUTE_PROTOCOL
        && msg.header.table == RouteHeader::RT_TABLE_MAIN
}

/// A dumped route, if it is one of ours. Missing fields read as unspecified/0, so a route of
/// another shape never equals a desired one and gets replaced or deleted.
pub(crate) fn route_from_kernel(msg: &RouteMessage) -> Option<Route> {
    if !is_our_route(msg) {
        return None;
    }
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut src = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(a) => src = route_ip(a),
            _ => {}
        }
    }
    let unspecified = if msg.header.address_family == netlink_packet_route::AddressFamily::Inet6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let dst = IpNet::new(
        dst.unwrap_or(unspecified),
        msg.header.destination_prefix_length,
    )
    .ok()?;
    Some(Route {
        dst,
        gateway: gateway.unwrap_or(unspecified),
        oif: oif.unwrap_or(0),
        src: src.unwrap_or(unspecified),
    })
}
