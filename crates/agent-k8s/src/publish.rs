//! Publishing the agent's own `CipherlaneNode` spec, owned by its `Node` so that the
//! garbage collector (or, without a kube-controller-manager, the operator) removes it with
//! the Node.

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use cipherlane_k8s_api::kube::api::{Patch, PatchParams};
use cipherlane_k8s_api::kube::{Api, Client};
use cipherlane_k8s_api::{CipherlaneNode, CipherlaneNodeSpec};
use serde_json::json;

use crate::Error;

/// The field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "cipherlane-agent";

/// The ownerReference a CipherlaneNode carries to its Node.
pub fn owner_reference(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: None,
    })
}

/// Creates or updates `CipherlaneNode/<node>` with `spec` (server-side apply).
pub async fn publish(
    client: Client,
    node: &str,
    spec: &CipherlaneNodeSpec,
) -> Result<CipherlaneNode, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let owner = nodes.get(node).await.map_err(|source| Error::GetNode {
        node: node.to_string(),
        source,
    })?;
    let owner_refs: Vec<OwnerReference> = owner_reference(&owner).into_iter().collect();
    let body = json!({
        "apiVersion": format!("{}/{}", cipherlane_k8s_api::GROUP, cipherlane_k8s_api::VERSION),
        "kind": "CipherlaneNode",
        "metadata": { "name": node, "ownerReferences": owner_refs },
        "spec": spec,
    });
    let api: Api<CipherlaneNode> = Api::all(client);
    api.patch(
        node,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Publish {
        node: node.to_string(),
        source,
    })
}
