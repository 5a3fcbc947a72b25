//! Cipherlane's Kubernetes API: the `cipherlane.io/v1alpha1` custom resources, and the single
//! place where `kube` and `k8s-openapi` are re-exported for the rest of the workspace.
//!
//! The types here are plain data. Reconcile logic lives in the operator, the agent's status
//! writer in the agent; this crate must not grow clients, watches or I/O.
#![forbid(unsafe_code)]

pub use k8s_openapi;
pub use kube;

pub mod cipherlane_node;
pub mod rotation_policy;

pub use cipherlane_node::{CipherlaneNode, CipherlaneNodeSpec, CipherlaneNodeStatus};
pub use rotation_policy::{RotationPolicy, RotationPolicySpec, RotationPolicyStatus};

/// The API group of every Cipherlane resource.
pub const GROUP: &str = "cipherlane.io";
/// The API version served.
pub const VERSION: &str = "v1alpha1";
