//! The agent's view of the cluster, as a synchronous index fed by watch events and tested
//! without a cluster: Nodes, CipherlaneNodes and RotationPolicies in, a [`PeerView`] out.
//!
//! A peer is a node that has both a `Node` and a published `CipherlaneNode`, is not the local
//! node, and is not revoked by any policy. Its tunnel address and pod CIDRs come from the
//! `Node` (InternalIP, `spec.podCIDRs`, written by kubelet and node IPAM), not from what its
//! agent published, so that an agent cannot claim another node's pods; the published values are
//! used only where the Node has none. If the local node itself is revoked, the view has no
//! peers at all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use cipherlane_core::{Epoch, NodeName, PeerSpec, Suite};
use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::{CipherlaneNode, CipherlaneNodeSpec, RotationPolicy};
use cipherlane_policy::{parse_duration, PolicySet, Stagger, Timestamp};
use ipnet::IpNet;

/// The parameters that govern one pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairPolicy {
    /// The effective policy's name; `None` is the built-in default.
    pub policy: Option<String>,
    pub suite: Suite,
    pub epoch: Epoch,
    pub rotation_interval: Duration,
    pub grace_period: Duration,
    pub max_bytes: Option<u64>,
    pub max_packets: Option<u64>,
    /// When the current epoch began.
    pub epoch_started: Option<Timestamp>,
    /// How long after `epoch_started` the local node starts re-keying (its stagger slot).
    pub stagger_delay: Duration,
}

impl PairPolicy {
    /// When the local node should start re-keying this pair for the current epoch: the epoch's
    /// start plus the local node's stagger slot (`None` for the built-in default, which has no
    /// operator-driven epochs).
    pub fn rekey_at(&self) -> Option<Timestamp> {
        self.epoch_started
            .map(|t| cipherlane_policy::schedule::add(t, self.stagger_delay))
    }

    fn builtin() -> PairPolicy {
        PairPolicy {
            policy: None,
            suite: Suite::AesGcm128,
            epoch: Epoch(0),
            rotation_interval: Duration::from_secs(86_400),
            grace_period: Duration::from_secs(30),
            max_bytes: None,
            max_packets: None,
            epoch_started: None,
            stagger_delay: Duration::ZERO,
        }
    }
}

/// One peer and the policy of the pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub spec: PeerSpec,
    /// Base64 Ed25519 public key, as published.
    pub identity_key: String,
    /// Key-exchange endpoint, `host:port`.
    pub endpoint: String,
    pub suites: Vec<Suite>,
    pub pair: PairPolicy,
}

/// What the agent should be keyed with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Peers in name order.
    pub peers: Vec<Peer>,
    /// Every node revoked by some policy.
    pub revoked: BTreeSet<String>,
    /// The local node is revoked: it must hold no SA with anyone.
    pub local_revoked: bool,
    /// False only for the channel's initial value, before every list has been read.
    pub synced: bool,
}

#[derive(Clone, Debug, Default)]
struct NodeInfo {
    labels: BTreeMap<String, String>,
    internal_ip: Option<IpAddr>,
    pod_cidrs: Vec<IpNet>,
}

/// Nodes, published specs and policies, by name.
#[derive(Clone, Debug)]
pub struct ClusterIndex {
    local: String,
    nodes: BTreeMap<String, NodeInfo>,
    published: BTreeMap<String, CipherlaneNodeSpec>,
    policies: BTreeMap<String, RotationPolicy>,
}

fn node_info(node: &Node) -> NodeInfo {
    let internal_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse().ok());
    let spec = node.spec.as_ref();
    let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if cidrs.is_empty() {
        cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
    }
    NodeInfo {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        internal_ip,
        pod_cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
    }
}

impl ClusterIndex {
    pub fn new(local: &str) -> ClusterIndex {
        ClusterIndex {
            local: local.to_string(),
            nodes: BTreeMap::new(),
            published: BTreeMap::new(),
            policies: BTreeMap::new(),
        }
    }

    pub fn apply_node(&mut self, node: &Node) {
        if let Some(name) = &node.metadata.name {
            self.nodes.insert(name.clone(), node_info(node));
        }
    }
    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }
    /// Replaces every Node (after a watch restart).
    pub fn reset_nodes<'a>(&mut self, nodes: impl IntoIterator<Item = &'a Node>) {
        self.nodes.clear();
        nodes.into_iter().for_each(|n| self.apply_node(n));
    }

    pub fn apply_cipherlane_node(&mut self, cn: &CipherlaneNode) {
        if let Some(name) = &cn.metadata.name {
            self.published.insert(name.clone(), cn.spec.clone());
        }
    }
    pub fn delete_cipherlane_node(&mut self, name: &str) {
        self.published.remove(name);
    }
    pub fn reset_cipherlane_nodes<'a>(
        &mut self,
        all: impl IntoIterator<Item = &'a CipherlaneNode>,
    ) {
        self.published.clear();
        all.into_iter().for_each(|n| self.apply_cipherlane_node(n));
    }

    pub fn apply_policy(&mut self, p: &RotationPolicy) {
        if let Some(name) = &p.metadata.name {
            self.policies.insert(name.clone(), p.clone());
        }
    }
    pub fn delete_policy(&mut self, name: &str) {
        self.policies.remove(name);
    }
    pub fn reset_policies<'a>(&mut self, all: impl IntoIterator<Item = &'a RotationPolicy>) {
        self.policies.clear();
        all.into_iter().for_each(|p| self.apply_policy(p));
    }

    /// The peer set and each pair's policy.
    pub fn peer_view(&self) -> PeerView {
        let revoked: BTreeSet<String> = self
            .policies
            .values()
            .flat_map(|p| p.spec.revoked_nodes.iter().cloned())
            .collect();
        let local_revoked = revoked.contains(&self.local);
        if local_revoked {
            return PeerView {
                peers: Vec::new(),
                revoked,
                local_revoked,
                synced: true,
            };
        }
        let set = PolicySet::from_policies(self.policies.values());
        let empty = BTreeMap::new();
        let local_labels = self.nodes.get(&self.local).map_or(&empty, |n| &n.labels);
        let local_rank = set.node_rank(local_labels);
        // The local node's position among the (non-revoked) nodes, for its stagger slot.
        let members: Vec<&String> = self
            .nodes
            .keys()
            .filter(|n| !revoked.contains(*n))
            .collect();
        let position = members
            .iter()
            .position(|n| **n == self.local)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let nodes_total = u32::try_from(members.len()).unwrap_or(u32::MAX);

        let mut peers = Vec::new();
        for (name, info) in &self.nodes {
            if *name == self.local || revoked.contains(name) {
                continue;
            }
            let Some(published) = self.published.get(name) else {
                continue;
            };
            let Ok(node_name) = NodeName::new(name.clone()) else {
                continue;
            };
            let Some(node_ip) = info.internal_ip.or_else(|| published.node_ip.parse().ok()) else {
                continue;
            };
            let pod_cidrs = if info.pod_cidrs.is_empty() {
                published
                    .pod_cidrs
                    .iter()
                    .filter_map(|c| c.parse().ok())
                    .collect()
            } else {
                info.pod_cidrs.clone()
            };
            let rank = set.node_rank(&info.labels);
            let pair = match set
                .pair_policy(local_rank, rank)
                .and_then(|p| self.policies.get(&p.name))
            {
                Some(policy) => pair_policy(policy, nodes_total, position),
                None => PairPolicy::builtin(),
            };
            peers.push(Peer {
                spec: PeerSpec {
                    name: node_name,
                    node_ip,
                    pod_cidrs,
                },
                identity_key: published.identity_key.clone(),
                endpoint: published.endpoint.clone(),
                suites: published
                    .suites
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                pair,
            });
        }
        PeerView {
            peers,
            revoked,
            local_revoked,
            synced: true,
        }
    }
}

fn pair_policy(p: &RotationPolicy, nodes_total: u32, position: u32) -> PairPolicy {
    let builtin = PairPolicy::builtin();
    let interval = parse_duration(&p.spec.rotation_interval).unwrap_or(builtin.rotation_interval);
    let grace = parse_duration(&p.spec.grace_period).unwrap_or(builtin.grace_period);
    let status = p.status.clone().unwrap_or_default();
    let epoch = status.epoch.unwrap_or(0);
    let stagger = Stagger::plan(
        nodes_total,
        p.spec
            .max_concurrent_nodes
            .and_then(|c| u32::try_from(c).ok()),
        grace,
        interval,
    );
    PairPolicy {
        policy: p.metadata.name.clone(),
        suite: p.spec.suite.parse().unwrap_or(builtin.suite),
        epoch: Epoch(epoch),
        rotation_interval: interval,
        grace_period: grace,
        max_bytes: p.spec.max_bytes.and_then(|b| u64::try_from(b).ok()),
        max_packets: p.spec.max_packets.and_then(|b| u64::try_from(b).ok()),
        epoch_started: status.last_rotation.and_then(|t| t.parse().ok()),
        stagger_delay: stagger.delay(position, epoch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipherlane_k8s_api::k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use cipherlane_k8s_api::{RotationPolicySpec, RotationPolicyStatus};

    fn node(name: &str, ip: &str, cidr: &str, zone: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some([("zone".to_string(), zone.to_string())].into());
        n.spec = Some(NodeSpec {
            pod_cidrs: Some(vec![cidr.into()]),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            ..Default::default()
        });
        n
    }

    fn published(name: &str) -> CipherlaneNode {
        CipherlaneNode::new(
            name,
            CipherlaneNodeSpec {
                identity_key: format!("{}=", "A".repeat(43)),
                node_ip: "203.0.113.66".into(),
                endpoint: format!("{name}:7443"),
                pod_cidrs: vec!["10.99.0.0/24".into()],
                suites: vec!["aes-gcm-128".into(), "bogus".into()],
            },
        )
    }

    fn policy(name: &str, priority: i32, zone: Option<&str>, epoch: u64) -> RotationPolicy {
        let mut p = RotationPolicy::new(
            name,
            RotationPolicySpec {
                priority,
                suite: "chacha20-poly1305".into(),
                node_selector: zone.map(|z| LabelSelector {
                    match_labels: Some([("zone".to_string(), z.to_string())].into()),
                    match_expressions: None,
                }),
                ..Default::default()
            },
        );
        p.status = Some(RotationPolicyStatus {
            epoch: Some(epoch),
            ..Default::default()
        });
        p
    }

    fn three_nodes() -> ClusterIndex {
        let mut ix = ClusterIndex::new("n1");
        for (i, zone) in [(1, "a"), (2, "a"), (3, "b")] {
            ix.apply_node(&node(
                &format!("n{i}"),
                &format!("198.18.0.{i}"),
                &format!("10.244.{i}.0/24"),
                zone,
            ));
            ix.apply_cipherlane_node(&published(&format!("n{i}")));
        }
        ix
    }

    #[test]
    fn peers_are_the_other_published_nodes_with_addresses_from_their_node_objects() {
        let v = three_nodes().peer_view();
        let names: Vec<&str> = v.peers.iter().map(|p| p.spec.name.as_str()).collect();
        assert_eq!(names, ["n2", "n3"]);
        assert_eq!(v.peers[0].spec.node_ip.to_string(), "198.18.0.2");
        assert_eq!(v.peers[0].spec.pod_cidrs[0].to_string(), "10.244.2.0/24");
        assert_eq!(v.peers[0].suites, [Suite::AesGcm128]);
    }

    #[test]
    fn a_node_without_a_published_spec_or_without_a_node_object_is_not_a_peer() {
        let mut ix = three_nodes();
        ix.delete_cipherlane_node("n2");
        ix.delete_node("n3");
        assert!(ix.peer_view().peers.is_empty());
    }

    #[test]
    fn each_pair_gets_its_effective_policy_and_epoch() {
        let mut ix = three_nodes();
        ix.apply_policy(&policy("default", 0, None, 4));
        ix.apply_policy(&policy("zone-b", 10, Some("b"), 9));
        let v = ix.peer_view();
        assert_eq!(v.peers[0].pair.policy.as_deref(), Some("default"));
        assert_eq!(v.peers[0].pair.epoch, Epoch(4));
        assert_eq!(v.peers[1].pair.policy.as_deref(), Some("zone-b"));
        assert_eq!(v.peers[1].pair.epoch, Epoch(9));
        assert_eq!(v.peers[1].pair.suite, Suite::Chacha20Poly1305);
    }

    #[test]
    fn a_revoked_peer_disappears_from_the_peer_set() {
        let mut ix = three_nodes();
        let mut p = policy("default", 0, None, 1);
        p.spec.revoked_nodes = vec!["n3".into()];
        ix.apply_policy(&p);
        let v = ix.peer_view();
        assert_eq!(v.peers.len(), 1);
        assert!(v.revoked.contains("n3"));
        assert!(!v.local_revoked);
    }

    #[test]
    fn a_revoked_local_node_keeps_no_peer_at_all() {
        let mut ix = three_nodes();
        let mut p = policy("default", 0, None, 1);
        p.spec.revoked_nodes = vec!["n1".into()];
        ix.apply_policy(&p);
        let v = ix.peer_view();
        assert!(v.local_revoked);
        assert!(v.peers.is_empty());
    }

    #[test]
    fn without_any_policy_pairs_use_the_built_in_default() {
        let v = three_nodes().peer_view();
        assert_eq!(v.peers[0].pair, PairPolicy::builtin());
    }
}
