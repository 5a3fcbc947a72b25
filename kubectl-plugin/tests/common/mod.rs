//! Cluster fixtures shared by the golden tests (rendered in memory) and the lab tests (created
//! in the real API server): the same nodes, policies and agent-reported peer states.
#![allow(dead_code)]

pub mod lab;

use std::collections::BTreeMap;
use std::time::Duration;

use cipherlane_agent_k8s::{PeerState, PeerSummary};
use cipherlane_k8s_api::k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, Time,
};
use cipherlane_k8s_api::{
    CipherlaneNode, CipherlaneNodeSpec, RotationPolicy, RotationPolicySpec, RotationPolicyStatus,
};
use cipherlane_kubectl_plugin::render::Snapshot;
use cipherlane_policy::{PolicySet, Timestamp};

pub const FIXED_NOW: i64 = 1_800_000_000;

/// Per node: agent ready, and its peers' states (peer, pair policy, state).
pub type Reports = BTreeMap<String, (bool, Vec<(String, String, PeerState)>)>;

pub struct Fixture {
    pub nodes: Vec<Node>,
    pub policies: Vec<RotationPolicy>,
    /// Nodes whose agent published a CipherlaneNode.
    pub published: Vec<String>,
    /// Per published node: agent ready, and its peers' states (peer, pair policy, state).
    pub reports: Reports,
}

pub fn node(name: &str, i: usize, labels: &[(&str, &str)]) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("cipherlane.io/fixture".into(), "plugin".into());
    n.metadata.labels = Some(l);
    n.spec = Some(NodeSpec {
        pod_cidrs: Some(vec![format!("10.248.{i}.0/24")]),
        pod_cidr: Some(format!("10.248.{i}.0/24")),
        ..Default::default()
    });
    n.status = Some(NodeStatus {
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".into(),
            address: format!("198.18.{}.{}", 20 + i / 200, 1 + i % 200),
        }]),
        ..Default::default()
    });
    n
}

pub fn spec_for(n: &Node) -> CipherlaneNodeSpec {
    let ip = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| a[0].address.clone())
        .unwrap_or_default();
    CipherlaneNodeSpec {
        identity_key: format!("{}=", "B".repeat(43)),
        node_ip: ip.clone(),
        endpoint: format!("{ip}:7443"),
        pod_cidrs: n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default(),
        suites: vec!["aes-gcm-128".into()],
    }
}

fn ready_condition(status: bool) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: if status { "True" } else { "False" }.into(),
        reason: "Fixture".into(),
        message: "fixture".into(),
        observed_generation: Some(1),
        last_transition_time: Time(Timestamp::from_second(FIXED_NOW).expect("valid")),
    }
}

pub fn policy(
    name: &str,
    priority: i32,
    zone: Option<&str>,
    epoch: u64,
    converged: &str,
    ready: bool,
    revoked: &[&str],
) -> RotationPolicy {
    let mut p = RotationPolicy::new(
        name,
        RotationPolicySpec {
            priority,
            rotation_interval: "1h".into(),
            node_selector: zone.map(|z| LabelSelector {
                match_labels: Some([("zone".to_string(), z.to_string())].into()),
                match_expressions: None,
            }),
            revoked_nodes: revoked.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    p.status = Some(RotationPolicyStatus {
        epoch: Some(epoch),
        last_rotation: Some("2027-01-15T08:00:00Z".into()),
        next_rotation: Some("2027-01-15T09:00:00Z".into()),
        converged_summary: Some(converged.into()),
        conditions: vec![ready_condition(ready)],
        ..Default::default()
    });
    p
}

fn est(epoch: u64, age: u64) -> PeerState {
    PeerState::Established {
        epoch,
        key_age: Duration::from_secs(age),
    }
}

/// Fills `reports` for every published node: each peer established at its pair policy's epoch
/// with `base_age`, then `tweak` overrides single peers.
fn reports(
    nodes: &[Node],
    policies: &[RotationPolicy],
    published: &[String],
    ready: impl Fn(&str) -> bool,
    tweak: impl Fn(&str, &str, u64) -> Option<PeerState>,
) -> Reports {
    let set = PolicySet::from_policies(policies);
    let revoked: Vec<&String> = policies
        .iter()
        .flat_map(|p| p.spec.revoked_nodes.iter())
        .collect();
    let labels = |n: &str| {
        nodes
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(n))
            .and_then(|x| x.metadata.labels.clone())
            .unwrap_or_default()
    };
    let epoch_of = |p: &str| {
        policies
            .iter()
            .find(|x| x.metadata.name.as_deref() == Some(p))
            .and_then(|x| x.status.as_ref()?.epoch)
            .unwrap_or(0)
    };
    let mut out = BTreeMap::new();
    for me in published {
        if revoked.contains(&me) {
            continue;
        }
        let mut peers = Vec::new();
        for peer in published {
            if peer == me || revoked.contains(&peer) {
                continue;
            }
            let policy = set
                .pair_policy_for_labels(&labels(me), &labels(peer))
                .map_or(String::new(), |p| p.name.clone());
            let epoch = epoch_of(&policy);
            let state = tweak(me, peer, epoch).unwrap_or(est(epoch, 600));
            peers.push((peer.clone(), policy, state));
        }
        out.insert(me.clone(), (ready(me), peers));
    }
    out
}

pub fn three() -> Fixture {
    let nodes = vec![
        node("node-1", 1, &[("zone", "a")]),
        node("node-2", 2, &[("zone", "a")]),
        node("node-3", 3, &[("zone", "b")]),
    ];
    let policies = vec![
        policy("default", 0, None, 5, "1/2", false, &[]),
        policy("zone-b", 10, Some("b"), 2, "2/3", false, &[]),
    ];
    let published: Vec<String> = ["node-1", "node-2", "node-3"].map(String::from).to_vec();
    let reports = reports(
        &nodes,
        &policies,
        &published,
        |_| true,
        |me, peer, epoch| match (me, peer) {
            ("node-1", "node-2") => Some(est(epoch, 300)),
            ("node-1", "node-3") => Some(est(epoch, 100)),
            ("node-2", "node-1") => Some(est(4, 4000)),
            ("node-2", "node-3") => Some(est(epoch, 90)),
            ("node-3", "node-2") => Some(PeerState::Failing),
            ("node-3", "node-1") => Some(est(epoch, 100)),
            _ => None,
        },
    );
    Fixture {
        nodes,
        policies,
        published,
        reports,
    }
}

pub fn fifty() -> Fixture {
    let nodes: Vec<Node> = (1..=50)
        .map(|i| {
            node(
                &format!("node-{i:02}"),
                i,
                &[("zone", if i <= 25 { "a" } else { "b" })],
            )
        })
        .collect();
    let policies = vec![policy("default", 0, None, 7, "44/48", false, &["node-50"])];
    let published: Vec<String> = (1..=50)
        .filter(|i| *i != 49)
        .map(|i| format!("node-{i:02}"))
        .collect();
    let reports = reports(
        &nodes,
        &policies,
        &published,
        |n| n != "node-30",
        |me, peer, epoch| match (me, peer) {
            ("node-13", "node-14" | "node-15" | "node-16") => Some(PeerState::Failing),
            ("node-07", "node-08") | ("node-08", "node-07") => Some(est(epoch - 1, 90_000)),
            ("node-20", "node-21") => Some(PeerState::Pending),
            ("node-02", _) => Some(est(epoch, 7_300)),
            _ => None,
        },
    );
    Fixture {
        nodes,
        policies,
        published,
        reports,
    }
}

/// The fixture as the API would return it, statuses folded exactly as the agent's writer does.
pub fn snapshot(f: &Fixture) -> Snapshot {
    let now = Timestamp::from_second(FIXED_NOW).expect("valid");
    let cipherlane_nodes = f
        .published
        .iter()
        .map(|name| {
            let n = f
                .nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(name))
                .expect("node exists");
            let mut cn = CipherlaneNode::new(name, spec_for(n));
            if let Some((ready, peers)) = f.reports.get(name) {
                let mut s = PeerSummary::new();
                for (peer, policy, state) in peers {
                    s.add(peer, policy, *state);
                }
                cn.status = Some(s.into_status(*ready, None, None, None, now));
            }
            cn
        })
        .collect();
    Snapshot {
        nodes: f.nodes.clone(),
        cipherlane_nodes,
        policies: f.policies.clone(),
    }
}

/// Compares with `tests/golden/NAME`, or rewrites it when `UPDATE_GOLDEN=1`.
pub fn assert_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, actual).expect("golden file written");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} missing ({e}); run with UPDATE_GOLDEN=1 once and review it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "output differs from {}:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}
