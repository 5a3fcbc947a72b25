//! Replay protection for init messages: a time window around the responder's clock plus a cache
//! of the nonces seen within it. An init outside the window is refused as stale; one inside it
//! whose nonce was already seen is refused as a replay. Entries live twice the window, so a
//! replayed init is caught for as long as its timestamp could pass the window check.
//!
//! Only authenticated inits are recorded (the caller checks the signature first), so the cache
//! grows with honest peers' handshake rate, and it has a hard capacity besides.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::wire::NONCE_LEN;

/// Why an init is not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The timestamp is further than the window from the local clock (ms of skew, signed).
    OutsideWindow { skew_ms: i64 },
    /// The nonce was already seen within the window.
    Replayed,
    /// The cache is at capacity with live entries.
    Full,
}

/// Nonces seen recently, keyed by nonce, expiring on the monotonic clock.
#[derive(Debug)]
pub struct NonceCache {
    window: Duration,
    capacity: usize,
    seen: HashMap<[u8; NONCE_LEN], Duration>,
    order: VecDeque<([u8; NONCE_LEN], Duration)>,
}

impl NonceCache {
    pub fn new(window: Duration, capacity: usize) -> NonceCache {
        NonceCache {
            window,
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&mut self, mono_now: Duration) {
        while let Some((nonce, expiry)) = self.order.front().copied() {
            if expiry > mono_now {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&nonce) == Some(&expiry) {
                self.seen.remove(&nonce);
            }
        }
    }

    /// Checks an init's timestamp and nonce and, if fresh, records the nonce.
    pub fn check_and_record(
        &mut self,
        nonce: &[u8; NONCE_LEN],
        timestamp_ms: u64,
        wall_now_ms: u64,
        mono_now: Duration,
    ) -> Result<(), Freshness> {
        let skew_ms = i128::from(timestamp_ms) - i128::from(wall_now_ms);
        if skew_ms.unsigned_abs() > self.window.as_millis() {
            let skew_ms = skew_ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            return Err(Freshness::OutsideWindow { skew_ms });
        }
        self.prune(mono_now);
        if self.seen.contains_key(nonce) {
            return Err(Freshness::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Freshness::Full);
        }
        let expiry = mono_now + self.window * 2;
        self.seen.insert(*nonce, expiry);
        self.order.push_back((*nonce, expiry));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    #[test]
    fn a_nonce_is_accepted_once_then_refused_until_it_expires() {
        let mut cache = NonceCache::new(W, 16);
        let t = Duration::from_secs(100);
        assert_eq!(cache.check_and_record(&[1; 32], 1_000, 1_000, t), Ok(()));
        assert_eq!(
            cache.check_and_record(&[1; 32], 1_000, 1_000, t + W),
            Err(Freshness::Replayed)
        );
        assert_eq!(
            cache.check_and_record(&[1; 32], 1_000, 1_000, t + W * 2),
            Ok(())
        );
    }

    #[test]
    fn a_timestamp_outside_the_window_is_refused_in_either_direction() {
        let mut cache = NonceCache::new(W, 16);
        let now = 1_000_000;
        let late = cache.check_and_record(&[1; 32], now - 30_001, now, Duration::ZERO);
        assert_eq!(late, Err(Freshness::OutsideWindow { skew_ms: -30_001 }));
        let early = cache.check_and_record(&[2; 32], now + 30_001, now, Duration::ZERO);
        assert_eq!(early, Err(Freshness::OutsideWindow { skew_ms: 30_001 }));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_new_nonces_until_old_ones_expire() {
        let mut cache = NonceCache::new(W, 2);
        let t = Duration::ZERO;
        assert!(cache.check_and_record(&[1; 32], 0, 0, t).is_ok());
        assert!(cache.check_and_record(&[2; 32], 0, 0, t).is_ok());
        assert_eq!(
            cache.check_and_record(&[3; 32], 0, 0, t),
            Err(Freshness::Full)
        );
        assert!(cache.check_and_record(&[3; 32], 0, 0, t + W * 2).is_ok());
        assert_eq!(cache.len(), 1);
    }
}
