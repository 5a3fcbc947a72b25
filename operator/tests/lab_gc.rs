//! Deleting a Node removes its CipherlaneNode. The lab runs no kube-controller-manager, so
//! Kubernetes' garbage collector does not act on the ownerReference: the operator does.
mod common;

use std::time::Duration;

use cipherlane_agent_k8s::publish;
use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::api::DeleteParams;
use cipherlane_k8s_api::kube::{Api, ResourceExt};
use cipherlane_k8s_api::CipherlaneNode;

#[tokio::test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
async fn deleting_a_node_removes_its_cipherlane_node_and_leaves_the_others() {
    let client = common::lab_client().await;
    common::install_crds(&client).await;
    let nodes = ["gc-1", "gc-2"];
    common::cleanup(&client, "op-test-gc=yes", &nodes, &[]).await;
    let mut uids = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let node = common::create_node(&client, n, &[("op-test-gc", "yes")], 50 + i as u8).await;
        let cn = publish(client.clone(), n, &common::spec(50 + i as u8))
            .await
            .expect("published");
        let owner = cn
            .owner_references()
            .first()
            .cloned()
            .expect("an ownerReference to the Node");
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", *n));
        assert_eq!(Some(owner.uid), node.metadata.uid);
        uids.push(cn.metadata.uid);
    }
    let (op, stop) = common::spawn_operator(&client, "op-test-gc");
    Api::<Node>::all(client.clone())
        .delete("gc-1", &DeleteParams::default())
        .await
        .expect("node deleted");
    let cns: Api<CipherlaneNode> = Api::all(client.clone());
    common::wait_for(
        Duration::from_secs(15),
        "CipherlaneNode gc-1 deleted",
        || async { cns.get_opt("gc-1").await.ok()?.is_none().then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = cns
        .get("gc-2")
        .await
        .expect("gc-2's CipherlaneNode is kept");
    assert_eq!(kept.metadata.uid, uids[1]);

    let _ = stop.send(());
    op.await
        .expect("operator task")
        .expect("operator stops cleanly");
    common::cleanup(&client, "op-test-gc=yes", &nodes, &[]).await;
}
