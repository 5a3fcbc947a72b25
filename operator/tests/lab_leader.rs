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

fn start(identity: &str, http: &str) -> Child {
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
            "--http-addr",
            http,
        ])
        .env("RUST_LOG", "info,kube=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the operator binary starts")
}

/// GET `path` from a replica's HTTP endpoint: (status code, body).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split("\r\n\r\n").nth(1)?.to_string()))
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

    let (ha, hb) = ("127.0.0.1:18391", "127.0.0.1:18392");
    let mut a = start("replica-a", ha);
    common::wait_for(Duration::from_secs(20), "replica-a leads", || async {
        holder(&client).await.filter(|h| h == "replica-a")
    })
    .await;
    let mut b = start("replica-b", hb);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        holder(&client).await.as_deref(),
        Some("replica-a"),
        "a follower must not take a live lease"
    );
    let (code, metrics) = get(ha, "/metrics").expect("the leader serves /metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("cipherlane_operator_leader 1"),
        "{metrics}"
    );
    assert_eq!(
        get(hb, "/readyz").map(|r| r.0),
        Some(200),
        "a follower is ready"
    );
    assert!(get(hb, "/metrics")
        .expect("follower metrics")
        .1
        .contains("cipherlane_operator_leader 0"));

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
    let mut c = start("replica-c", "127.0.0.1:18393");
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
