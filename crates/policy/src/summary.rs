//! The agent's status summary: per-peer states folded into a [`CipherlaneNodeStatus`] whose size
//! is bounded by the number of policies (plus a capped list of failing peers), never by the
//! number of peers; and [`StatusThrottle`], which bounds how often the agent writes it.

use std::collections::BTreeMap;
use std::time::Duration;

use cipherlane_k8s_api::{CipherlaneNodeStatus, PolicyEpochSummary, FAILING_PEERS_CAP};

use crate::convergence::condition;
use crate::Timestamp;

/// One peer as the agent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// An SA pair at `epoch` is in use, keyed `key_age` ago.
    Established { epoch: u64, key_age: Duration },
    /// No SA yet; a handshake is in progress or scheduled.
    Pending,
    /// Handshakes with this peer are failing.
    Failing,
}

/// A running fold of peer states; O(policies + cap) space.
#[derive(Clone, Debug, Default)]
pub struct PeerSummary {
    policies: BTreeMap<String, PolicyEpochSummary>,
    total: u32,
    established: u32,
    oldest_key_age: Option<Duration>,
    failing: Vec<String>,
    failing_count: u32,
}

impl PeerSummary {
    pub fn new() -> PeerSummary {
        PeerSummary::default()
    }

    /// Adds one peer whose pair is governed by `policy` (`""` for the built-in default).
    pub fn add(&mut self, peer: &str, policy: &str, state: PeerState) {
        self.total += 1;
        let entry = self
            .policies
            .entry(policy.to_string())
            .or_insert_with(|| PolicyEpochSummary {
                policy: policy.to_string(),
                peers: 0,
                established: 0,
                lowest_epoch: u64::MAX,
            });
        entry.peers += 1;
        match state {
            PeerState::Established { epoch, key_age } => {
                self.established += 1;
                entry.established += 1;
                entry.lowest_epoch = entry.lowest_epoch.min(epoch);
                self.oldest_key_age = Some(self.oldest_key_age.map_or(key_age, |a| a.max(key_age)));
            }
            PeerState::Pending => {}
            PeerState::Failing => {
                self.failing_count += 1;
                // Keep the alphabetically first names so the list is stable between writes.
                let pos = self.failing.partition_point(|p| p.as_str() < peer);
                if pos < FAILING_PEERS_CAP {
                    self.failing.insert(pos, peer.to_string());
                    self.failing.truncate(FAILING_PEERS_CAP);
                }
            }
        }
    }

    /// The status to publish. `ready` is the agent's own readiness (datapath installed, guard
    /// in place); `generation` is the object's `metadata.generation`; `previous` keeps condition
    /// transition times stable.
    pub fn into_status(
        self,
        ready: bool,
        last_rotation: Option<Timestamp>,
        generation: Option<i64>,
        previous: Option<&CipherlaneNodeStatus>,
        now: Timestamp,
    ) -> CipherlaneNodeStatus {
        let policies: Vec<PolicyEpochSummary> = self
            .policies
            .into_values()
            .map(|mut p| {
                if p.lowest_epoch == u64::MAX {
                    p.lowest_epoch = 0;
                }
                p
            })
            .collect();
        let epoch = policies
            .iter()
            .filter(|p| p.established > 0)
            .map(|p| p.lowest_epoch)
            .min()
            .unwrap_or(0);
        let all_up = self.established == self.total;
        let prev = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
        let encrypting = if all_up {
            condition(
                prev,
                "Encrypting",
                true,
                "AllPeersEncrypted",
                &format!(
                    "{} of {} peers have an SA pair",
                    self.established, self.total
                ),
                generation,
                now,
            )
        } else {
            condition(
                prev,
                "Encrypting",
                false,
                "PeersPending",
                &format!(
                    "{} of {} peers have an SA pair; {} failing",
                    self.established, self.total, self.failing_count
                ),
                generation,
                now,
            )
        };
        let ready_c = if ready {
            condition(
                prev,
                "Ready",
                true,
                "AgentReady",
                "datapath and fail-closed guard installed",
                generation,
                now,
            )
        } else {
            condition(
                prev,
                "Ready",
                false,
                "AgentNotReady",
                "the agent has not installed its datapath yet",
                generation,
                now,
            )
        };
        CipherlaneNodeStatus {
            peers_established: Some(self.established),
            peers_total: Some(self.total),
            peers_summary: Some(format!("{}/{}", self.established, self.total)),
            epoch: Some(epoch),
            policies,
            last_rotation: last_rotation.map(|t| t.to_string()),
            oldest_key_age_seconds: self.oldest_key_age.map(|a| a.as_secs()),
            failing_peers: self.failing,
            failing_peers_count: (self.failing_count > 0).then_some(self.failing_count),
            conditions: vec![ready_c, encrypting],
        }
    }
}

/// Bounds the rate of status writes: a changed status is written at most once per
/// `min_interval`; an unchanged one only as a heartbeat every `heartbeat`. Key ages are left
/// out of the comparison (they change every second and are refreshed by the heartbeat).
#[derive(Clone, Debug)]
pub struct StatusThrottle {
    min_interval: Duration,
    heartbeat: Duration,
    last_write: Option<(Timestamp, CipherlaneNodeStatus)>,
}

impl StatusThrottle {
    pub fn new(min_interval: Duration, heartbeat: Duration) -> StatusThrottle {
        StatusThrottle {
            min_interval,
            heartbeat,
            last_write: None,
        }
    }

    /// Whether `status` should be written now. When it returns `None`, the answer is yes;
    /// `Some(t)` means "not before `t`" (or, for an unchanged status, "at the heartbeat `t`").
    pub fn check(&self, status: &CipherlaneNodeStatus, now: Timestamp) -> Option<Timestamp> {
        let Some((at, last)) = &self.last_write else {
            return None;
        };
        let changed = comparable(last) != comparable(status);
        let wait = if changed {
            self.min_interval
        } else {
            self.heartbeat
        };
        let not_before = crate::schedule::add(*at, wait);
        (now < not_before).then_some(not_before)
    }

    /// Records a successful write.
    pub fn written(&mut self, status: CipherlaneNodeStatus, now: Timestamp) {
        self.last_write = Some((now, status));
    }
}

fn comparable(s: &CipherlaneNodeStatus) -> CipherlaneNodeStatus {
    let mut s = s.clone();
    s.oldest_key_age_seconds = None;
    for c in &mut s.conditions {
        c.last_transition_time =
            cipherlane_k8s_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            );
        c.message.clear();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn established(epoch: u64, age: u64) -> PeerState {
        PeerState::Established {
            epoch,
            key_age: Duration::from_secs(age),
        }
    }

    #[test]
    fn the_summary_has_one_entry_per_policy_however_many_peers_there_are() {
        let mut s = PeerSummary::new();
        for i in 0..5000 {
            s.add(
                &format!("node-{i}"),
                if i % 2 == 0 { "a" } else { "b" },
                established(3, i),
            );
        }
        let st = s.into_status(true, None, Some(1), None, t(0));
        assert_eq!(st.policies.len(), 2);
        assert_eq!(st.peers_summary.as_deref(), Some("5000/5000"));
        assert_eq!(st.oldest_key_age_seconds, Some(4999));
        assert_eq!(st.epoch, Some(3));
    }

    #[test]
    fn a_pending_peer_counts_as_not_established_without_hiding_the_others_epoch() {
        let mut s = PeerSummary::new();
        s.add("n1", "p", established(7, 1));
        s.add("n2", "p", PeerState::Pending);
        s.add("n3", "q", established(2, 1));
        let st = s.into_status(true, None, None, None, t(0));
        let p = st
            .policies
            .iter()
            .find(|e| e.policy == "p")
            .expect("p listed");
        assert_eq!((p.peers, p.established, p.lowest_epoch), (2, 1, 7));
        let q = st
            .policies
            .iter()
            .find(|e| e.policy == "q")
            .expect("q listed");
        assert_eq!(q.lowest_epoch, 2);
        let enc = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Encrypting")
            .expect("Encrypting");
        assert_eq!(enc.status, "False");
        assert_eq!(enc.observed_generation, None);
    }

    #[test]
    fn failing_peers_are_capped_and_counted() {
        let mut s = PeerSummary::new();
        for i in (0..20).rev() {
            s.add(&format!("node-{i:02}"), "", PeerState::Failing);
        }
        let st = s.into_status(true, None, Some(2), None, t(0));
        assert_eq!(st.failing_peers.len(), FAILING_PEERS_CAP);
        assert_eq!(st.failing_peers[0], "node-00");
        assert_eq!(st.failing_peers_count, Some(20));
    }

    #[test]
    fn the_throttle_writes_the_first_status_then_bounds_changes_and_skips_unchanged_ones() {
        let mut th = StatusThrottle::new(Duration::from_secs(5), Duration::from_secs(60));
        let mk = |epoch| {
            let mut s = PeerSummary::new();
            s.add("n", "", established(epoch, 1));
            s.into_status(true, None, None, None, t(0))
        };
        assert_eq!(th.check(&mk(1), t(0)), None);
        th.written(mk(1), t(0));
        assert_eq!(th.check(&mk(2), t(1)), Some(t(5)));
        assert_eq!(th.check(&mk(2), t(5)), None);
        assert_eq!(th.check(&mk(1), t(30)), Some(t(60)));
        assert_eq!(th.check(&mk(1), t(60)), None);
    }
}
