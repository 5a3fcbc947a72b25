//! The Cipherlane operator, as a library the `cipherlane-operator` binary wires up.
//!
//! ```text
//!   Lease (leader.rs) ── only the leader runs ──┐
//!                                               v
//!   RotationPolicies ── Controller ── reconcile (policy_controller.rs) ── plan_policy (pure)
//!   Nodes, CipherlaneNodes ── reflectors ─┬─ trigger: reconcile every policy
//!                                         └─ gc.rs: delete CipherlaneNodes whose Node is gone
//! ```
//!
//! The operator owns RotationPolicy status (epoch, convergence, conditions), Events, and the
//! garbage collection of CipherlaneNodes of deleted Nodes. CipherlaneNodes carry an
//! ownerReference to their Node, so a cluster's garbage collector (kube-controller-manager)
//! removes them too; the operator does it itself as well, because not every environment runs
//! one (the lab does not) and a leaked CipherlaneNode would keep a dead peer in every agent's
//! peer set. It never writes CipherlaneNode specs or statuses: those belong to the agents.
#![forbid(unsafe_code)]

pub mod gc;
pub mod http;
pub mod leader;
pub mod policy_controller;
pub mod run;

use std::sync::Arc;

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::runtime::events::Recorder;
use cipherlane_k8s_api::kube::runtime::reflector::Store;
use cipherlane_k8s_api::kube::Client;
use cipherlane_k8s_api::{CipherlaneNode, RotationPolicy};

/// The field manager of the operator's writes.
pub const FIELD_MANAGER: &str = "cipherlane-operator";

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RotationPolicy {policy:?} has an invalid {field}: {source}; fix the spec (the CRD's validation should have refused it)")]
    InvalidSpec {
        policy: String,
        field: &'static str,
        source: cipherlane_policy::DurationError,
    },
    #[error("writing the status of RotationPolicy {policy:?} failed: {source}")]
    PatchStatus {
        policy: String,
        source: cipherlane_k8s_api::kube::Error,
    },
    #[error("deleting CipherlaneNode {node:?} of a deleted Node failed: {source}")]
    Delete {
        node: String,
        source: cipherlane_k8s_api::kube::Error,
    },
    #[error("Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: cipherlane_k8s_api::kube::Error,
    },
    #[error("lost the leadership Lease (not renewed within {0:?}); exiting so that another replica takes over")]
    LostLeadership(std::time::Duration),
    #[error("the {0} cache stopped before it was filled")]
    CacheNotReady(&'static str),
    #[error("watching {what} failed: {source}")]
    Watch {
        what: &'static str,
        source: cipherlane_k8s_api::kube::runtime::watcher::Error,
    },
}

/// What every reconcile sees.
pub struct Ctx {
    pub client: Client,
    pub recorder: Recorder,
    pub nodes: Store<Node>,
    pub cipherlane_nodes: Store<CipherlaneNode>,
    pub policies: Store<RotationPolicy>,
    pub metrics: Arc<http::Metrics>,
    /// Only AES-GCM suites are allowed (`CIPHERLANE_FIPS`).
    pub fips: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared context handle.
pub type SharedCtx = Arc<Ctx>;
