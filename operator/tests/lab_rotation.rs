//! The operator against the lab's real API server: epochs advance on a short schedule and on
//! demand (a single `kubectl annotate` or `kubectl patch`), and status converges as agents
//! report through the agent's own status writer (`cipherlane-agent-k8s`).
mod common;

use std::time::{Duration, Instant};

use cipherlane_agent_k8s::{publish, PeerState, PeerSummary, Report, StatusWriter};
use cipherlane_k8s_api::k8s_openapi::api::events::v1::Event;
use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use cipherlane_k8s_api::kube::api::PostParams;
use cipherlane_k8s_api::kube::{Api, Client};
use cipherlane_k8s_api::{RotationPolicy, RotationPolicySpec};

async fn epoch(client: &Client, name: &str) -> Option<u64> {
    let api: Api<RotationPolicy> = Api::all(client.clone());
    api.get(name).await.ok()?.status?.epoch
}

async fn wait_epoch(client: &Client, name: &str, at_least: u64, timeout: Duration) -> u64 {
    common::wait_for(
        timeout,
        &format!("{name} at epoch >= {at_least}"),
        || async move { epoch(client, name).await.filter(|e| *e >= at_least) },
    )
    .await
}

fn selecting(label: &str) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some([(label.to_string(), "yes".to_string())].into()),
        match_expressions: None,
    })
}

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn epochs_advance_on_a_short_schedule_and_on_a_single_kubectl_annotate_or_patch() {
    let client = common::lab_client().await;
    common::install_crds(&client).await;
    let name = "op-test-schedule";
    common::cleanup(&client, "op-test-schedule=yes", &[], &[name]).await;
    let (op, stop) = common::spawn_operator(&client, "op-test-schedule");
    let api: Api<RotationPolicy> = Api::all(client.clone());
    let mut p = RotationPolicy::new(
        name,
        RotationPolicySpec {
            rotation_interval: "10s".into(),
            grace_period: "2s".into(),
            node_selector: selecting("op-test-schedule"),
            ..Default::default()
        },
    );
    p.metadata.labels = Some([("op-test-schedule".to_string(), "yes".to_string())].into());
    api.create(&PostParams::default(), &p)
        .await
        .expect("policy created");

    let first = wait_epoch(&client, name, 1, Duration::from_secs(15)).await;
    let started = Instant::now();
    let second = wait_epoch(&client, name, first + 1, Duration::from_secs(25)).await;
    assert_eq!(
        second,
        first + 1,
        "one interval advances the epoch by exactly one"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the epoch advanced long before the 10s interval"
    );

    common::kubectl(&[
        "annotate",
        "rotationpolicy",
        name,
        "cipherlane.io/rotate=first",
        "--overwrite",
    ]);
    let t = Instant::now();
    let third = wait_epoch(&client, name, second + 1, Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(5));

    common::kubectl(&[
        "patch",
        "rp",
        name,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"rotationRequest":"please"}}"#,
    ]);
    let fourth = wait_epoch(&client, name, third + 1, Duration::from_secs(5)).await;
    assert_eq!(fourth, third + 1);
    // The request is remembered: no further rotation until the interval or a new request.
    let status = api.get(name).await.expect("policy").status.expect("status");
    assert_eq!(status.observed_rotation_request.as_deref(), Some("please"));
    assert_eq!(status.observed_rotate_annotation.as_deref(), Some("first"));

    // Each rotation left an Event on the policy (cluster-scoped objects' events live in default).
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    // This policy object's events only (a policy of the same name from an earlier run has another uid).
    let uid = api.get(name).await.expect("policy").metadata.uid;
    let reasons: Vec<String> = common::wait_for(Duration::from_secs(10), "rotation events", || {
        let events = events.clone();
        let uid = uid.clone();
        async move {
            let r: Vec<String> = events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == uid.as_deref())
                .filter_map(|e| e.reason)
                .collect();
            (r.iter().any(|x| x == "RotationRequested")).then_some(r)
        }
    })
    .await;
    for reason in [
        "InitialEpoch",
        "IntervalElapsed",
        "RotationAnnotated",
        "RotationRequested",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event among {reasons:?}"
        );
    }

    let _ = stop.send(());
    op.await
        .expect("operator task")
        .expect("operator stops cleanly");
    common::cleanup(&client, "op-test-schedule=yes", &[], &[name]).await;
}

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn status_converges_as_agents_report_through_the_agent_status_writer() {
    let client = common::lab_client().await;
    common::install_crds(&client).await;
    let name = "op-test-converge";
    let nodes = ["conv-1", "conv-2", "conv-3"];
    common::cleanup(&client, "op-test-converge=yes", &nodes, &[name]).await;
    for (i, n) in nodes.iter().enumerate() {
        common::create_node(&client, n, &[("op-test-converge", "yes")], 40 + i as u8).await;
        publish(client.clone(), n, &common::spec(40 + i as u8))
            .await
            .expect("agent publishes its spec");
    }
    let (op, stop) = common::spawn_operator(&client, "op-test-converge");
    let api: Api<RotationPolicy> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &RotationPolicy::new(
            name,
            RotationPolicySpec {
                rotation_interval: "1h".into(),
                node_selector: selecting("op-test-converge"),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("policy created");
    let e = wait_epoch(&client, name, 1, Duration::from_secs(15)).await;
    let summary = |client: Client| async move {
        let p = Api::<RotationPolicy>::all(client).get(name).await.ok()?;
        p.status?.converged_summary
    };
    common::wait_for(Duration::from_secs(10), "0/3 converged", || async {
        summary(client.clone()).await.filter(|s| s == "0/3")
    })
    .await;

    // Each agent reports its two peers at the epoch, with the agent's own writer.
    let mut writers: Vec<StatusWriter> = nodes
        .iter()
        .map(|n| {
            StatusWriter::new(
                client.clone(),
                n,
                Duration::from_secs(1),
                Duration::from_secs(60),
            )
        })
        .collect();
    for (i, w) in writers.iter_mut().enumerate() {
        let mut s = PeerSummary::new();
        for (j, peer) in nodes.iter().enumerate() {
            if i != j {
                s.add(
                    peer,
                    name,
                    PeerState::Established {
                        epoch: e,
                        key_age: Duration::from_secs(5),
                    },
                );
            }
        }
        assert_eq!(
            w.report(s, true, None).await.expect("status written"),
            Report::Written
        );
        let expect = format!("{}/3", i + 1);
        common::wait_for(
            Duration::from_secs(10),
            &format!("{expect} converged"),
            || async { summary(client.clone()).await.filter(|s| *s == expect) },
        )
        .await;
    }
    let p = api.get(name).await.expect("policy");
    let st = p.status.expect("status");
    let ready = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    assert_eq!(ready.observed_generation, p.metadata.generation);
    assert_eq!(st.pairs_governed, Some(3));
    let rotating = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Rotating")
        .expect("Rotating condition");
    assert_eq!(rotating.status, "False");

    // A rotation on demand makes the policy not converged again until agents catch up.
    common::kubectl(&[
        "annotate",
        "rp",
        name,
        "cipherlane.io/rotate=again",
        "--overwrite",
    ]);
    wait_epoch(&client, name, e + 1, Duration::from_secs(5)).await;
    common::wait_for(
        Duration::from_secs(10),
        "0/3 after the new epoch",
        || async { summary(client.clone()).await.filter(|s| s == "0/3") },
    )
    .await;

    let _ = stop.send(());
    op.await
        .expect("operator task")
        .expect("operator stops cleanly");
    common::cleanup(&client, "op-test-converge=yes", &nodes, &[name]).await;
}
