//! The plugin's API calls: read a [`Snapshot`], request a rotation, revoke a node. Each write
//! is one merge patch, the same one `kubectl patch` would send (docs/operations.md).

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::api::{ListParams, Patch, PatchParams};
use cipherlane_k8s_api::kube::{Api, Client, ResourceExt};
use cipherlane_k8s_api::{CipherlaneNode, RotationPolicy};
use cipherlane_policy::{PolicySet, Timestamp};
use serde_json::json;

use crate::render::Snapshot;

/// Errors a user of the plugin sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "listing {what} failed (is the cluster reachable and Cipherlane installed?): {source}"
    )]
    List {
        what: &'static str,
        source: cipherlane_k8s_api::kube::Error,
    },
    #[error("patching RotationPolicy {policy:?} failed: {source}")]
    Patch {
        policy: String,
        source: cipherlane_k8s_api::kube::Error,
    },
    #[error("there is no RotationPolicy{0}; create one first (see docs/operations.md)")]
    NoPolicy(String),
    #[error("there is no Node {0:?}; `kubectl get nodes` lists them")]
    NoNode(String),
}

/// Reads Nodes (optionally by label selector), CipherlaneNodes and RotationPolicies.
pub async fn snapshot(client: Client, selector: Option<&str>) -> Result<Snapshot, Error> {
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let nodes = Api::<Node>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|source| Error::List {
            what: "Nodes",
            source,
        })?
        .items;
    let names: std::collections::BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let cipherlane_nodes = Api::<CipherlaneNode>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            what: "CipherlaneNodes",
            source,
        })?
        .items
        .into_iter()
        .filter(|c| names.contains(&c.name_any()))
        .collect();
    let mut policies = Api::<RotationPolicy>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            what: "RotationPolicies",
            source,
        })?
        .items;
    if selector.is_some() {
        // With a node selector, show the policies that concern the selected nodes.
        policies.retain(|p| {
            let sel = p
                .spec
                .node_selector
                .as_ref()
                .map(cipherlane_policy::Selector::from)
                .unwrap_or_default();
            p.spec.revoked_nodes.iter().any(|r| names.contains(r))
                || nodes
                    .iter()
                    .any(|n| sel.matches(&n.metadata.labels.clone().unwrap_or_default()))
        });
    }
    Ok(Snapshot {
        nodes,
        cipherlane_nodes,
        policies,
    })
}

/// Requests a rotation of `policy`, or of every policy when `None`. Returns the names.
pub async fn rotate(client: Client, policy: Option<&str>) -> Result<Vec<String>, Error> {
    let api = Api::<RotationPolicy>::all(client);
    let names: Vec<String> = match policy {
        Some(p) => vec![p.to_string()],
        None => api
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::List {
                what: "RotationPolicies",
                source,
            })?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect(),
    };
    if names.is_empty() {
        return Err(Error::NoPolicy(String::new()));
    }
    let token = Timestamp::now().to_string();
    for name in &names {
        let patch = json!({ "spec": { "rotationRequest": token } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Patch {
                policy: name.clone(),
                source,
            })?;
    }
    Ok(names)
}

/// Adds `node` to the `revokedNodes` of `policy`, or of the node's own policy (the
/// best-ranked policy selecting it) when `None`. Returns the policy's name.
pub async fn revoke(client: Client, node: &str, policy: Option<&str>) -> Result<String, Error> {
    let api = Api::<RotationPolicy>::all(client.clone());
    let policies = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            what: "RotationPolicies",
            source,
        })?
        .items;
    let name = match policy {
        Some(p) => p.to_string(),
        None => {
            let n = Api::<Node>::all(client)
                .get_opt(node)
                .await
                .map_err(|source| Error::List {
                    what: "Nodes",
                    source,
                })?
                .ok_or_else(|| Error::NoNode(node.to_string()))?;
            PolicySet::from_policies(&policies)
                .node_policy(&n.metadata.labels.clone().unwrap_or_default())
                .map(|p| p.name.clone())
                .ok_or_else(|| Error::NoPolicy(format!(" selecting node {node:?}")))?
        }
    };
    let current = policies
        .iter()
        .find(|p| p.name_any() == name)
        .ok_or_else(|| Error::NoPolicy(format!(" named {name:?}")))?;
    let mut revoked = current.spec.revoked_nodes.clone();
    if !revoked.iter().any(|r| r == node) {
        revoked.push(node.to_string());
    }
    // resourceVersion makes this a compare-and-swap: a concurrent edit is refused, not lost.
    let patch = json!({
        "metadata": { "resourceVersion": current.resource_version() },
        "spec": { "revokedNodes": revoked },
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Patch {
            policy: name.clone(),
            source,
        })?;
    Ok(name)
}
