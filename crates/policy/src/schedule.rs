//! Rotation due-ness: given a policy's spec, its status and `now`, should the epoch advance?
//!
//! A rotation is due (in this order of reasons):
//! 1. the policy has no epoch yet (it was just created): epoch 1 starts now;
//! 2. `spec.rotationRequest` differs from `status.observedRotationRequest` (a `kubectl patch`);
//! 3. the `cipherlane.io/rotate` annotation differs from `status.observedRotateAnnotation`
//!    (a `kubectl annotate`);
//! 4. `now >= lastRotation + rotationInterval`.
//!
//! Otherwise the answer is to wait until `lastRotation + rotationInterval`. An advance always
//! moves the epoch by exactly one, however many reasons hold, so a burst of requests is one
//! rotation.

use std::time::Duration;

use cipherlane_core::Epoch;

use crate::Timestamp;

/// Why the epoch advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationReason {
    Initial,
    Requested,
    Annotated,
    Interval,
}

impl RotationReason {
    /// A CamelCase reason for Events and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationReason::Initial => "InitialEpoch",
            RotationReason::Requested => "RotationRequested",
            RotationReason::Annotated => "RotationAnnotated",
            RotationReason::Interval => "IntervalElapsed",
        }
    }
}

/// What the operator should do with a policy's epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationDecision {
    /// Move to `epoch`, starting now; the next time-based rotation is at `next`.
    Advance {
        epoch: Epoch,
        reason: RotationReason,
        next: Timestamp,
    },
    /// Nothing to do before `until`.
    Wait { until: Timestamp },
}

/// The inputs of [`decide`], read from a `RotationPolicy`.
#[derive(Clone, Debug, Default)]
pub struct ScheduleInput<'a> {
    pub interval: Duration,
    pub epoch: Option<u64>,
    pub last_rotation: Option<Timestamp>,
    pub rotation_request: Option<&'a str>,
    pub observed_request: Option<&'a str>,
    pub annotation: Option<&'a str>,
    pub observed_annotation: Option<&'a str>,
}

/// `t + d`, saturating at the largest timestamp.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// Decides whether the epoch advances now.
pub fn decide(input: &ScheduleInput<'_>, now: Timestamp) -> RotationDecision {
    let next = add(now, input.interval);
    let current = match input.epoch {
        None => {
            return RotationDecision::Advance {
                epoch: Epoch(1),
                reason: RotationReason::Initial,
                next,
            }
        }
        Some(e) => Epoch(e),
    };
    let advance = |reason| RotationDecision::Advance {
        epoch: current.next(),
        reason,
        next,
    };
    if input.rotation_request.is_some() && input.rotation_request != input.observed_request {
        return advance(RotationReason::Requested);
    }
    if input.annotation.is_some() && input.annotation != input.observed_annotation {
        return advance(RotationReason::Annotated);
    }
    match input.last_rotation {
        // An epoch without a start time (hand-edited status): start the clock now.
        None => advance(RotationReason::Interval),
        Some(last) => {
            let due = add(last, input.interval);
            if now >= due {
                advance(RotationReason::Interval)
            } else {
                RotationDecision::Wait { until: due }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn steady(last: i64) -> ScheduleInput<'static> {
        ScheduleInput {
            interval: Duration::from_secs(60),
            epoch: Some(4),
            last_rotation: Some(t(last)),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_policy_starts_at_epoch_one() {
        let d = decide(
            &ScheduleInput {
                interval: Duration::from_secs(60),
                ..Default::default()
            },
            t(0),
        );
        assert_eq!(
            d,
            RotationDecision::Advance {
                epoch: Epoch(1),
                reason: RotationReason::Initial,
                next: t(60)
            }
        );
    }

    #[test]
    fn nothing_happens_before_the_interval_and_the_wait_ends_at_the_due_time() {
        assert_eq!(
            decide(&steady(0), t(59)),
            RotationDecision::Wait { until: t(60) }
        );
    }

    #[test]
    fn the_epoch_advances_by_one_once_the_interval_has_elapsed() {
        match decide(&steady(0), t(60)) {
            RotationDecision::Advance {
                epoch,
                reason,
                next,
            } => {
                assert_eq!(epoch, Epoch(5));
                assert_eq!(reason, RotationReason::Interval);
                assert_eq!(next, t(120));
            }
            other => panic!("expected an advance, got {other:?}"),
        }
    }

    #[test]
    fn a_changed_rotation_request_rotates_now_and_an_observed_one_does_not() {
        let mut i = steady(0);
        i.rotation_request = Some("now-1");
        assert!(matches!(
            decide(&i, t(1)),
            RotationDecision::Advance {
                reason: RotationReason::Requested,
                epoch: Epoch(5),
                ..
            }
        ));
        i.observed_request = Some("now-1");
        assert!(matches!(decide(&i, t(1)), RotationDecision::Wait { .. }));
    }

    #[test]
    fn a_changed_rotate_annotation_rotates_now() {
        let mut i = steady(0);
        i.annotation = Some("1");
        i.observed_annotation = Some("0");
        assert!(matches!(
            decide(&i, t(1)),
            RotationDecision::Advance {
                reason: RotationReason::Annotated,
                ..
            }
        ));
    }
}
