//! The second fence (DESIGN.md §3, "Two fences"): an nftables table of Cipherlane's own that drops
//! pod traffic crossing the underlay without IPsec, whatever happened to the XFRM policies.
//!
//! ```text
//!  table inet cipherlane
//!    set peer_nodes4 / peer_nodes6   the peers' node IPs
//!    chain out  hook postrouting priority srcnat + 10 (after NAT: the addresses on the wire)
//!      ip daddr <cluster CIDR> ip daddr != <local CIDR>...  rt ipsec missing   counter drop
//!      ip saddr <local CIDR>   ip daddr @peer_nodes4         rt ipsec missing   counter drop
//!    chain in   hook prerouting priority raw
//!      ip saddr <cluster CIDR> ip saddr != <local CIDR>...  meta ipsec missing counter drop
//! ```
//!
//! `rt ipsec missing`: the packet's route carries no XFRM bundle, so it would leave in clear.
//! `meta ipsec missing`: the packet was not decrypted by XFRM. The table does not depend on the
//! XFRM policies at all: with every policy flushed, the main routing table still routes peer pod
//! CIDRs via the peers' node IPs, and these rules drop what would otherwise leak.
//!
//! Pure: this module says which rules the node needs; `cipherlane-xfrm` encodes them as nf_tables
//! netlink messages and installs them in one atomic batch.

use std::net::IpAddr;

use ipnet::IpNet;

/// The name of Cipherlane's nftables table (family `inet`).
pub const FENCE_TABLE: &str = "cipherlane";

/// What the fence depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FenceSpec {
    pub cluster_pod_cidrs: Vec<IpNet>,
    pub local_pod_cidrs: Vec<IpNet>,
    /// The peers' node IPs (traffic from local pods to them must be encrypted too).
    pub peer_node_ips: Vec<IpAddr>,
}

/// Address family of a rule or set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of_net(n: &IpNet) -> Family {
        match n {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_ip(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The peer node IP set of this family.
    pub fn peer_set(self) -> &'static str {
        match self {
            Family::V4 => "peer_nodes4",
            Family::V6 => "peer_nodes6",
        }
    }
}

/// The chain a rule sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceChain {
    /// postrouting, after source NAT.
    Out,
    /// prerouting, before conntrack.
    In,
}

impl FenceChain {
    pub fn name(self) -> &'static str {
        match self {
            FenceChain::Out => "out",
            FenceChain::In => "in",
        }
    }
}

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    SrcIn(IpNet),
    SrcNotIn(IpNet),
    DstIn(IpNet),
    DstNotIn(IpNet),
    /// The destination is in the peer node IP set of the rule's family.
    DstPeerNode,
    /// `rt ipsec missing`: no XFRM transform on the packet's route.
    RouteWithoutIpsec,
    /// `meta ipsec missing`: the packet was not decrypted.
    NotDecrypted,
}

/// A rule: when every condition holds, count and drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceRule {
    pub chain: FenceChain,
    pub family: Family,
    pub matches: Vec<Match>,
}

/// The fence's rules, in order (the out chain's, then the in chain's).
pub fn fence_rules(spec: &FenceSpec) -> Vec<FenceRule> {
    let mut out = Vec::new();
    let locals_of = |f: Family| {
        spec.local_pod_cidrs
            .iter()
            .filter(move |l| Family::of_net(l) == f)
    };
    for c in &spec.cluster_pod_cidrs {
        let f = Family::of_net(c);
        let mut m = vec![Match::DstIn(*c)];
        m.extend(locals_of(f).map(|l| Match::DstNotIn(*l)));
        m.push(Match::RouteWithoutIpsec);
        out.push(FenceRule {
            chain: FenceChain::Out,
            family: f,
            matches: m,
        });
    }
    for l in &spec.local_pod_cidrs {
        out.push(FenceRule {
            chain: FenceChain::Out,
            family: Family::of_net(l),
            matches: vec![
                Match::SrcIn(*l),
                Match::DstPeerNode,
                Match::RouteWithoutIpsec,
            ],
        });
    }
    for c in &spec.cluster_pod_cidrs {
        let f = Family::of_net(c);
        let mut m = vec![Match::SrcIn(*c)];
        m.extend(locals_of(f).map(|l| Match::SrcNotIn(*l)));
        m.push(Match::NotDecrypted);
        out.push(FenceRule {
            chain: FenceChain::In,
            family: f,
            matches: m,
        });
    }
    out
}

/// The families that need a peer node set (those of the local pod CIDRs).
pub fn peer_set_families(spec: &FenceSpec) -> Vec<Family> {
    let mut f: Vec<Family> = spec.local_pod_cidrs.iter().map(Family::of_net).collect();
    f.sort();
    f.dedup();
    f
}

/// The peer node IPs of one family, sorted and without duplicates.
pub fn peer_ips(spec: &FenceSpec, family: Family) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = spec
        .peer_node_ips
        .iter()
        .filter(|ip| Family::of_ip(ip) == family)
        .copied()
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn spec() -> FenceSpec {
        FenceSpec {
            cluster_pod_cidrs: vec![net("10.244.0.0/16"), net("fd00:244::/48")],
            local_pod_cidrs: vec![net("10.244.1.0/24"), net("fd00:244:0:1::/64")],
            peer_node_ips: vec![
                "198.18.0.2".parse().expect("ip"),
                "198.18.0.2".parse().expect("ip"),
                "2001:db8::2".parse().expect("ip"),
            ],
        }
    }

    #[test]
    fn remote_pod_cidrs_need_ipsec_both_ways_and_local_pods_are_exempt() {
        let rules = fence_rules(&spec());
        assert_eq!(rules.len(), 6, "{rules:#?}");
        assert_eq!(
            rules[0],
            FenceRule {
                chain: FenceChain::Out,
                family: Family::V4,
                matches: vec![
                    Match::DstIn(net("10.244.0.0/16")),
                    Match::DstNotIn(net("10.244.1.0/24")),
                    Match::RouteWithoutIpsec
                ]
            }
        );
        assert_eq!(
            rules[2].matches,
            vec![
                Match::SrcIn(net("10.244.1.0/24")),
                Match::DstPeerNode,
                Match::RouteWithoutIpsec
            ]
        );
        assert_eq!(
            rules[5],
            FenceRule {
                chain: FenceChain::In,
                family: Family::V6,
                matches: vec![
                    Match::SrcIn(net("fd00:244::/48")),
                    Match::SrcNotIn(net("fd00:244:0:1::/64")),
                    Match::NotDecrypted
                ]
            }
        );
        assert!(rules
            .iter()
            .filter(|r| r.chain == FenceChain::In)
            .all(|r| r.matches.last() == Some(&Match::NotDecrypted)));
    }

    #[test]
    fn peer_node_sets_are_per_family_and_deduplicated() {
        let s = spec();
        assert_eq!(peer_set_families(&s), vec![Family::V4, Family::V6]);
        assert_eq!(
            peer_ips(&s, Family::V4),
            vec!["198.18.0.2".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(peer_ips(&s, Family::V6).len(), 1);
    }
}
