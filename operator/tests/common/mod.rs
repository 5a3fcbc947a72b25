//! Helpers for the operator's lab tests (real kube-apiserver; `tests/run-tier.sh integration`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use cipherlane_k8s_api::k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use cipherlane_k8s_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use cipherlane_k8s_api::kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use cipherlane_k8s_api::kube::{Api, Client, CustomResourceExt, ResourceExt};
use cipherlane_k8s_api::{CipherlaneNode, CipherlaneNodeSpec, RotationPolicy};
use cipherlane_operator::run::{run, Settings};
use tokio::sync::oneshot;

/// A client for the lab's API server; panics (fails the test) when the lab is not there.
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

/// Installs (server-side applies) both CRDs and waits until they are Established.
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
        wait_for(
            Duration::from_secs(30),
            &format!("CRD {name} Established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout`.
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates (or replaces) a Node as node IPAM and kubelet would.
pub async fn create_node(client: &Client, name: &str, labels: &[(&str, &str)], i: u8) -> Node {
    let api: Api<Node> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_for(Duration::from_secs(10), "old node gone", || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    n.spec = Some(NodeSpec {
        pod_cidrs: Some(vec![format!("10.247.{i}.0/24")]),
        ..Default::default()
    });
    let created = api
        .create(&PostParams::default(), &n)
        .await
        .unwrap_or_else(|e| panic!("creating Node {name}: {e}"));
    let status = serde_json::json!({ "status": NodeStatus {
        addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: format!("198.18.30.{i}") }]),
        ..Default::default()
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("Node {name} status: {e}"));
    created
}

pub fn spec(i: u8) -> CipherlaneNodeSpec {
    CipherlaneNodeSpec {
        identity_key: format!("{}=", "C".repeat(43)),
        node_ip: format!("198.18.30.{i}"),
        endpoint: format!("198.18.30.{i}:7443"),
        pod_cidrs: vec![format!("10.247.{i}.0/24")],
        suites: vec!["aes-gcm-128".into()],
    }
}

/// Deletes Nodes, CipherlaneNodes and RotationPolicies carrying `label=value`, and the named ones.
pub async fn cleanup(client: &Client, label: &str, nodes: &[&str], policies: &[&str]) {
    let lp = ListParams::default().labels(label);
    let napi: Api<Node> = Api::all(client.clone());
    let _ = napi.delete_collection(&DeleteParams::default(), &lp).await;
    let capi: Api<CipherlaneNode> = Api::all(client.clone());
    let papi: Api<RotationPolicy> = Api::all(client.clone());
    for n in nodes {
        let _ = napi.delete(n, &DeleteParams::default()).await;
        let _ = capi.delete(n, &DeleteParams::default()).await;
    }
    for p in policies {
        let _ = papi.delete(p, &DeleteParams::default()).await;
    }
}

/// Runs the operator in this process until the returned sender fires (or is dropped).
pub fn spawn_operator(
    client: &Client,
    lease: &str,
) -> (
    tokio::task::JoinHandle<Result<(), cipherlane_operator::Error>>,
    oneshot::Sender<()>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let settings = Settings {
        identity: format!("{lease}-in-test"),
        lease_namespace: "default".into(),
        lease_name: lease.into(),
        lease_duration: Duration::from_secs(6),
        gc_interval: Duration::from_secs(2),
        fips: false,
        metrics: Default::default(),
    };
    let client = client.clone();
    let handle = tokio::spawn(async move {
        run(client, settings, async move {
            let _ = rx.await;
        })
        .await
    });
    (handle, tx)
}

/// Runs `kubectl ARGS`, panicking with its stderr on failure; returns stdout.
pub fn kubectl(args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl failed ({e}); source .cache/lab/env puts the lab's kubectl on PATH"));
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `kubectl ARGS` expecting failure; returns stderr.
pub fn kubectl_fails(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running kubectl failed ({e}); source .cache/lab/env puts the lab's kubectl on PATH"));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let out = child.wait_with_output().expect("kubectl finished");
    assert!(!out.status.success(), "kubectl {args:?} accepted {stdin}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
