//! `RotationPolicy`: how and when pairs of nodes re-key, managed by admins with kubectl.
//!
//! Every rule a person can break is checked by the API server with a CEL rule carrying a message
//! that says what is wrong and what to write instead; the operator may rely on a stored spec
//! satisfying them. Durations are Go-style strings (`24h`, `90m`, `1h30m`, `45s`), as everywhere
//! else in Kubernetes, so that CEL's `duration()` can compare them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Annotation that requests a rotation now: `kubectl annotate rotationpolicy NAME
/// cipherlane.io/rotate="$(date +%s)" --overwrite`. Any new value triggers one rotation.
pub const ROTATE_ANNOTATION: &str = "cipherlane.io/rotate";

/// The built-in rotation interval when a policy does not say.
pub const DEFAULT_ROTATION_INTERVAL: &str = "24h";
/// The built-in grace period when a policy does not say.
pub const DEFAULT_GRACE_PERIOD: &str = "30s";
/// The built-in suite when a policy does not say.
pub const DEFAULT_SUITE: &str = "aes-gcm-128";
/// The shortest rotation interval the API accepts.
pub const MIN_ROTATION_INTERVAL: &str = "10s";

fn default_rotation_interval() -> String {
    DEFAULT_ROTATION_INTERVAL.to_string()
}
fn default_grace_period() -> String {
    DEFAULT_GRACE_PERIOD.to_string()
}
fn default_suite() -> String {
    DEFAULT_SUITE.to_string()
}

/// The admin's intent for the nodes it selects.
///
/// Effective policy of a pair of nodes (documented in docs/operations.md and implemented by
/// `cipherlane-policy`): each node takes the highest-`priority` policy whose selector matches it
/// (ties: the alphabetically first name); a pair uses whichever of its two nodes' policies ranks
/// higher by the same order. The stricter side therefore always wins.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cipherlane.io",
    version = "v1alpha1",
    kind = "RotationPolicy",
    shortname = "rp",
    shortname = "rotpol",
    category = "cipherlane",
    status = "RotationPolicyStatus",
    doc = "How and when Cipherlane nodes re-key their IPsec SAs; see docs/operations.md.",
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.epoch"}"#,
    printcolumn = r#"{"name":"Suite","type":"string","jsonPath":".spec.suite","priority":1}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.rotationInterval","priority":1}"#,
    printcolumn = r#"{"name":"Last Rotation","type":"date","jsonPath":".status.lastRotation"}"#,
    printcolumn = r#"{"name":"Next Rotation","type":"string","jsonPath":".status.nextRotation"}"#,
    printcolumn = r#"{"name":"Converged","type":"string","jsonPath":".status.convergedSummary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "!self.gracePeriod.matches('^([0-9]{1,6}(h|m|s))+$') || !self.rotationInterval.matches('^([0-9]{1,6}(h|m|s))+$') || duration(self.gracePeriod) < duration(self.rotationInterval)"
).message("gracePeriod must be shorter than rotationInterval: old keys would still be in use at the next rotation").field_path(".gracePeriod"))]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicySpec {
    /// Which nodes this policy covers; empty or absent selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Rank among policies selecting the same node: higher wins, ties go to the alphabetically
    /// first name. 0 to 1000, default 0.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("priority must be between 0 and 1000"))]
    pub priority: i32,
    /// `aes-gcm-128` (default), `aes-gcm-256` or `chacha20-poly1305`.
    #[serde(default = "default_suite")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self in ['aes-gcm-128', 'aes-gcm-256', 'chacha20-poly1305']").message("suite must be one of aes-gcm-128, aes-gcm-256, chacha20-poly1305"))]
    pub suite: String,
    /// Rotate this often, e.g. `24h`, `90m`, `1h30m`; at least 10s. Default 24h.
    #[serde(default = "default_rotation_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]{1,6}(h|m|s))+$')").message("rotationInterval must be a duration such as 24h, 90m or 1h30m (units h, m, s)"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]{1,6}(h|m|s))+$') || duration(self) >= duration('10s')").message("rotationInterval must be at least 10s: rotating more often spends the nodes' CPU on handshakes"))]
    pub rotation_interval: String,
    /// Re-key a pair after this many bytes in one direction; absent means no byte limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("maxBytes must be a positive number of bytes; leave it out for no byte limit"))]
    pub max_bytes: Option<i64>,
    /// Re-key a pair after this many packets in one direction; absent means no packet limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("maxPackets must be a positive number of packets; leave it out for no packet limit"))]
    pub max_packets: Option<i64>,
    /// How long old SAs stay after a rotation, e.g. `30s` (default); at least 1s.
    #[serde(default = "default_grace_period")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]{1,6}(h|m|s))+$')").message("gracePeriod must be a duration such as 30s or 2m (units h, m, s)"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]{1,6}(h|m|s))+$') || duration(self) >= duration('1s')").message("gracePeriod must be at least 1s, or packets in flight during a rotation are lost"))]
    pub grace_period: String,
    /// At most this many nodes start re-keying in the same stagger slot; absent means all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxConcurrentNodes must be at least 1; leave it out for no limit"))]
    pub max_concurrent_nodes: Option<i32>,
    /// Set or change this value (any string, e.g. a timestamp) to rotate now:
    /// `kubectl patch rp NAME --type merge -p '{"spec":{"rotationRequest":"'$(date +%s)'"}}'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rotation_request: Option<String>,
    /// Nodes that no peer may keep or make SAs with. A node revoked by any policy is revoked
    /// for every pair.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'))").message("revokedNodes must hold node names (lower-case DNS names such as worker-3)"))]
    pub revoked_nodes: Vec<String>,
}

impl Default for RotationPolicySpec {
    fn default() -> Self {
        RotationPolicySpec {
            node_selector: None,
            priority: 0,
            suite: default_suite(),
            rotation_interval: default_rotation_interval(),
            max_bytes: None,
            max_packets: None,
            grace_period: default_grace_period(),
            max_concurrent_nodes: None,
            rotation_request: None,
            revoked_nodes: Vec::new(),
        }
    }
}

/// What the operator observed and decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicyStatus {
    /// The rotation epoch every pair governed by this policy should be keyed at. Only grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// When the current epoch began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    /// When the next time-based rotation is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<String>,
    /// Seconds between two stagger slots of the current rotation; a node starts re-keying at
    /// `lastRotation + slot * staggerSeconds`, its slot computed by `cipherlane-policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stagger_seconds: Option<u64>,
    /// Nodes that have at least one pair governed by this policy and report it at `epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_converged: Option<u32>,
    /// Nodes that have at least one pair governed by this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_total: Option<u32>,
    /// Node pairs for which this is the effective policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs_governed: Option<u64>,
    /// `converged/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_summary: Option<String>,
    /// The `spec.rotationRequest` value already acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotation_request: Option<String>,
    /// The `cipherlane.io/rotate` annotation value already acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotate_annotation: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Rotating` and `Degraded`, each with `observedGeneration`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
