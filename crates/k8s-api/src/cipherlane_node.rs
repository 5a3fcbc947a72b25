//! `CipherlaneNode`: one per Kubernetes node, named after it, owned by its `Node`.
//! The spec is written by that node's agent only (enforced by RBAC and a ValidatingAdmissionPolicy
//! in the chart); the status summarises the node's peers in O(1) space.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a node's agent publishes about itself.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "cipherlane.io",
    version = "v1alpha1",
    kind = "CipherlaneNode",
    shortname = "cln",
    status = "CipherlaneNodeStatus",
    printcolumn = r#"{"name":"Node IP","type":"string","jsonPath":".spec.nodeIP"}"#,
    printcolumn = r#"{"name":"Peers","type":"integer","jsonPath":".status.peersEstablished"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.epoch"}"#,
    printcolumn = r#"{"name":"Encrypting","type":"string","jsonPath":".status.conditions[?(@.type==\"Encrypting\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CipherlaneNodeSpec {
    /// The node's Ed25519 identity public key, base64 (standard alphabet, 32 bytes decoded).
    pub identity_key: String,
    /// The node's tunnel endpoint address (its InternalIP).
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
    /// Key-exchange endpoint, `host:port`.
    pub endpoint: String,
    /// The node's pod CIDRs, as in `Node.spec.podCIDRs`.
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    /// Cipher suites this agent supports, e.g. `aes-gcm-128`.
    pub suites: Vec<String>,
}

/// A bounded summary of the node's peers; per-pair detail comes from the agent's metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CipherlaneNodeStatus {
    /// Peers with an established SA pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_established: Option<u32>,
    /// Peers known from the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_total: Option<u32>,
    /// The policy epoch that every established peer of this node is keyed at (the lowest one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// When this node last completed a rotation (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    /// Age in seconds of the oldest SA pair in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_key_age_seconds: Option<u64>,
    /// Peers whose handshake is failing, at most a small number (names only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_peers: Vec<String>,
    /// `Ready` and `Encrypting`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
