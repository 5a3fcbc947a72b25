//! When this node must start a handshake with a peer. Pure: the caller passes what it knows.
//!
//! A handshake is due when the pair has no SAs yet, when the pair's policy moved to a newer epoch
//! (after this node's stagger delay, so that a cluster-wide rotation does not stampede), or when the
//! kernel reported a soft expiry (bytes or packets) on one of the pair's SAs, or when SAs of the pair
//! vanished from the kernel (their keys are burned: see `cipherlane_datapath::ledger`). Only the initiator of
//! a pair (a deterministic rule, `cipherlane_kex::initiates`) starts scheduled handshakes; either side
//! may start one for a soft expiry. Both kernels count the same packets of an SA, so both sides see
//! its soft expiry at about the same time: the initiator re-keys at once, the other side only if no
//! new pair arrived within [`RESPONDER_FALLBACK`]. Two handshakes racing on one pair could leave each
//! side sending on an SA the other has retired, so the protocol keeps them apart. A burned pair is
//! re-keyed at once by the side that lost its SAs, whichever role it has: only it knows (the peer's SAs
//! are intact), and if both sides lost theirs the handshakes cross and the pair's initiator wins.

use std::time::Duration;

use cipherlane_core::Epoch;
use cipherlane_k8s_api::k8s_openapi::jiff::SignedDuration;
use cipherlane_policy::Timestamp;

/// How long the non-initiating side of a pair without SAs waits before it starts the handshake itself.
pub const RESPONDER_FALLBACK: Duration = Duration::from_secs(15);

/// Why a handshake is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// No SA with the peer yet.
    Initial,
    /// No SA with the peer, and the initiator did not start a handshake in time.
    ResponderFallback,
    /// The policy's epoch is newer than the pair's.
    Epoch,
    /// The kernel soft-expired one of the pair's SAs.
    Expired,
    /// SAs of the pair vanished from the kernel: their keys are burned.
    Burned,
}

/// What is known of one peer.
#[derive(Clone, Copy, Debug)]
pub struct RekeyInput {
    /// This node is the pair's initiator.
    pub initiator: bool,
    /// The pair's policy epoch.
    pub wanted_epoch: Epoch,
    /// When that epoch began (from the policy's status), if known.
    pub epoch_started: Option<Timestamp>,
    /// This node's stagger slot within a rotation.
    pub stagger_delay: Duration,
    /// The established pair's epoch, if any.
    pub current_epoch: Option<Epoch>,
    /// How long ago a soft expiry was reported for this pair (and no new pair since).
    pub expired_for: Option<Duration>,
    /// A handshake with the peer is already running.
    pub in_flight: bool,
    /// How long this node has known the peer without holding an SA pair with it.
    pub unkeyed_for: Duration,
    /// SAs of the pair were lost from the kernel (and no new pair since).
    pub burned: bool,
}

/// Whether to start a handshake now.
pub fn due(input: &RekeyInput, now: Timestamp) -> Option<Due> {
    if input.in_flight {
        return None;
    }
    if input.burned {
        return Some(Due::Burned);
    }
    if let Some(waited) = input.expired_for {
        if input.initiator || waited >= RESPONDER_FALLBACK {
            return Some(Due::Expired);
        }
    }
    if !input.initiator {
        let fallback = input.current_epoch.is_none() && input.unkeyed_for >= RESPONDER_FALLBACK;
        return fallback.then_some(Due::ResponderFallback);
    }
    match input.current_epoch {
        None => Some(Due::Initial),
        Some(cur) if cur < input.wanted_epoch => {
            let slot_open = match input.epoch_started {
                Some(start) => {
                    let delay = SignedDuration::try_from(input.stagger_delay)
                        .unwrap_or(SignedDuration::MAX);
                    start.checked_add(delay).map_or(true, |t| now >= t)
                }
                None => true,
            };
            slot_open.then_some(Due::Epoch)
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RekeyInput {
        RekeyInput {
            initiator: true,
            wanted_epoch: Epoch(3),
            epoch_started: None,
            stagger_delay: Duration::ZERO,
            current_epoch: Some(Epoch(3)),
            expired_for: None,
            in_flight: false,
            unkeyed_for: Duration::ZERO,
            burned: false,
        }
    }
    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    #[test]
    fn a_pair_at_the_policy_epoch_needs_nothing() {
        assert_eq!(due(&input(), at(100)), None);
    }

    #[test]
    fn a_new_pair_is_keyed_by_its_initiator_only() {
        let i = RekeyInput {
            current_epoch: None,
            ..input()
        };
        assert_eq!(due(&i, at(100)), Some(Due::Initial));
        let r = RekeyInput {
            initiator: false,
            ..i
        };
        assert_eq!(due(&r, at(100)), None);
    }

    #[test]
    fn a_responder_that_waited_too_long_for_its_initiator_keys_the_pair_itself() {
        let r = RekeyInput {
            initiator: false,
            current_epoch: None,
            unkeyed_for: RESPONDER_FALLBACK,
            ..input()
        };
        assert_eq!(due(&r, at(100)), Some(Due::ResponderFallback));
        let keyed = RekeyInput {
            current_epoch: Some(Epoch(3)),
            ..r
        };
        assert_eq!(due(&keyed, at(100)), None, "never for a keyed pair");
    }

    #[test]
    fn a_burned_pair_is_rekeyed_at_once_by_either_side() {
        for initiator in [true, false] {
            let i = RekeyInput {
                initiator,
                burned: true,
                current_epoch: None,
                ..input()
            };
            assert_eq!(
                due(&i, at(100)),
                Some(Due::Burned),
                "initiator: {initiator}"
            );
            let busy = RekeyInput {
                in_flight: true,
                ..i
            };
            assert_eq!(due(&busy, at(100)), None, "one handshake at a time");
        }
    }

    #[test]
    fn a_newer_epoch_waits_for_the_nodes_stagger_slot() {
        let i = RekeyInput {
            current_epoch: Some(Epoch(2)),
            epoch_started: Some(at(1000)),
            stagger_delay: Duration::from_secs(20),
            ..input()
        };
        assert_eq!(due(&i, at(1010)), None);
        assert_eq!(due(&i, at(1020)), Some(Due::Epoch));
    }

    #[test]
    fn a_soft_expiry_rekeys_from_the_initiator_at_once_and_from_the_other_side_only_as_a_fallback()
    {
        let i = RekeyInput {
            expired_for: Some(Duration::ZERO),
            ..input()
        };
        assert_eq!(due(&i, at(5)), Some(Due::Expired));
        let r = RekeyInput {
            initiator: false,
            expired_for: Some(Duration::from_secs(1)),
            ..input()
        };
        assert_eq!(due(&r, at(5)), None, "the initiator saw the same expiry");
        let r = RekeyInput {
            expired_for: Some(RESPONDER_FALLBACK),
            ..r
        };
        assert_eq!(due(&r, at(5)), Some(Due::Expired));
        let busy = RekeyInput {
            in_flight: true,
            ..r
        };
        assert_eq!(due(&busy, at(5)), None);
    }
}
