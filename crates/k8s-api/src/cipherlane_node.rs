//! `CipherlaneNode`: one per Kubernetes node, named after it, owned by its `Node`.
//! The spec is written by that node's agent only (enforced by RBAC and a ValidatingAdmissionPolicy
//! in the chart); the status summarises the node's peers in O(1) space (bounded by the number of
//! policies, never by the number of peers).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The most failing peers a status lists by name.
pub const FAILING_PEERS_CAP: usize = 8;

/// What a node's agent publishes about itself.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cipherlane.io",
    version = "v1alpha1",
    kind = "CipherlaneNode",
    shortname = "cln",
    category = "cipherlane",
    status = "CipherlaneNodeStatus",
    doc = "A Cipherlane node's published identity and a bounded summary of its encrypted peers.",
    printcolumn = r#"{"name":"Node IP","type":"string","jsonPath":".spec.nodeIP"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".status.peersSummary"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.epoch"}"#,
    printcolumn = r#"{"name":"Oldest Key","type":"integer","jsonPath":".status.oldestKeyAgeSeconds","priority":1}"#,
    printcolumn = r#"{"name":"Encrypting","type":"string","jsonPath":".status.conditions[?(@.type==\"Encrypting\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CipherlaneNodeSpec {
    /// The node's Ed25519 identity public key, base64 (standard alphabet, 32 bytes decoded).
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9+/]{43}=$')").message("identityKey must be a base64-encoded 32-byte Ed25519 public key (44 characters ending in '=')"))]
    pub identity_key: String,
    /// The node's tunnel endpoint address (its InternalIP).
    #[serde(rename = "nodeIP")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isIP(self)").message("nodeIP must be an IP address such as 198.18.0.2"))]
    pub node_ip: String,
    /// Key-exchange endpoint, `host:port`.
    #[schemars(length(max = 300))]
    pub endpoint: String,
    /// The node's pod CIDRs, as in `Node.spec.podCIDRs`.
    #[serde(rename = "podCIDRs")]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("podCIDRs must hold CIDRs such as 10.244.1.0/24"))]
    pub pod_cidrs: Vec<String>,
    /// Cipher suites this agent supports, e.g. `aes-gcm-128`.
    #[schemars(length(max = 8), inner(length(max = 32)))]
    pub suites: Vec<String>,
}

/// One policy's share of this node's peers: how many pairs it governs, how many have an SA
/// pair, and the lowest epoch among the established ones. The node has converged to the
/// policy's epoch E when `established == peers` and `lowestEpoch >= E`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEpochSummary {
    /// The RotationPolicy name, or `""` for the built-in default (no policy selects the pair).
    pub policy: String,
    /// Peers whose pair this policy governs.
    pub peers: u32,
    /// Of those, peers with an established SA pair.
    pub established: u32,
    /// The lowest epoch over the established ones (0 when none is).
    pub lowest_epoch: u64,
}

/// A bounded summary of the node's peers; per-pair detail comes from the agent's metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CipherlaneNodeStatus {
    /// Peers with an established SA pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_established: Option<u32>,
    /// Peers known from the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_total: Option<u32>,
    /// `established/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_summary: Option<String>,
    /// The lowest epoch over every established peer, all policies together (0 when none is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Per-policy epochs, one entry per policy governing at least one of this node's pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyEpochSummary>,
    /// When this node last completed a rotation (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    /// Age in seconds of the oldest SA pair in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_key_age_seconds: Option<u64>,
    /// Peers whose handshake is failing, at most [`FAILING_PEERS_CAP`] names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_peers: Vec<String>,
    /// How many peers are failing in all (may exceed the names listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_peers_count: Option<u32>,
    /// `Ready` and `Encrypting`, each with `observedGeneration`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
