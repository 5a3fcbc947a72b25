//! The kernel objects Cipherlane manages, as plain values: XFRM policies, XFRM states (SAs) and
//! routes, plus the ownership markers that tell ours apart from anyone else's.
//!
//! This module owns the vocabulary shared by the layout, the diff and the netlink adapter. It
//! has no behaviour beyond identity keys and ownership tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cipherlane_core::{SaKey, Suite};
use ipnet::IpNet;

/// Every Cipherlane SA and every templated Cipherlane policy carries a reqid in this range.
/// Uninstall and adoption treat a state as ours only when its reqid falls inside it.
pub const REQID_RANGE: std::ops::RangeInclusive<u32> = 0x0C1A_0000..=0x0C1A_FFFF;

/// The reqid used by the current layout (one reqid for every peer: the kernel matches states
/// by tunnel endpoints as well, so per-peer reqids are not needed).
pub const REQID: u32 = 0x0C1A_0001;

/// Cipherlane's policies live in a reserved priority band; the offsets keep DESIGN.md §3's
/// order (lower value = consulted first). A policy is ours only when its priority is one of
/// [`Priority::ALL`]'s values.
pub const PRIORITY_BAND: u32 = 0x0C1A_0000;

/// The priorities of the layout, in the order the kernel consults them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Local pod CIDR exemptions (out allow, same-node fwd allow).
    Exempt,
    /// Per-peer policies with a required template.
    Peer,
    /// Clear text from anywhere in the cluster pod CIDR to local pods is refused (fwd block).
    InboundGuard,
    /// Everything else to local pods: an optional (`level use`) template.
    InboundOptional,
    /// Fail-closed: the cluster pod CIDR is blocked outbound.
    FailClosed,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority::Exempt,
        Priority::Peer,
        Priority::InboundGuard,
        Priority::InboundOptional,
        Priority::FailClosed,
    ];

    /// The kernel priority value.
    pub fn value(self) -> u32 {
        PRIORITY_BAND
            + match self {
                Priority::Exempt => 50,
                Priority::Peer => 100,
                Priority::InboundGuard => 150,
                Priority::InboundOptional => 200,
                Priority::FailClosed => 1000,
            }
    }

    /// The layout priority for a kernel value, if the value is one of ours.
    pub fn from_value(value: u32) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.value() == value)
    }
}

/// Routes Cipherlane installs carry this routing protocol number (`ip route ... proto 0xc1`).
pub const ROUTE_PROTOCOL: u8 = 0xC1;

/// Whether a reqid marks a Cipherlane SA or template.
pub fn is_our_reqid(reqid: u32) -> bool {
    REQID_RANGE.contains(&reqid)
}

/// Policy direction, as the kernel's `XFRM_POLICY_IN/OUT/FWD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    In,
    Out,
    Fwd,
}

/// What a policy does with a packet that matches its selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Block,
}

/// An ESP tunnel-mode template of a policy. `src` unspecified (`0.0.0.0`) is a wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Template {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 matches any reqid.
    pub reqid: u32,
    /// `level use`: the packet may also arrive without this transform.
    pub optional: bool,
}

/// The identity of a policy in the kernel: direction and selector (since Linux 5.8 the priority
/// is not part of it: a policy with the same selector replaces or collides with another).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub dir: Direction,
    pub src: IpNet,
    pub dst: IpNet,
}

/// An XFRM policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    pub key: PolicyKey,
    pub priority: u32,
    pub action: Action,
    pub template: Option<Template>,
}

impl Policy {
    /// Ours when its priority is in the layout's band.
    pub fn is_ours(&self) -> bool {
        Priority::from_value(self.priority).is_some()
    }
}

/// Byte and packet limits of an SA. `None` is unlimited (the kernel's `XFRM_INF`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SaLimits {
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
}

/// The identity of an SA in the kernel: destination, SPI (and protocol, always ESP here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    pub dst: IpAddr,
    pub spi: u32,
}

/// Whether an SA carries traffic to or from the local node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    Inbound,
    Outbound,
}

/// An ESP tunnel-mode SA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub key: StateKey,
    pub src: IpAddr,
    pub reqid: u32,
    pub flow: Flow,
    /// The peer at the other end of the tunnel (the node IP that is not local).
    pub peer: IpAddr,
    pub aead: SaKey,
    pub esn: bool,
    pub replay_window: u32,
    pub limits: SaLimits,
}

impl State {
    pub fn suite(&self) -> Suite {
        self.aead.suite()
    }

    /// Whether the kernel object would need to be recreated (not just updated) to match.
    pub fn same_identity_and_keys(&self, other: &State) -> bool {
        self.key == other.key
            && self.src == other.src
            && self.reqid == other.reqid
            && self.aead == other.aead
            && self.esn == other.esn
            && self.replay_window == other.replay_window
    }
}

/// Counters the kernel keeps per SA (from a state dump).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounters {
    pub bytes: u64,
    pub packets: u64,
    /// Unix seconds when the SA was added.
    pub add_time: u64,
}

/// A route to a peer's pod CIDR, through the underlay device, towards the peer's node IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: IpNet,
    /// The peer's node IP; installed `onlink` so a routed underlay works too (XFRM re-routes
    /// the outer packet by node IP).
    pub gateway: IpAddr,
    /// Interface index of the underlay device (the one holding the local node IP).
    pub oif: u32,
    /// Preferred source: the local node IP.
    pub src: IpAddr,
}

impl Route {
    /// A blackhole route: no gateway (unspecified), no device (0), no source. Installed for the
    /// local pod CIDRs, so that a decrypted packet for a local pod address that has no pod (the
    /// pod was just deleted, or never existed) is dropped here instead of following the node's
    /// default route back onto the underlay in clear. Pods' /32 routes are more specific.
    pub fn blackhole(dst: IpNet) -> Route {
        let unspecified = match dst {
            IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        Route {
            dst,
            gateway: unspecified,
            oif: 0,
            src: unspecified,
        }
    }

    /// Whether this is a blackhole route (see [`Route::blackhole`]).
    pub fn is_blackhole(&self) -> bool {
        self.oif == 0 && self.gateway.is_unspecified()
    }
}

/// A snapshot of Cipherlane's kernel objects (desired or observed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathState {
    pub policies: BTreeMap<PolicyKey, Policy>,
    pub states: BTreeMap<StateKey, State>,
    pub routes: BTreeMap<IpNet, Route>,
    /// SA keys in the order they were listed (desired) or added by the kernel (observed), oldest
    /// first: the newest outbound SA to a peer is the one the kernel sends on.
    pub state_order: Vec<StateKey>,
}

impl DatapathState {
    /// Inserts an SA at the end of the order.
    pub fn push_state(&mut self, state: State) {
        self.state_order.retain(|k| *k != state.key);
        self.state_order.push(state.key);
        self.states.insert(state.key, state);
    }
}

/// What the adapter read from the kernel: our objects plus per-SA counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub datapath: DatapathState,
    pub counters: BTreeMap<StateKey, StateCounters>,
}

impl Observed {
    pub fn add_state(&mut self, state: State, counters: StateCounters) {
        self.counters.insert(state.key, counters);
        self.datapath.push_state(state);
    }

    /// Sorts the SA order by add time (stable, so dump order breaks ties).
    pub fn sort_states_by_age(&mut self) {
        let counters = &self.counters;
        self.datapath
            .state_order
            .sort_by_key(|k| counters.get(k).map(|c| c.add_time).unwrap_or(0));
    }
}
