//! Garbage collection of CipherlaneNodes whose Node is gone (or was re-created with a new uid).
//!
//! Kubernetes' garbage collector does this through the ownerReference when a
//! kube-controller-manager runs; the operator does it as well, because the lab (and some
//! managed control planes with restricted GC) have none. The decision is [`orphans`]; the caller
//! must pass a Node list that is known to be complete (a synced cache), or every CipherlaneNode
//! would look orphaned.

use std::collections::BTreeMap;

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::api::{DeleteParams, Preconditions};
use cipherlane_k8s_api::kube::runtime::events::{Event, EventType};
use cipherlane_k8s_api::kube::{Api, Resource, ResourceExt};
use cipherlane_k8s_api::CipherlaneNode;

use crate::{Ctx, Error};

/// Names (and uids) of CipherlaneNodes whose Node no longer exists, or whose ownerReference
/// names a Node uid that is not the current Node's.
pub fn orphans<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    cipherlane_nodes: impl IntoIterator<Item = &'a CipherlaneNode>,
) -> Vec<(String, Option<String>)> {
    let uids: BTreeMap<String, Option<String>> = nodes
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.uid.clone())))
        .collect();
    cipherlane_nodes
        .into_iter()
        .filter(|cn| cn.metadata.deletion_timestamp.is_none())
        .filter(|cn| match uids.get(&cn.name_any()) {
            None => true,
            Some(uid) => cn
                .owner_references()
                .iter()
                .find(|o| o.kind == "Node" && o.api_version == "v1")
                .is_some_and(|o| Some(&o.uid) != uid.as_ref()),
        })
        .map(|cn| (cn.name_any(), cn.metadata.uid.clone()))
        .collect()
}

/// Deletes every orphaned CipherlaneNode, with a uid precondition (a re-published object
/// of the same name is left alone). Returns the names deleted.
pub async fn collect(ctx: &Ctx) -> Result<Vec<String>, Error> {
    let nodes = ctx.nodes.state();
    let cns = ctx.cipherlane_nodes.state();
    let doomed = orphans(nodes.iter().map(|n| &**n), cns.iter().map(|c| &**c));
    let api: Api<CipherlaneNode> = Api::all(ctx.client.clone());
    let mut deleted = Vec::new();
    for (name, uid) in doomed {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(node = %name, "deleted the CipherlaneNode of a deleted Node");
                if let Some(cn) = cns.iter().find(|c| c.name_any() == name) {
                    let ev = Event {
                        type_: EventType::Normal,
                        reason: "NodeDeleted".into(),
                        note: Some(format!(
                            "Node {name} no longer exists; deleted its CipherlaneNode so that peers drop their SAs with it"
                        )),
                        action: "GarbageCollect".into(),
                        secondary: None,
                    };
                    if let Err(err) = ctx.recorder.publish(&ev, &cn.object_ref(&())).await {
                        tracing::warn!(error = %err, "publishing an Event failed");
                    }
                }
                ctx.metrics
                    .garbage_collected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                deleted.push(name);
            }
            Err(cipherlane_k8s_api::kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(source) => return Err(Error::Delete { node: name, source }),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use cipherlane_k8s_api::CipherlaneNodeSpec;

    fn node(name: &str, uid: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.uid = Some(uid.into());
        n
    }

    fn cn(name: &str, owner_uid: &str) -> CipherlaneNode {
        let mut c = CipherlaneNode::new(name, CipherlaneNodeSpec::default());
        c.metadata.uid = Some(format!("cn-{name}"));
        c.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.into(),
            uid: owner_uid.into(),
            ..Default::default()
        }]);
        c
    }

    #[test]
    fn a_cipherlane_node_whose_node_is_gone_or_was_recreated_is_an_orphan() {
        let nodes = [node("a", "u-a"), node("b", "u-b2")];
        let cns = [cn("a", "u-a"), cn("b", "u-b1"), cn("c", "u-c")];
        let names: Vec<String> = orphans(&nodes, &cns).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn a_cipherlane_node_without_an_owner_reference_is_kept_while_its_node_exists() {
        let nodes = [node("a", "u-a")];
        let cns = [CipherlaneNode::new("a", CipherlaneNodeSpec::default())];
        assert!(orphans(&nodes, &cns).is_empty());
    }
}
