//! Watches Nodes, CipherlaneNodes and RotationPolicies into a [`ClusterIndex`] and publishes
//! its [`PeerView`] on a `tokio::sync::watch` channel. The first view is sent only once all
//! three lists have been read, and a watch restart replaces a kind's objects in one step, so
//! the agent never sees a transiently empty peer set (which would tear down SAs).

use std::collections::BTreeMap;

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::runtime::watcher::{self, Event};
use cipherlane_k8s_api::kube::runtime::WatchStreamExt;
use cipherlane_k8s_api::kube::{Api, Client, ResourceExt};
use cipherlane_k8s_api::{CipherlaneNode, RotationPolicy};
use futures::{stream, StreamExt};
use tokio::sync::watch as channel;

use crate::index::{ClusterIndex, PeerView};
use crate::Error;

enum Change {
    Node(Box<Event<Node>>),
    Published(Event<CipherlaneNode>),
    Policy(Event<RotationPolicy>),
}

/// Buffers a watch's initial list so that it replaces the kind's objects at once.
struct InitBuffer<K> {
    pending: Option<BTreeMap<String, K>>,
    done: bool,
}

impl<K: ResourceExt + Clone> InitBuffer<K> {
    fn new() -> Self {
        InitBuffer {
            pending: None,
            done: false,
        }
    }

    /// Returns the full list when an initial list completes.
    fn feed(
        &mut self,
        ev: Event<K>,
        apply: &mut dyn FnMut(Option<&K>, Option<&str>),
    ) -> Option<Vec<K>> {
        match ev {
            Event::Init => {
                self.pending = Some(BTreeMap::new());
                None
            }
            Event::InitApply(k) => {
                self.pending
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k.name_any(), k);
                None
            }
            Event::InitDone => {
                self.done = true;
                Some(
                    self.pending
                        .take()
                        .unwrap_or_default()
                        .into_values()
                        .collect(),
                )
            }
            Event::Apply(k) => {
                apply(Some(&k), None);
                None
            }
            Event::Delete(k) => {
                apply(None, Some(&k.name_any()));
                None
            }
        }
    }
}

/// Starts watching for node `local`. Returns the view channel and the future that drives the
/// watches (spawn it; it ends only with an error).
pub fn watch_cluster(
    client: Client,
    local: &str,
) -> (
    channel::Receiver<PeerView>,
    impl std::future::Future<Output = Result<(), Error>>,
) {
    let (tx, rx) = channel::channel(PeerView::default());
    let local = local.to_string();
    let fut = async move {
        let cfg = watcher::Config::default();
        let nodes = watcher::watcher(Api::<Node>::all(client.clone()), cfg.clone())
            .default_backoff()
            .map(|e| {
                e.map(|ev| Change::Node(Box::new(ev)))
                    .map_err(|source| Error::Watch {
                        what: "Nodes",
                        source,
                    })
            });
        let published = watcher::watcher(Api::<CipherlaneNode>::all(client.clone()), cfg.clone())
            .default_backoff()
            .map(|e| {
                e.map(Change::Published).map_err(|source| Error::Watch {
                    what: "CipherlaneNodes",
                    source,
                })
            });
        let policies = watcher::watcher(Api::<RotationPolicy>::all(client), cfg)
            .default_backoff()
            .map(|e| {
                e.map(Change::Policy).map_err(|source| Error::Watch {
                    what: "RotationPolicies",
                    source,
                })
            });
        let mut all = stream::select_all([nodes.boxed(), published.boxed(), policies.boxed()]);
        let mut ix = ClusterIndex::new(&local);
        let mut nb = InitBuffer::<Node>::new();
        let mut cb = InitBuffer::<CipherlaneNode>::new();
        let mut pb = InitBuffer::<RotationPolicy>::new();
        while let Some(change) = all.next().await {
            let change = match change {
                Ok(c) => c,
                Err(err) => {
                    // The backoff retries; keep serving the last view meanwhile.
                    tracing::warn!(error = %err, "watch error; retrying");
                    continue;
                }
            };
            match change {
                Change::Node(ev) => {
                    let mut apply = |k: Option<&Node>, gone: Option<&str>| {
                        k.into_iter().for_each(|k| ix.apply_node(k));
                        gone.into_iter().for_each(|n| ix.delete_node(n));
                    };
                    if let Some(all) = nb.feed(*ev, &mut apply) {
                        ix.reset_nodes(all.iter());
                    }
                }
                Change::Published(ev) => {
                    let mut apply = |k: Option<&CipherlaneNode>, gone: Option<&str>| {
                        k.into_iter().for_each(|k| ix.apply_cipherlane_node(k));
                        gone.into_iter().for_each(|n| ix.delete_cipherlane_node(n));
                    };
                    if let Some(all) = cb.feed(ev, &mut apply) {
                        ix.reset_cipherlane_nodes(all.iter());
                    }
                }
                Change::Policy(ev) => {
                    let mut apply = |k: Option<&RotationPolicy>, gone: Option<&str>| {
                        k.into_iter().for_each(|k| ix.apply_policy(k));
                        gone.into_iter().for_each(|n| ix.delete_policy(n));
                    };
                    if let Some(all) = pb.feed(ev, &mut apply) {
                        ix.reset_policies(all.iter());
                    }
                }
            }
            if nb.done && cb.done && pb.done {
                let view = ix.peer_view();
                tx.send_if_modified(|cur| {
                    if *cur == view {
                        false
                    } else {
                        *cur = view;
                        true
                    }
                });
            }
        }
        Ok(())
    };
    (rx, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n
    }

    #[test]
    fn a_restarted_watch_replaces_the_objects_at_once_and_only_when_its_list_is_complete() {
        let mut b = InitBuffer::<Node>::new();
        let mut applied = Vec::new();
        let mut apply = |k: Option<&Node>, gone: Option<&str>| {
            applied.push((
                k.and_then(|k| k.metadata.name.clone()),
                gone.map(str::to_string),
            ));
        };
        assert!(b.feed(Event::Init, &mut apply).is_none());
        assert!(b.feed(Event::InitApply(node("a")), &mut apply).is_none());
        assert!(b.feed(Event::InitApply(node("b")), &mut apply).is_none());
        assert!(!b.done, "not done before InitDone");
        let all = b.feed(Event::InitDone, &mut apply).expect("the full list");
        assert_eq!(all.len(), 2);
        assert!(b.done);
        assert!(b.feed(Event::Delete(node("a")), &mut apply).is_none());
        assert_eq!(applied, [(None, Some("a".to_string()))]);
    }
}
