//! Who starts a handshake and how often: the one-initiator-per-pair rule, the retry schedule
//! (exponential backoff with jitter), the per-node cap on concurrent handshakes and the
//! responder's per-peer rate limit. Pure logic: time and randomness are inputs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cipherlane_core::NodeName;
use ring::digest;

/// Whether `local` is the one node of the pair `{local, peer}` that initiates.
///
/// The rule: hash the two names in sorted order (SHA-256 of `lower ‖ 0x00 ‖ higher`); if the
/// first byte of the hash is even the lower name initiates, otherwise the higher one. Both
/// sides compute the same answer, and unlike "the lower name always initiates" the work is
/// spread evenly over nodes. A node never initiates with itself.
pub fn initiates(local: &NodeName, peer: &NodeName) -> bool {
    if local == peer {
        return false;
    }
    let (lower, higher) = if local < peer {
        (local, peer)
    } else {
        (peer, local)
    };
    let h = digest::digest(
        &digest::SHA256,
        &[lower.as_str().as_bytes(), &[0], higher.as_str().as_bytes()].concat(),
    );
    let lower_initiates = h.as_ref()[0] % 2 == 0;
    (local == lower) == lower_initiates
}

/// Exponential backoff with jitter for retrying a failed handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Delay ceiling of the first retry.
    pub base: Duration,
    /// No delay exceeds this.
    pub max: Duration,
    /// Give up after this many attempts (the first one included).
    pub max_attempts: u32,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
            max_attempts: 8,
        }
    }
}

impl RetrySchedule {
    /// The delay before retry number `retry` (0 for the first retry), or `None` once the
    /// attempts are used up. `jitter` is a uniformly random number: the delay is uniform in
    /// `[ceiling/2, ceiling)` with `ceiling = min(max, base · 2^retry)` ("equal jitter"), so
    /// retries of many nodes spread out and never collapse to zero.
    pub fn delay(&self, retry: u32, jitter: u64) -> Option<Duration> {
        if retry.saturating_add(1) >= self.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        let ceiling_ns = ceiling.as_nanos().min(u128::from(u64::MAX)) as u64;
        let half = ceiling_ns / 2;
        let spread = ceiling_ns - half;
        let extra = if spread == 0 { 0 } else { jitter % spread };
        Some(Duration::from_nanos(half + extra))
    }
}

/// A token bucket per peer: `burst` handshakes at once, refilled at `per_second`.
#[derive(Debug)]
pub struct PeerRateLimit {
    per_second: f64,
    burst: f64,
    buckets: HashMap<NodeName, (f64, Duration)>,
}

impl PeerRateLimit {
    pub fn new(per_second: f64, burst: u32) -> PeerRateLimit {
        PeerRateLimit {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `peer` at monotonic time `now`; on refusal returns how long until the
    /// next token.
    pub fn check(&mut self, peer: &NodeName, now: Duration) -> Result<(), Duration> {
        if self.buckets.len() > 4096 {
            // Forget peers whose bucket is full again: they are indistinguishable from new.
            let (rate, burst) = (self.per_second, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_sub(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self
            .buckets
            .entry(peer.clone())
            .or_insert((self.burst, now));
        let refilled =
            (*tokens + now.saturating_sub(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            let wait = if self.per_second > 0.0 {
                (1.0 - refilled) / self.per_second
            } else {
                f64::from(u32::MAX)
            };
            Err(Duration::from_secs_f64(wait))
        }
    }
}

/// A cap on handshakes in flight on this node. `try_acquire` hands out a guard that gives its
/// slot back when dropped.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit {
    max: usize,
    in_flight: Arc<AtomicUsize>,
}

/// One handshake slot; released on drop.
#[derive(Debug)]
pub struct HandshakeSlot {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A slot, or `None` when `max` handshakes are already in flight.
    pub fn try_acquire(&self) -> Option<HandshakeSlot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| HandshakeSlot {
                in_flight: self.in_flight.clone(),
            })
    }
}

/// Why a handshake with a peer may not start now: another one with the same peer is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// This node already has a handshake with the peer in flight (either role).
    InProgress,
    /// This node is still answering an earlier init from the same peer.
    AlreadyResponding,
    /// Both nodes started a handshake at once and this node is the pair's initiator
    /// ([`initiates`]): its own handshake goes on, the peer's is refused.
    InitiatorWins,
}

impl Crossing {
    pub fn as_str(self) -> &'static str {
        match self {
            Crossing::InProgress => "a handshake with this peer is already in progress",
            Crossing::AlreadyResponding => "this node is still answering an earlier init from the peer",
            Crossing::InitiatorWins => {
                "both nodes started a handshake; this node is the pair's initiator and its own goes on"
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Roles {
    initiating: bool,
    responding: bool,
}

/// At most one handshake per pair at a time, and a fixed winner when two cross.
///
/// Two handshakes of one pair that overlap can complete in a different order on each side (each
/// node finishes its own handshake before the other's confirm arrives), and then each node keeps a
/// different pair: A sends on an SA that B has already retired. IKEv2 solves its simultaneous
/// re-key the same way (RFC 7296 §2.8.1): exactly one of the two survives. Here:
/// - a node never starts a handshake with a peer while one with that peer is in flight;
/// - an init from a peer whose earlier init is still being answered is refused;
/// - an init from a peer while this node's own handshake with it is in flight is refused when this
///   node is the pair's initiator ([`initiates`]); otherwise it is answered, and this node's own
///   handshake is the one the peer refuses.
#[derive(Debug, Default)]
pub struct PairGuards {
    active: Arc<std::sync::Mutex<HashMap<NodeName, Roles>>>,
}

/// A handshake's claim on its pair; released on drop.
#[derive(Debug)]
pub struct PairGuard {
    active: Arc<std::sync::Mutex<HashMap<NodeName, Roles>>>,
    peer: NodeName,
    initiator: bool,
}

impl Drop for PairGuard {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = active.get_mut(&self.peer) {
            if self.initiator {
                r.initiating = false;
            } else {
                r.responding = false;
            }
            if !r.initiating && !r.responding {
                active.remove(&self.peer);
            }
        }
    }
}

impl PairGuards {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeName, Roles>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn guard(&self, peer: &NodeName, initiator: bool) -> PairGuard {
        PairGuard {
            active: self.active.clone(),
            peer: peer.clone(),
            initiator,
        }
    }

    /// Claims the pair for a handshake this node starts.
    pub fn try_initiate(&self, peer: &NodeName) -> Result<PairGuard, Crossing> {
        let mut active = self.lock();
        let roles = active.entry(peer.clone()).or_default();
        if roles.initiating || roles.responding {
            return Err(Crossing::InProgress);
        }
        roles.initiating = true;
        drop(active);
        Ok(self.guard(peer, true))
    }

    /// Claims the pair for answering an init from `peer`.
    pub fn try_respond(&self, local: &NodeName, peer: &NodeName) -> Result<PairGuard, Crossing> {
        let mut active = self.lock();
        let roles = active.entry(peer.clone()).or_default();
        if roles.responding {
            return Err(Crossing::AlreadyResponding);
        }
        if roles.initiating && initiates(local, peer) {
            return Err(Crossing::InitiatorWins);
        }
        roles.responding = true;
        drop(active);
        Ok(self.guard(peer, false))
    }

    /// Whether a handshake with `peer` is in flight, in either role.
    pub fn is_active(&self, peer: &NodeName) -> bool {
        self.lock().contains_key(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s).expect("valid")
    }

    #[test]
    fn one_handshake_per_pair_and_the_pairs_initiator_wins_a_crossing() {
        let (a, b) = (name("node-a"), name("node-b"));
        let (designated, other) = if initiates(&a, &b) { (a, b) } else { (b, a) };
        // each node has its own guards; model both
        let on_designated = PairGuards::default();
        let on_other = PairGuards::default();

        // both start a handshake at once
        let mine = on_designated.try_initiate(&other).expect("free");
        let theirs = on_other.try_initiate(&designated).expect("free");
        assert_eq!(
            on_designated.try_initiate(&other).expect_err("busy"),
            Crossing::InProgress
        );
        // the inits cross: the designated initiator refuses the other's, the other answers
        assert_eq!(
            on_designated
                .try_respond(&designated, &other)
                .expect_err("the initiator wins"),
            Crossing::InitiatorWins
        );
        let answering = on_other
            .try_respond(&other, &designated)
            .expect("the initiator's init is answered");
        // a second init from the same peer while answering the first is refused
        assert_eq!(
            on_other
                .try_respond(&other, &designated)
                .expect_err("still answering"),
            Crossing::AlreadyResponding
        );
        assert!(on_other.is_active(&designated));
        drop(theirs); // the other's own handshake ends (refused by the designated node)
        assert!(on_other.is_active(&designated), "still answering");
        drop(answering);
        assert!(!on_other.is_active(&designated));
        drop(mine);
        assert!(!on_designated.is_active(&other));
        // free again: a later handshake may start, in either role
        let _again = on_designated
            .try_respond(&designated, &other)
            .expect("free");
    }

    #[test]
    fn exactly_one_node_of_every_pair_initiates_and_both_sides_share_the_work() {
        let nodes: Vec<NodeName> = (0..40).map(|i| name(&format!("node-{i}"))).collect();
        let mut lower_initiated = 0;
        let mut pairs = 0;
        for a in &nodes {
            assert!(!initiates(a, a));
            for b in &nodes {
                if a < b {
                    pairs += 1;
                    assert_ne!(initiates(a, b), initiates(b, a), "{a} {b}");
                    if initiates(a, b) {
                        lower_initiated += 1;
                    }
                }
            }
        }
        assert!(
            lower_initiated > pairs / 4 && lower_initiated < pairs * 3 / 4,
            "{lower_initiated} of {pairs}"
        );
    }

    #[test]
    fn retry_delays_grow_exponentially_with_jitter_up_to_the_cap_then_stop() {
        let s = RetrySchedule {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: 6,
        };
        assert_eq!(s.delay(0, 0), Some(Duration::from_millis(50)));
        assert_eq!(
            s.delay(0, u64::MAX - 1),
            Some(Duration::from_nanos(
                50_000_000 + (u64::MAX - 1) % 50_000_000
            ))
        );
        assert_eq!(s.delay(2, 0), Some(Duration::from_millis(200)));
        for j in [0, 1, 12345, u64::MAX] {
            let d = s.delay(4, j).expect("attempt 5 of 6");
            assert!(
                d >= Duration::from_millis(500) && d < Duration::from_secs(1),
                "{d:?}"
            );
        }
        assert_eq!(s.delay(5, 0), None);
        let d1 = s.delay(3, 1);
        let d2 = s.delay(3, 7_777_777);
        assert_ne!(d1, d2, "jitter must change the delay");
    }

    #[test]
    fn a_peer_gets_its_burst_then_one_handshake_per_refill_interval() {
        let mut limit = PeerRateLimit::new(2.0, 3);
        let a = name("a");
        let t0 = Duration::from_secs(10);
        for _ in 0..3 {
            assert!(limit.check(&a, t0).is_ok());
        }
        let wait = limit.check(&a, t0).expect_err("burst used up");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        assert!(limit.check(&name("b"), t0).is_ok(), "peers are independent");
        assert!(limit.check(&a, t0 + Duration::from_millis(500)).is_ok());
        assert!(limit.check(&a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn the_concurrency_cap_hands_out_at_most_max_slots_and_takes_them_back_on_drop() {
        let limit = ConcurrencyLimit::new(2);
        let s1 = limit.try_acquire();
        let s2 = limit.try_acquire();
        assert!(s1.is_some() && s2.is_some());
        assert!(limit.try_acquire().is_none());
        drop(s1);
        assert_eq!(limit.in_flight(), 1);
        assert!(limit.try_acquire().is_some());
    }
}
