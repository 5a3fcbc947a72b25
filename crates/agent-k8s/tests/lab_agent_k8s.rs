//! The agent's Kubernetes adapter against the lab's real API server: it publishes its
//! CipherlaneNode owned by its Node, writes status at a bounded rate, and watches the cluster
//! into a peer set whose addresses come from the Node objects.

use std::time::{Duration, Instant};

use cipherlane_agent_k8s::{publish, watch_cluster, PeerState, PeerSummary, Report, StatusWriter};
use cipherlane_k8s_api::k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use cipherlane_k8s_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use cipherlane_k8s_api::kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use cipherlane_k8s_api::kube::{Api, Client, CustomResourceExt, ResourceExt};
use cipherlane_k8s_api::{CipherlaneNode, CipherlaneNodeSpec, RotationPolicy};

async fn lab_client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: start the lab (tests/lab/apiserver.sh start; source .cache/lab/env) or run tests/run-tier.sh integration"
    );
    let client = Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("cannot build a client from KUBECONFIG: {e}"));
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("the lab's API server does not answer: {e}"));
    client
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [CipherlaneNode::crd(), RotationPolicy::crd()] {
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("cipherlane-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD installed");
    }
    let start = Instant::now();
    while api
        .get("cipherlanenodes.cipherlane.io")
        .await
        .ok()
        .and_then(|c| c.status?.conditions)
        .is_none_or(|c| {
            !c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "CRD not established"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn node(client: &Client, name: &str, i: u8) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    let _ = Api::<CipherlaneNode>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.spec = Some(NodeSpec {
        pod_cidrs: Some(vec![format!("10.246.{i}.0/24")]),
        ..Default::default()
    });
    let start = Instant::now();
    let created = loop {
        match api.create(&PostParams::default(), &n).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "creating Node {name}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let st = serde_json::json!({"status": NodeStatus { addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: format!("198.18.40.{i}") }]), ..Default::default() }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&st))
        .await
        .expect("node status");
    created
}

fn spec(i: u8) -> CipherlaneNodeSpec {
    CipherlaneNodeSpec {
        identity_key: format!("{}=", "D".repeat(43)),
        // Deliberately not the Node's InternalIP: the Node's address must win.
        node_ip: format!("198.18.41.{i}"),
        endpoint: format!("198.18.40.{i}:7443"),
        pod_cidrs: vec![format!("10.246.{i}.0/24")],
        suites: vec!["aes-gcm-128".into()],
    }
}

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn an_agent_publishes_its_node_reports_status_at_a_bounded_rate_and_sees_its_peers() {
    let client = lab_client().await;
    install_crds(&client).await;
    let a = node(&client, "ak-a", 1).await;
    node(&client, "ak-b", 2).await;

    let cn = publish(client.clone(), "ak-a", &spec(1))
        .await
        .expect("published");
    let owner = cn
        .owner_references()
        .first()
        .cloned()
        .expect("owned by its Node");
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "ak-a"));
    assert_eq!(Some(owner.uid), a.metadata.uid);
    // Publishing again is idempotent.
    publish(client.clone(), "ak-a", &spec(1))
        .await
        .expect("republished");

    let (mut view, driver) = watch_cluster(client.clone(), "ak-a");
    let task = tokio::spawn(driver);
    publish(client.clone(), "ak-b", &spec(2))
        .await
        .expect("peer published");
    let start = Instant::now();
    loop {
        {
            let v = view.borrow_and_update();
            if let Some(p) = v.peers.iter().find(|p| p.spec.name.as_str() == "ak-b") {
                assert_eq!(
                    p.spec.node_ip.to_string(),
                    "198.18.40.2",
                    "the Node's InternalIP wins"
                );
                assert_eq!(p.spec.pod_cidrs[0].to_string(), "10.246.2.0/24");
                assert_eq!(p.endpoint, "198.18.40.2:7443");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ak-a never saw ak-b"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), view.changed()).await;
    }

    let mut w = StatusWriter::new(
        client.clone(),
        "ak-a",
        Duration::from_secs(30),
        Duration::from_secs(300),
    );
    w.observe_generation(cn.metadata.generation);
    let report = |epoch| {
        let mut s = PeerSummary::new();
        s.add(
            "ak-b",
            "",
            PeerState::Established {
                epoch,
                key_age: Duration::from_secs(3),
            },
        );
        s
    };
    assert_eq!(
        w.report(report(1), true, None).await.expect("written"),
        Report::Written
    );
    assert!(matches!(
        w.report(report(2), true, None).await.expect("throttled"),
        Report::Deferred { .. }
    ));
    let stored = Api::<CipherlaneNode>::all(client.clone())
        .get("ak-a")
        .await
        .expect("cn")
        .status
        .expect("status");
    assert_eq!(
        stored.epoch,
        Some(1),
        "the throttled second report must not have been written"
    );
    assert_eq!(stored.peers_summary.as_deref(), Some("1/1"));
    assert!(stored
        .conditions
        .iter()
        .all(|c| c.observed_generation == cn.metadata.generation));

    task.abort();
    for n in ["ak-a", "ak-b"] {
        let _ = Api::<Node>::all(client.clone())
            .delete(n, &DeleteParams::default())
            .await;
        let _ = Api::<CipherlaneNode>::all(client.clone())
            .delete(n, &DeleteParams::default())
            .await;
    }
}
