//! The desired kernel state of one node: DESIGN.md §3's policy layout (as validated by hand in
//! `recipes/policy-layout.sh`), the SAs of every keyed peer and a route per peer pod CIDR.
//!
//! Pure: takes the local node, its peers and their keys, returns a [`DatapathState`]. It never
//! reads the kernel; the diff against what the kernel has is [`crate::plan`].
//!
//! ```text
//!  out  0/0            -> local pod CIDR      allow                       Exempt
//!  fwd  local CIDR     -> local pod CIDR      allow (same-node pods)      Exempt
//!  out  0/0            -> peer pod CIDR       tmpl local->peer  required  Peer
//!  out  local CIDR     -> peer node IP/32     tmpl local->peer  required  Peer
//!  fwd  peer pod CIDR  -> local pod CIDR      tmpl peer->local  required  Peer
//!  in   peer pod CIDR  -> local node IP/32    tmpl peer->local  required  Peer
//!  fwd  peer pod CIDR  -> local node IP/32    tmpl peer->local  required  Peer
//!  fwd  cluster CIDR   -> local pod CIDR      block                       InboundGuard
//!  fwd  0/0            -> local pod CIDR      tmpl any->local   optional  InboundOptional
//!  out  0/0            -> cluster CIDR        block                       FailClosed
//! ```
//!
//! The `fwd peer pod CIDR -> local node IP` row goes beyond the hand-validated layout: a NodePort
//! reply (remote pod -> SNATed node IP, forwarded on to the client) is checked against `fwd`
//! with its pre-NAT addresses (`nf_nat_decode_session`); without it the kernel drops it
//! (`XfrmInNoPols`). The `InboundGuard` row also goes beyond the hand-validated layout: clear text claiming a pod source
//! from a node we hold no SA with (an unknown or not-yet-keyed peer) is refused as well, not only
//! spoofed sources of keyed peers. Same-node pod traffic is exempted above it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cipherlane_core::{NodeName, PeerSpec, SaDirection, SaPair, Suite};
use ipnet::IpNet;

use crate::model::{
    Action, DatapathState, Direction, Flow, Policy, PolicyKey, Priority, Route, SaLimits, State,
    StateKey, Template, REQID,
};

/// Why a desired state cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("suite {suite} is not allowed with FIPS mode on (peer {peer}): use aes-gcm-128 or aes-gcm-256")]
    NotFips { suite: Suite, peer: NodeName },
    #[error(
        "peer {peer} has node IP {ip}, the local node's own IP: check the peer's CipherlaneNode"
    )]
    PeerIsLocal { peer: NodeName, ip: IpAddr },
    #[error(
        "pod CIDR {cidr} of peer {peer} overlaps {other}: pod CIDRs must be disjoint across nodes"
    )]
    OverlappingCidr {
        peer: NodeName,
        cidr: IpNet,
        other: IpNet,
    },
    #[error("peer {peer} appears twice (node IP {ip}): each node may be listed once")]
    DuplicatePeer { peer: NodeName, ip: IpAddr },
    #[error("the local node has no pod CIDR: the CNI needs one before the datapath can exempt local pods")]
    NoLocalPodCidr,
    #[error("no cluster pod CIDR given: fail-closed needs the cluster-wide pod range")]
    NoClusterCidr,
    #[error("an SA for peer {peer} uses SPI {spi:#x} twice towards {dst}: SPIs must be unique per destination")]
    DuplicateSpi {
        peer: NodeName,
        spi: u32,
        dst: IpAddr,
    },
}

/// The local node as the datapath needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub name: NodeName,
    /// Tunnel endpoint: the InternalIP.
    pub node_ip: IpAddr,
    pub pod_cidrs: Vec<IpNet>,
    /// Interface index of the device holding `node_ip` (routes leave through it).
    pub underlay_ifindex: u32,
}

/// SAs with one peer. Oldest first in each list: the kernel sends on the newest outbound SA, and
/// accepts on every inbound SA listed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerKeys {
    pub inbound: Vec<SaDirection>,
    pub outbound: Vec<SaDirection>,
}

impl PeerKeys {
    /// A steady pair plus, during a rotation's grace period, the previous pair.
    pub fn from_pairs(current: &SaPair, previous: Option<&SaPair>) -> PeerKeys {
        let mut keys = PeerKeys::default();
        if let Some(prev) = previous {
            keys.inbound.push(prev.inbound.clone());
            keys.outbound.push(prev.outbound.clone());
        }
        keys.inbound.push(current.inbound.clone());
        keys.outbound.push(current.outbound.clone());
        keys
    }

    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty() && self.outbound.is_empty()
    }
}

/// A peer and, once a handshake produced them, its SAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub spec: PeerSpec,
    /// `None` (or empty): no SA yet, so its pods stay behind the fail-closed block.
    pub keys: Option<PeerKeys>,
}

/// SA parameters that apply to every SA of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaSettings {
    pub replay_window: u32,
    pub limits: SaLimits,
    /// When on, only AES-GCM suites are accepted.
    pub fips: bool,
}

impl Default for SaSettings {
    fn default() -> Self {
        SaSettings {
            replay_window: 1024,
            limits: SaLimits::default(),
            fips: false,
        }
    }
}

/// Everything the desired state depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInput {
    pub local: LocalNode,
    pub cluster_pod_cidrs: Vec<IpNet>,
    pub peers: Vec<Peer>,
    pub settings: SaSettings,
}

fn any_of(family_of: &IpNet) -> IpNet {
    match family_of {
        IpNet::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpNet::V6(_) => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
    .unwrap_or_else(|_| unreachable!("a /0 prefix is always valid"))
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    same_family(a, b) && (a.contains(&b.network()) || b.contains(&a.network()))
}

struct Builder {
    out: DatapathState,
}

impl Builder {
    fn policy(
        &mut self,
        dir: Direction,
        src: IpNet,
        dst: IpNet,
        priority: Priority,
        action: Action,
        template: Option<Template>,
    ) {
        let key = PolicyKey { dir, src, dst };
        self.out.policies.insert(
            key,
            Policy {
                key,
                priority: priority.value(),
                action,
                template,
            },
        );
    }
}

/// Builds the node's desired datapath from its inputs.
pub fn desired_state(input: &NodeInput) -> Result<DatapathState, LayoutError> {
    let local = &input.local;
    if local.pod_cidrs.is_empty() {
        return Err(LayoutError::NoLocalPodCidr);
    }
    if input.cluster_pod_cidrs.is_empty() {
        return Err(LayoutError::NoClusterCidr);
    }
    validate_peers(input)?;

    let mut b = Builder {
        out: DatapathState::default(),
    };
    let n = local.node_ip;

    for l in &local.pod_cidrs {
        let any = any_of(l);
        b.policy(
            Direction::Out,
            any,
            *l,
            Priority::Exempt,
            Action::Allow,
            None,
        );
        for l2 in local.pod_cidrs.iter().filter(|x| same_family(x, l)) {
            b.policy(
                Direction::Fwd,
                *l2,
                *l,
                Priority::Exempt,
                Action::Allow,
                None,
            );
        }
        for c in input.cluster_pod_cidrs.iter().filter(|c| same_family(c, l)) {
            b.policy(
                Direction::Fwd,
                *c,
                *l,
                Priority::InboundGuard,
                Action::Block,
                None,
            );
        }
        b.policy(
            Direction::Fwd,
            any,
            *l,
            Priority::InboundOptional,
            Action::Allow,
            Some(Template {
                src: unspecified_like(n),
                dst: n,
                reqid: 0,
                optional: true,
            }),
        );
    }
    for c in &input.cluster_pod_cidrs {
        b.policy(
            Direction::Out,
            any_of(c),
            *c,
            Priority::FailClosed,
            Action::Block,
            None,
        );
    }

    // no local pod address is ever routed off the node: addresses without a pod are dropped here
    for cidr in &local.pod_cidrs {
        b.out.routes.insert(*cidr, Route::blackhole(*cidr));
    }

    for peer in &input.peers {
        let p = peer.spec.node_ip;
        for r in &peer.spec.pod_cidrs {
            b.out.routes.insert(
                *r,
                Route {
                    dst: *r,
                    gateway: p,
                    oif: local.underlay_ifindex,
                    src: n,
                },
            );
        }
        let Some(keys) = peer
            .keys
            .as_ref()
            .filter(|k| !k.outbound.is_empty() || !k.inbound.is_empty())
        else {
            continue;
        };
        if let Some(sa) = keys
            .inbound
            .iter()
            .chain(&keys.outbound)
            .find(|sa| input.settings.fips && !sa.key.suite().fips_approved())
        {
            return Err(LayoutError::NotFips {
                suite: sa.key.suite(),
                peer: peer.spec.name.clone(),
            });
        }
        let out_tmpl = Template {
            src: n,
            dst: p,
            reqid: REQID,
            optional: false,
        };
        let in_tmpl = Template {
            src: p,
            dst: n,
            reqid: REQID,
            optional: false,
        };
        if !keys.outbound.is_empty() {
            for r in &peer.spec.pod_cidrs {
                b.policy(
                    Direction::Out,
                    any_of(r),
                    *r,
                    Priority::Peer,
                    Action::Allow,
                    Some(out_tmpl),
                );
            }
            for l in &local.pod_cidrs {
                b.policy(
                    Direction::Out,
                    *l,
                    host(p),
                    Priority::Peer,
                    Action::Allow,
                    Some(out_tmpl),
                );
            }
        }
        if !keys.inbound.is_empty() {
            for r in &peer.spec.pod_cidrs {
                for l in local.pod_cidrs.iter().filter(|l| same_family(l, r)) {
                    b.policy(
                        Direction::Fwd,
                        *r,
                        *l,
                        Priority::Peer,
                        Action::Allow,
                        Some(in_tmpl),
                    );
                }
                if same_family(r, &host(n)) {
                    // Replies of NodePort/Service flows (DNAT + SNAT to the node IP) are
                    // checked against fwd with their pre-NAT addresses: peer pod -> node IP.
                    for dir in [Direction::In, Direction::Fwd] {
                        b.policy(
                            dir,
                            *r,
                            host(n),
                            Priority::Peer,
                            Action::Allow,
                            Some(in_tmpl),
                        );
                    }
                }
            }
        }
        for (flow, list, src, dst) in [
            (Flow::Inbound, &keys.inbound, p, n),
            (Flow::Outbound, &keys.outbound, n, p),
        ] {
            for sa in list {
                let key = StateKey {
                    dst,
                    spi: sa.spi.value(),
                };
                if b.out.states.contains_key(&key) {
                    return Err(LayoutError::DuplicateSpi {
                        peer: peer.spec.name.clone(),
                        spi: key.spi,
                        dst,
                    });
                }
                b.out.push_state(State {
                    key,
                    src,
                    reqid: REQID,
                    flow,
                    peer: p,
                    aead: sa.key.clone(),
                    esn: true,
                    replay_window: input.settings.replay_window,
                    limits: input.settings.limits,
                });
            }
        }
    }
    Ok(b.out)
}

fn validate_peers(input: &NodeInput) -> Result<(), LayoutError> {
    let mut seen: BTreeMap<IpAddr, &NodeName> = BTreeMap::new();
    let mut cidrs: Vec<(IpNet, &NodeName)> = Vec::new();
    for peer in &input.peers {
        let s = &peer.spec;
        if s.node_ip == input.local.node_ip {
            return Err(LayoutError::PeerIsLocal {
                peer: s.name.clone(),
                ip: s.node_ip,
            });
        }
        if seen.insert(s.node_ip, &s.name).is_some() {
            return Err(LayoutError::DuplicatePeer {
                peer: s.name.clone(),
                ip: s.node_ip,
            });
        }
        for c in &s.pod_cidrs {
            if let Some(l) = input.local.pod_cidrs.iter().find(|l| overlaps(l, c)) {
                return Err(LayoutError::OverlappingCidr {
                    peer: s.name.clone(),
                    cidr: *c,
                    other: *l,
                });
            }
            if let Some((o, _)) = cidrs.iter().find(|(o, _)| overlaps(o, c)) {
                return Err(LayoutError::OverlappingCidr {
                    peer: s.name.clone(),
                    cidr: *c,
                    other: *o,
                });
            }
            cidrs.push((*c, &s.name));
        }
    }
    Ok(())
}

/// Policy hash thresholds (`XFRMA_SPD_IPV4_HTHRESH` / `IPV6`), as `(lbits, rbits)`: a policy is
/// kept in the kernel's hash (exact lookup) when its local-side prefix is at least `lbits` and its
/// remote-side prefix at least `rbits`; others go to the inexact tree.
///
/// Per-peer `out` selectors are `0/0 -> peer pod CIDR`, so `lbits` must be 0 and `rbits` the
/// shortest peer pod CIDR prefix; then every per-peer policy (out, in, fwd) is hashed and only the
/// handful of node-wide policies stay inexact. Returns `None` for a family without peers.
pub fn hash_thresholds(input: &NodeInput, v6: bool) -> Option<(u8, u8)> {
    input
        .peers
        .iter()
        .flat_map(|p| p.spec.pod_cidrs.iter())
        .filter(|c| matches!(c, IpNet::V6(_)) == v6)
        .map(|c| c.prefix_len())
        .min()
        .map(|r| (0, r))
}
