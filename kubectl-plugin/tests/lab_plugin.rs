//! `kubectl-cipherlane` against the lab's real API server: the status output for a 3-node and a
//! 50-node cluster (objects written by the agents' own code) matches the golden files, `revoke`
//! makes a peer's watch drop the node within seconds, and `rotate` records a request.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use cipherlane_agent_k8s::watch_cluster;
use cipherlane_k8s_api::kube::Api;
use cipherlane_k8s_api::RotationPolicy;
use common::lab;

/// Both tests use the fixture's node names; they take turns.
static FIXTURE_NODES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn plugin(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-cipherlane"))
        .args(args)
        .output()
        .expect("plugin runs");
    assert!(
        out.status.success(),
        "kubectl-cipherlane {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn status_output_for_three_and_fifty_node_clusters_matches_the_golden_files() {
    let _turn = FIXTURE_NODES.lock().await;
    let client = lab::lab_client().await;
    lab::install_crds(&client).await;
    for (fixture, golden, policies) in [
        (common::three(), "status-3.txt", vec!["default", "zone-b"]),
        (common::fifty(), "status-50.txt", vec!["default"]),
    ] {
        lab::remove(&client, &policies).await;
        lab::create(&client, &fixture).await;
        let out = plugin(&["status", "-l", "cipherlane.io/fixture=plugin"]);
        common::assert_golden(golden, &out);
        lab::remove(&client, &policies).await;
    }
}

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn revoke_makes_peers_drop_the_node_within_seconds_and_rotate_records_a_request() {
    let _turn = FIXTURE_NODES.lock().await;
    let client = lab::lab_client().await;
    lab::install_crds(&client).await;
    let mut f = common::three();
    // Rename the policies so this test does not race the golden test's.
    for p in &mut f.policies {
        p.metadata.name = p.metadata.name.as_ref().map(|n| format!("revoke-{n}"));
    }
    let names = ["revoke-default", "revoke-zone-b"];
    lab::remove(&client, &names).await;
    lab::create(&client, &f).await;

    let (mut view, driver) = watch_cluster(client.clone(), "node-1");
    let task = tokio::spawn(driver);
    lab::wait_for(
        Duration::from_secs(10),
        "node-1 sees node-2 and node-3",
        || {
            let v = view.borrow().clone();
            async move { (v.synced && v.peers.len() == 2).then_some(()) }
        },
    )
    .await;

    let t = Instant::now();
    let out = plugin(&["revoke", "node-3"]);
    assert!(
        out.contains("revoked in rotationpolicy/revoke-zone-b"),
        "{out}"
    );
    loop {
        {
            let v = view.borrow_and_update();
            if v.peers.iter().all(|p| p.spec.name.as_str() != "node-3") {
                assert!(v.revoked.contains("node-3"));
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "node-1 still peers with revoked node-3 after 5s"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), view.changed()).await;
    }
    let dropped_after = t.elapsed();
    eprintln!("revocation reached the watching agent after {dropped_after:?} (including the plugin process)");
    assert!(dropped_after < Duration::from_secs(5), "{dropped_after:?}");

    let out = plugin(&["rotate", "revoke-default"]);
    assert!(
        out.contains("rotationpolicy/revoke-default: rotation requested"),
        "{out}"
    );
    let p = Api::<RotationPolicy>::all(client.clone())
        .get("revoke-default")
        .await
        .expect("policy");
    assert!(p.spec.rotation_request.is_some());

    task.abort();
    lab::remove(&client, &names).await;
}
