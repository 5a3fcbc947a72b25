//! Leader election with real operator processes: one leads, the other waits; when the leader
//! dies the follower takes over within the lease duration; a leader stopped with SIGTERM
//! releases the Lease so that the next one takes over at once.
mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cipherlane_k8s_api::k8s_openapi::api::coordination::v1::Lease;
use cipherlane_k8s_api::kube::api::DeleteParams;
use cipherlane_k8s_api::kube::{Api, Client};

const LEASE: &str = "op-test-leader";

fn start(identity: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cipherlane-operator"))
        .args([
            "--identity",
            identity,
            "--lease-namespace",
            "default",
            "--lease-name",
            LEASE,
            "--lease-duration-seconds",
            "6",
        ])
        .env("RUST_LOG", "info,kube=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the operator binary starts")
}

async fn holder(client: &Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "default");
    api.get_opt(LEASE).await.ok()??.spec?.holder_identity
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn leadership_hands_over_when_the_leader_dies_and_at_once_when_it_stops_gracefully() {
    let client = common::lab_client().await;
    common::install_crds(&client).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let _ = leases.delete(LEASE, &DeleteParams::default()).await;

    let mut a = start("replica-a");
    common::wait_for(Duration::from_secs(20), "replica-a leads", || async {
        holder(&client).await.filter(|h| h == "replica-a")
    })
    .await;
    let mut b = start("replica-b");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        holder(&client).await.as_deref(),
        Some("replica-a"),
        "a follower must not take a live lease"
    );

    // The leader dies without releasing: the follower takes over once the lease expires.
    signal(&a, "-KILL");
    let _ = a.wait();
    let t = Instant::now();
    common::wait_for(Duration::from_secs(15), "replica-b leads", || async {
        holder(&client).await.filter(|h| h == "replica-b")
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "takeover took {:?}",
        t.elapsed()
    );

    // A graceful stop releases the lease: a new replica leads well before it would expire.
    let mut c = start("replica-c");
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&b, "-TERM");
    let status = b.wait().expect("b exits");
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    let t = Instant::now();
    common::wait_for(Duration::from_secs(10), "replica-c leads", || async {
        holder(&client).await.filter(|h| h == "replica-c")
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "handover after release took {:?}",
        t.elapsed()
    );
    signal(&c, "-TERM");
    let _ = c.wait();
    let _ = leases.delete(LEASE, &DeleteParams::default()).await;
}
