//! Integration: two key-exchange agents on loopback gRPC that learn each other's identity keys
//! and endpoints from CipherlaneNode objects in the lab's real kube-apiserver.
//!
//! Run by the integration tier (`tests/run-tier.sh integration`), which starts the lab and sets
//! KUBECONFIG; by hand: `tests/lab/apiserver.sh start && source .cache/lab/env &&
//! cargo test -p cipherlane-kex-grpc --test lab_api -- --ignored`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cipherlane_core::{Epoch, NodeName, Suite};
use cipherlane_k8s_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use cipherlane_k8s_api::kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use cipherlane_k8s_api::kube::config::{KubeConfigOptions, Kubeconfig};
use cipherlane_k8s_api::kube::runtime::wait::{await_condition, conditions};
use cipherlane_k8s_api::kube::{Client, Config, CustomResourceExt};
use cipherlane_k8s_api::{CipherlaneNode, CipherlaneNodeSpec};
use cipherlane_kex::{
    Endpoint, InMemoryDirectory, InMemoryInstaller, KexConfig, KexError, PairPolicy, PeerEntry,
    RejectionKind, SystemClock,
};
use cipherlane_kex_grpc::{
    parse_public_key_base64, serve, ClientConfig, HandshakeError, KexClient, NodeIdentity,
};
use ring::rand::SystemRandom;
use tokio::net::TcpListener;

const IGNORE: &str = "integration: needs root and the lab (tests/run-tier.sh integration)";

async fn lab_client() -> Client {
    let path = std::env::var_os("KUBECONFIG").map(PathBuf::from).unwrap_or_else(|| {
        let env = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/lab/env");
        let text = std::fs::read_to_string(env).unwrap_or_else(|e| {
            panic!("{IGNORE}: KUBECONFIG is not set and {env} is unreadable ({e}); run tests/lab/apiserver.sh start")
        });
        text.lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{IGNORE}: {env} names no KUBECONFIG"))
    });
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{IGNORE}: cannot read kubeconfig {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{IGNORE}: bad kubeconfig {}: {e}", path.display()));
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("{IGNORE}: client: {e}"));
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("{IGNORE}: the lab API server does not answer: {e}"));
    client
}

async fn ensure_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = CipherlaneNode::crd();
    let name = crd.metadata.name.clone().expect("CRD has a name");
    if crds.get_opt(&name).await.expect("read CRDs").is_none() {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(cipherlane_k8s_api::kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("installing the CipherlaneNode CRD failed: {e}"),
        }
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established within 30 s")
    .expect("watch the CRD");
}

struct Agent {
    name: NodeName,
    endpoint: Arc<Endpoint>,
    directory: Arc<InMemoryDirectory>,
    installer: Arc<InMemoryInstaller>,
    client: KexClient<InMemoryInstaller>,
    listener: Option<TcpListener>,
    identity_b64: String,
}

async fn agent(name: &str, dir: &std::path::Path) -> Agent {
    let identity = NodeIdentity::load_or_create(&dir.join(format!("{name}/identity.pk8")))
        .expect("identity file");
    let identity_b64 = identity.public_key_base64();
    let directory = Arc::new(InMemoryDirectory::new());
    let endpoint = Arc::new(Endpoint::new(
        NodeName::new(name).expect("name"),
        identity.into_keypair(),
        directory.clone(),
        Arc::new(SystemClock::new()),
        Arc::new(SystemRandom::new()),
        KexConfig::default(),
    ));
    let installer = Arc::new(InMemoryInstaller::new());
    let client = KexClient::new(endpoint.clone(), installer.clone(), ClientConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    Agent {
        name: NodeName::new(name).expect("name"),
        endpoint,
        directory,
        installer,
        client,
        listener: Some(listener),
        identity_b64,
    }
}

/// What the agent does at start: publish its CipherlaneNode (identity key and endpoint).
async fn publish(api: &Api<CipherlaneNode>, agent: &Agent) -> String {
    let addr = agent
        .listener
        .as_ref()
        .expect("listener")
        .local_addr()
        .expect("addr")
        .to_string();
    let cn = CipherlaneNode::new(
        agent.name.as_str(),
        CipherlaneNodeSpec {
            identity_key: agent.identity_b64.clone(),
            node_ip: "127.0.0.1".into(),
            endpoint: addr.clone(),
            pod_cidrs: vec!["10.244.1.0/24".into()],
            suites: vec!["aes-gcm-128".into()],
        },
    );
    let _ = api
        .delete(agent.name.as_str(), &DeleteParams::default())
        .await;
    api.create(&PostParams::default(), &cn)
        .await
        .expect("create CipherlaneNode");
    addr
}

/// The agent's directory refresh: every CipherlaneNode but its own becomes a peer entry.
async fn refresh_directory(
    api: &Api<CipherlaneNode>,
    agent: &Agent,
    prefix: &str,
) -> BTreeMap<String, String> {
    let mut endpoints = BTreeMap::new();
    let list = api
        .list(&Default::default())
        .await
        .expect("list CipherlaneNodes");
    agent.directory.clear();
    for cn in list.items {
        let Some(name) = cn.metadata.name.clone() else {
            continue;
        };
        if !name.starts_with(prefix) || name == agent.name.as_str() {
            continue;
        }
        let key = parse_public_key_base64(&cn.spec.identity_key).expect("identity key");
        agent.directory.insert(
            NodeName::new(name.clone()).expect("valid name"),
            PeerEntry {
                identity_key: key,
                revoked: false,
                policy: PairPolicy::only(Epoch(1), Suite::AesGcm128),
                groups: Some(cipherlane_kex::SUPPORTED_GROUPS.to_vec()),
            },
        );
        endpoints.insert(name, cn.spec.endpoint.clone());
    }
    endpoints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn two_agents_handshake_over_grpc_with_identities_read_from_the_api_server() {
    let client = lab_client().await;
    ensure_crd(&client).await;
    let api: Api<CipherlaneNode> = Api::all(client.clone());
    let tmp = tempfile::tempdir().expect("tempdir");
    let prefix = format!("kex-it-{}", std::process::id());
    let mut a = agent(&format!("{prefix}-a"), tmp.path()).await;
    let mut b = agent(&format!("{prefix}-b"), tmp.path()).await;
    publish(&api, &a).await;
    publish(&api, &b).await;
    for x in [&mut a, &mut b] {
        let listener = x.listener.take().expect("listener");
        tokio::spawn(serve(
            listener,
            x.endpoint.clone(),
            x.installer.clone(),
            std::future::pending(),
        ));
    }
    let seen_by_a = refresh_directory(&api, &a, &prefix).await;
    refresh_directory(&api, &b, &prefix).await;
    let b_addr = seen_by_a
        .get(b.name.as_str())
        .expect("a sees b's CipherlaneNode")
        .clone();

    let pair_a = a
        .client
        .handshake(&b.name, &b_addr)
        .await
        .expect("handshake a → b");
    let mut pair_b = None;
    for _ in 0..100 {
        pair_b = b.installer.established_pair(&a.name);
        if pair_b.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pair_b = pair_b.expect("b established the pair");
    assert_eq!(pair_a.inbound, pair_b.outbound);
    assert_eq!(pair_a.outbound, pair_b.inbound);

    // b's CipherlaneNode now carries someone else's key: a must refuse b's signature.
    let impostor =
        NodeIdentity::load_or_create(&tmp.path().join("impostor.pk8")).expect("identity");
    let patch = serde_json::json!({ "spec": { "identityKey": impostor.public_key_base64() } });
    api.patch(
        b.name.as_str(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .expect("patch b's identity key");
    refresh_directory(&api, &a, &prefix).await;
    let err = a
        .client
        .handshake(&b.name, &b_addr)
        .await
        .expect_err("wrong key");
    assert!(
        matches!(err, HandshakeError::Local(KexError::BadSignature { .. })),
        "{err}"
    );
    assert_eq!(
        a.endpoint.metrics().rejections(RejectionKind::BadSignature),
        1
    );

    // a's CipherlaneNode is deleted: b no longer knows a and refuses it.
    api.delete(a.name.as_str(), &DeleteParams::default())
        .await
        .expect("delete a");
    refresh_directory(&api, &b, &prefix).await;
    let err = a
        .client
        .handshake(&b.name, &b_addr)
        .await
        .expect_err("unknown");
    assert!(
        matches!(
            err,
            HandshakeError::Rejected {
                kind: Some(RejectionKind::UnknownNode),
                ..
            }
        ),
        "{err}"
    );

    let _ = api.delete(b.name.as_str(), &DeleteParams::default()).await;
}
