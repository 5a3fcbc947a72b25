//! Leader election over a `coordination.k8s.io/v1` Lease, as decisions: given what the Lease
//! says and `now`, renew it, take it over, or follow its holder. The adapter that reads and
//! writes the Lease (with resourceVersion preconditions, so two candidates cannot both win)
//! lives in the operator.

use std::time::Duration;

use crate::Timestamp;

/// What a Lease says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub renew_time: Option<Timestamp>,
    pub duration: Duration,
    pub transitions: i32,
}

/// What a candidate does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it (transitions + 1).
    Acquire { transitions: i32 },
    /// Someone else holds it until `expires`.
    Follow { holder: String, expires: Timestamp },
}

/// Decides for candidate `me`.
pub fn decide(record: Option<&LeaseRecord>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(r) = record else {
        return LeaseDecision::Acquire { transitions: 0 };
    };
    match r.holder.as_deref() {
        Some(h) if h == me => LeaseDecision::Renew,
        None | Some("") => LeaseDecision::Acquire {
            transitions: r.transitions + 1,
        },
        Some(h) => {
            let expires = r
                .renew_time
                .map(|t| crate::schedule::add(t, r.duration))
                .unwrap_or(now);
            if now >= expires {
                LeaseDecision::Acquire {
                    transitions: r.transitions + 1,
                }
            } else {
                LeaseDecision::Follow {
                    holder: h.to_string(),
                    expires,
                }
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

    fn held_by(h: &str, renewed: i64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(h.into()),
            renew_time: Some(t(renewed)),
            duration: Duration::from_secs(15),
            transitions: 2,
        }
    }

    #[test]
    fn a_missing_lease_is_acquired() {
        assert_eq!(
            decide(None, "a", t(0)),
            LeaseDecision::Acquire { transitions: 0 }
        );
    }

    #[test]
    fn the_holder_renews_and_others_follow_until_it_expires() {
        assert_eq!(
            decide(Some(&held_by("a", 0)), "a", t(5)),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("a", 0)), "b", t(14)),
            LeaseDecision::Follow {
                holder: "a".into(),
                expires: t(15)
            }
        );
        assert_eq!(
            decide(Some(&held_by("a", 0)), "b", t(15)),
            LeaseDecision::Acquire { transitions: 3 }
        );
    }

    #[test]
    fn a_released_lease_is_taken_over_at_once() {
        let mut r = held_by("a", 0);
        r.holder = None;
        assert_eq!(
            decide(Some(&r), "b", t(1)),
            LeaseDecision::Acquire { transitions: 3 }
        );
    }
}
