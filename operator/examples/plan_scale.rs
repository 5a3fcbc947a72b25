//! Benchmark: the operator's per-policy plan and the agent's status summary at cluster scale.
//! Writes bench/results/operator-scale.txt.
//!
//! `cargo run -p cipherlane-operator --example plan_scale [--release]`
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use cipherlane_k8s_api::{CipherlaneNodeStatus, RotationPolicy, RotationPolicySpec};
use cipherlane_operator::policy_controller::plan_policy;
use cipherlane_policy::{PeerState, PeerSummary, PolicySet, Timestamp};

fn main() {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut report = format!("# cipherlane operator scale benchmark ({profile} build)\n");
    let now = Timestamp::from_second(1_800_000_000).expect("valid time");
    for n in [100usize, 1000, 5000] {
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let mut node = Node::default();
                node.metadata.name = Some(format!("node-{i:05}"));
                node.metadata.labels = Some([("zone".to_string(), format!("z{}", i % 4))].into());
                node
            })
            .collect();
        let mut default = RotationPolicy::new(
            "default",
            RotationPolicySpec {
                max_concurrent_nodes: Some(50),
                ..Default::default()
            },
        );
        default.metadata.generation = Some(1);
        let mut zone = RotationPolicy::new(
            "zone-0",
            RotationPolicySpec {
                priority: 10,
                node_selector: Some(LabelSelector {
                    match_labels: Some([("zone".to_string(), "z0".to_string())].into()),
                    match_expressions: None,
                }),
                ..Default::default()
            },
        );
        zone.metadata.generation = Some(1);
        let policies = [default.clone(), zone.clone()];
        let set = PolicySet::from_policies(&policies);

        // Each node's agent summary (what it writes to its CipherlaneNode status).
        let t = Instant::now();
        let statuses: Vec<CipherlaneNodeStatus> = (0..n)
            .map(|i| {
                let mut s = PeerSummary::new();
                let me = nodes[i].metadata.labels.clone().unwrap_or_default();
                for (j, peer) in nodes.iter().enumerate() {
                    if i != j {
                        let p = set.pair_policy_for_labels(
                            &me,
                            peer.metadata.labels.as_ref().expect("labels"),
                        );
                        s.add(
                            peer.metadata.name.as_deref().expect("name"),
                            p.map_or("", |p| p.name.as_str()),
                            PeerState::Established {
                                epoch: 1,
                                key_age: Duration::from_secs(60),
                            },
                        );
                    }
                }
                s.into_status(true, None, Some(1), None, now)
            })
            .take(if n > 1000 { 50 } else { n })
            .collect();
        let per_node_summary = t.elapsed() / statuses.len() as u32;
        let bytes = serde_json::to_vec(&statuses[0]).expect("json").len();

        let by_name: BTreeMap<String, Option<&CipherlaneNodeStatus>> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                (
                    node.metadata.name.clone().expect("name"),
                    statuses.get(i % statuses.len()),
                )
            })
            .collect();
        let rounds = 20;
        let t = Instant::now();
        let mut pairs = 0;
        for _ in 0..rounds {
            let plan = plan_policy(
                &default,
                policies.iter(),
                nodes.iter(),
                &by_name,
                now,
                false,
            )
            .expect("plans");
            pairs = plan.status.pairs_governed.unwrap_or(0);
        }
        let per_plan = t.elapsed() / rounds;
        let _ = writeln!(
            report,
            "nodes={n:5}  plan_policy={:>9.3} ms  agent summary of {} peers={:>8.3} ms  CipherlaneNode status={bytes} bytes  default governs {pairs} pairs",
            per_plan.as_secs_f64() * 1e3,
            n - 1,
            per_node_summary.as_secs_f64() * 1e3,
        );
    }
    print!("{report}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bench/results/operator-scale.txt");
    std::fs::write(&path, report).expect("bench result written");
    eprintln!("wrote {}", path.display());
}
