//! Lab helpers (real kube-apiserver): a client that fails the test when the lab is missing,
//! CRD installation, polling, and creating a fixture's objects the way agents and admins do.

use std::future::Future;
use std::time::{Duration, Instant};

use cipherlane_agent_k8s::{publish, PeerSummary, StatusWriter};
use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use cipherlane_k8s_api::kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use cipherlane_k8s_api::kube::{Api, Client, CustomResourceExt, ResourceExt};
use cipherlane_k8s_api::{CipherlaneNode, RotationPolicy};

use super::{spec_for, Fixture};

pub async fn lab_client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: start the lab (tests/lab/apiserver.sh start; source .cache/lab/env) or run tests/run-tier.sh integration"
    );
    let client = Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("cannot build a client from KUBECONFIG: {e}"));
    client.apiserver_version().await.unwrap_or_else(|e| {
        panic!("the lab's API server does not answer: {e}; is tests/lab/apiserver.sh running?")
    });
    client
}

pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [CipherlaneNode::crd(), RotationPolicy::crd()] {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("cipherlane-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("installing CRD {name} failed: {e}"));
        wait_for(Duration::from_secs(30), "CRD established", || {
            let api = api.clone();
            let name = name.clone();
            async move {
                api.get(&name)
                    .await
                    .ok()?
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

/// Deletes the fixture's objects (label `cipherlane.io/fixture=plugin`) and the named policies.
pub async fn remove(client: &Client, policies: &[&str]) {
    let lp = ListParams::default().labels("cipherlane.io/fixture=plugin");
    let nodes: Api<Node> = Api::all(client.clone());
    let cns: Api<CipherlaneNode> = Api::all(client.clone());
    let names: Vec<String> = nodes
        .list(&lp)
        .await
        .map(|l| l.items.iter().map(|n| n.name_any()).collect())
        .unwrap_or_default();
    let _ = nodes.delete_collection(&DeleteParams::default(), &lp).await;
    for n in &names {
        let _ = cns.delete(n, &DeleteParams::default()).await;
    }
    let rps: Api<RotationPolicy> = Api::all(client.clone());
    for p in policies {
        let _ = rps.delete(p, &DeleteParams::default()).await;
    }
    wait_for(Duration::from_secs(20), "fixture objects gone", || {
        let nodes = nodes.clone();
        let lp = lp.clone();
        async move { nodes.list(&lp).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
}

/// Creates a fixture as the cluster would hold it: Nodes (IPAM/kubelet), CipherlaneNodes and
/// their statuses (each node's agent, through `cipherlane-agent-k8s`), policies and their
/// status (admin + operator; the status is fixed fixture data here).
pub async fn create(client: &Client, f: &Fixture) {
    let nodes: Api<Node> = Api::all(client.clone());
    for n in &f.nodes {
        let mut bare = n.clone();
        bare.status = None;
        nodes
            .create(&PostParams::default(), &bare)
            .await
            .unwrap_or_else(|e| panic!("creating Node: {e}"));
        let st = serde_json::json!({ "status": n.status });
        nodes
            .patch_status(&n.name_any(), &PatchParams::default(), &Patch::Merge(&st))
            .await
            .expect("node status");
    }
    let rps: Api<RotationPolicy> = Api::all(client.clone());
    for p in &f.policies {
        let mut bare = p.clone();
        bare.status = None;
        rps.create(&PostParams::default(), &bare)
            .await
            .unwrap_or_else(|e| panic!("creating policy: {e}"));
        let st = serde_json::json!({ "status": p.status });
        rps.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&st))
            .await
            .expect("policy status");
    }
    for name in &f.published {
        let n = f
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .expect("node");
        publish(client.clone(), name, &spec_for(n))
            .await
            .expect("agent publishes");
        if let Some((ready, peers)) = f.reports.get(name) {
            let mut s = PeerSummary::new();
            for (peer, policy, state) in peers {
                s.add(peer, policy, *state);
            }
            let mut w = StatusWriter::new(
                client.clone(),
                name,
                Duration::from_secs(1),
                Duration::from_secs(60),
            );
            w.report(s, *ready, None).await.expect("agent reports");
        }
    }
}
