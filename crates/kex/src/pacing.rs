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

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        NodeName::new(s).expect("valid")
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
