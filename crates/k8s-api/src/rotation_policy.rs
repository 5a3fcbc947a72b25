//! `RotationPolicy`: how and when pairs of nodes re-key, managed by admins with kubectl.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The admin's intent for the nodes it selects.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "cipherlane.io",
    version = "v1alpha1",
    kind = "RotationPolicy",
    shortname = "rp",
    status = "RotationPolicyStatus",
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.epoch"}"#,
    printcolumn = r#"{"name":"Last Rotation","type":"date","jsonPath":".status.lastRotation"}"#,
    printcolumn = r#"{"name":"Next Rotation","type":"date","jsonPath":".status.nextRotation"}"#,
    printcolumn = r#"{"name":"Converged","type":"string","jsonPath":".status.convergedSummary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicySpec {
    /// Which nodes this policy covers; empty selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// `aes-gcm-128` (default), `aes-gcm-256` or `chacha20-poly1305`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Rotate this often, e.g. `24h`, `90m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<String>,
    /// Re-key a pair after this many bytes in one direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    /// Re-key a pair after this many packets in one direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packets: Option<i64>,
    /// How long old SAs stay after a rotation, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
    /// At most this many nodes rotate at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_nodes: Option<i32>,
    /// Change this value (any string) to rotate now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_token: Option<String>,
    /// Nodes no peer may keep or make SAs with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_nodes: Vec<String>,
}

/// What the operator observed and decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_converged: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_total: Option<u32>,
    /// `converged/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotate_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
