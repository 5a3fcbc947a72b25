//! Convergence: which governed nodes report a policy's current epoch, and the policy's
//! conditions `Ready`, `Rotating` and `Degraded` (each carrying `observedGeneration`).
//!
//! A node has converged to policy P at epoch E when its status lists P with every governed peer
//! established and the lowest epoch ≥ E. `Ready` is true when every governed node converged.
//! `Rotating` is true while some have not and the rotation's deadline has not passed.
//! `Degraded` is true when the deadline passed without convergence, or a governed node reports
//! failing peers.

use cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use cipherlane_k8s_api::CipherlaneNodeStatus;

use crate::Timestamp;

/// Whether a node's status shows it converged to `policy` at `epoch`.
pub fn node_converged(status: Option<&CipherlaneNodeStatus>, policy: &str, epoch: u64) -> bool {
    status
        .and_then(|s| s.policies.iter().find(|p| p.policy == policy))
        .is_some_and(|p| p.established == p.peers && p.lowest_epoch >= epoch)
}

/// Whether a node's status reports failing peers.
pub fn node_failing(status: Option<&CipherlaneNodeStatus>) -> bool {
    status.is_some_and(|s| s.failing_peers_count.unwrap_or(0) > 0)
}

/// Converged and total governed nodes of one policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Convergence {
    pub converged: u32,
    pub total: u32,
    /// Governed nodes reporting failing peers.
    pub failing: u32,
}

impl Convergence {
    /// Counts one governed node.
    pub fn add(&mut self, status: Option<&CipherlaneNodeStatus>, policy: &str, epoch: u64) {
        self.total += 1;
        if node_converged(status, policy, epoch) {
            self.converged += 1;
        }
        if node_failing(status) {
            self.failing += 1;
        }
    }

    pub fn complete(&self) -> bool {
        self.converged == self.total
    }

    /// `converged/total`.
    pub fn summary(&self) -> String {
        format!("{}/{}", self.converged, self.total)
    }
}

/// Builds a condition, keeping the previous transition time when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The policy's three conditions.
pub struct PolicyConditions;

impl PolicyConditions {
    /// `deadline` is when a rotation that has not converged counts as degraded.
    pub fn compute(
        c: Convergence,
        epoch: u64,
        deadline: Timestamp,
        generation: Option<i64>,
        previous: &[Condition],
        now: Timestamp,
    ) -> Vec<Condition> {
        let late = now >= deadline;
        let ready = if c.complete() {
            condition(
                previous,
                "Ready",
                true,
                "Converged",
                &format!("all {} governed nodes are keyed at epoch {epoch}", c.total),
                generation,
                now,
            )
        } else {
            condition(
                previous,
                "Ready",
                false,
                "NotConverged",
                &format!(
                    "{} of {} governed nodes are keyed at epoch {epoch}",
                    c.converged, c.total
                ),
                generation,
                now,
            )
        };
        let rotating = if !c.complete() && !late {
            condition(
                previous,
                "Rotating",
                true,
                "EpochAdvancing",
                &format!(
                    "waiting for {} nodes to reach epoch {epoch}",
                    c.total - c.converged
                ),
                generation,
                now,
            )
        } else {
            condition(
                previous,
                "Rotating",
                false,
                "Idle",
                "no rotation in progress",
                generation,
                now,
            )
        };
        let degraded = if !c.complete() && late {
            condition(previous, "Degraded", true, "RotationOverdue",
                &format!("{} of {} nodes have not reached epoch {epoch} by the deadline; see `kubectl cipherlane status`",
                    c.total - c.converged, c.total), generation, now)
        } else if c.failing > 0 {
            condition(
                previous,
                "Degraded",
                true,
                "PeersFailing",
                &format!(
                    "{} nodes report failing peers; see `kubectl get cipherlanenodes`",
                    c.failing
                ),
                generation,
                now,
            )
        } else {
            condition(
                previous,
                "Degraded",
                false,
                "Healthy",
                "every governed node is healthy",
                generation,
                now,
            )
        };
        vec![ready, rotating, degraded]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipherlane_k8s_api::PolicyEpochSummary;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn status(policy: &str, peers: u32, established: u32, lowest: u64) -> CipherlaneNodeStatus {
        CipherlaneNodeStatus {
            policies: vec![PolicyEpochSummary {
                policy: policy.into(),
                peers,
                established,
                lowest_epoch: lowest,
            }],
            ..Default::default()
        }
    }

    fn get<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).expect("condition present")
    }

    #[test]
    fn a_node_converges_only_with_every_peer_established_at_or_past_the_epoch() {
        assert!(node_converged(Some(&status("p", 3, 3, 5)), "p", 5));
        assert!(node_converged(Some(&status("p", 3, 3, 6)), "p", 5));
        assert!(!node_converged(Some(&status("p", 3, 2, 5)), "p", 5));
        assert!(!node_converged(Some(&status("p", 3, 3, 4)), "p", 5));
        assert!(!node_converged(Some(&status("q", 3, 3, 5)), "p", 5));
        assert!(!node_converged(None, "p", 5));
    }

    #[test]
    fn conditions_go_rotating_then_ready_or_degraded_and_carry_the_generation() {
        let half = Convergence {
            converged: 1,
            total: 2,
            failing: 0,
        };
        let cs = PolicyConditions::compute(half, 3, t(100), Some(7), &[], t(10));
        assert_eq!(get(&cs, "Ready").status, "False");
        assert_eq!(get(&cs, "Rotating").status, "True");
        assert_eq!(get(&cs, "Degraded").status, "False");
        assert!(cs.iter().all(|c| c.observed_generation == Some(7)));

        let late = PolicyConditions::compute(half, 3, t(100), Some(7), &cs, t(100));
        assert_eq!(get(&late, "Degraded").status, "True");
        assert_eq!(get(&late, "Rotating").status, "False");

        let done = Convergence {
            converged: 2,
            total: 2,
            failing: 0,
        };
        let ok = PolicyConditions::compute(done, 3, t(100), Some(8), &late, t(120));
        assert_eq!(get(&ok, "Ready").status, "True");
        assert_eq!(get(&ok, "Degraded").status, "False");
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let first = condition(&[], "Ready", true, "Converged", "", None, t(0));
        let again = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "Converged",
            "",
            None,
            t(50),
        );
        assert_eq!(again.last_transition_time, first.last_transition_time);
        let flipped = condition(&[first], "Ready", false, "NotConverged", "", None, t(60));
        assert_eq!(flipped.last_transition_time, Time(t(60)));
    }
}
