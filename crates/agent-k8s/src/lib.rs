//! The Cipherlane agent's Kubernetes adapter.
//!
//! ```text
//!   Nodes ─┐
//!   CipherlaneNodes ─┼─ watch (watch.rs) ─> ClusterIndex (index.rs, pure) ─> PeerView ─> agent
//!   RotationPolicies ┘
//!   agent ─> PeerSummary ─> StatusWriter (status.rs, throttled SSA) ─> CipherlaneNode/<self>.status
//!   agent ─> CipherlaneNodeSpec ─> publish (publish.rs, SSA, ownerReference → Node) ─> CipherlaneNode/<self>
//! ```
//!
//! The agent binary calls [`publish`] once at start (and when its key, endpoint or suites
//! change), runs [`watch_cluster`] for its peer set, and feeds a [`PeerSummary`] to
//! [`StatusWriter::report`] whenever its peers change. Decisions (which policy a pair uses, when
//! a node's stagger slot starts, what the summary holds) come from `cipherlane-policy`; this
//! crate only moves objects between the API server and those functions. It never touches the
//! datapath.
#![forbid(unsafe_code)]

pub mod index;
pub mod publish;
pub mod status;
pub mod watch;

pub use cipherlane_policy::{PeerState, PeerSummary};
pub use index::{ClusterIndex, PairPolicy, Peer, PeerView};
pub use publish::publish;
pub use status::{Report, StatusWriter};
pub use watch::watch_cluster;

/// Errors of the agent's Kubernetes adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Node {node:?} failed (does the Node exist, and may this agent's service account get nodes?): {source}")]
    GetNode { node: String, source: kube::Error },
    #[error("publishing CipherlaneNode {node:?} failed (is the CRD installed and RBAC granted?): {source}")]
    Publish { node: String, source: kube::Error },
    #[error("writing the status of CipherlaneNode {node:?} failed (has the agent published its spec?): {source}")]
    Status { node: String, source: kube::Error },
    #[error("watching {what} failed: {source}")]
    Watch {
        what: &'static str,
        source: kube::runtime::watcher::Error,
    },
    #[error("serialising a CipherlaneNode failed: {0}")]
    Json(#[from] serde_json::Error),
}
