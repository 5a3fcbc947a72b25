//! Staggering: a rotation is spread over slots so that a large cluster does not re-key (and
//! write status) all at once.
//!
//! With `N` nodes and `maxConcurrentNodes = c`, there are `ceil(N / c)` slots; a node's slot is
//! its position in the sorted node names, shifted by the epoch so that the same nodes are not
//! always first, divided by `c`. Exactly at most `c` nodes share a slot. A node starts its part
//! of epoch `e` at `lastRotation + slot * step`. The step is the grace period (an earlier slot's
//! old SAs are gone before the next slot starts) but the whole spread stays within half the
//! rotation interval. Every node computes its own slot from the node list it already watches,
//! so staggering costs no API writes.

use std::time::Duration;

/// A rotation's stagger plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stagger {
    pub nodes: u32,
    pub per_slot: u32,
    pub step: Duration,
}

impl Stagger {
    /// Plans the slots for `nodes` nodes.
    pub fn plan(
        nodes: u32,
        max_concurrent: Option<u32>,
        grace: Duration,
        interval: Duration,
    ) -> Stagger {
        let nodes = nodes.max(1);
        let per_slot = max_concurrent.unwrap_or(nodes).clamp(1, nodes);
        let slots = nodes.div_ceil(per_slot);
        let step = if slots <= 1 {
            Duration::ZERO
        } else {
            let budget = interval / 2 / (slots - 1);
            grace.max(Duration::from_secs(1)).min(budget)
        };
        Stagger {
            nodes,
            per_slot,
            step,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.nodes.div_ceil(self.per_slot)
    }

    /// The slot of the node at `position` (0-based, in sorted node names) for `epoch`.
    pub fn slot(&self, position: u32, epoch: u64) -> u32 {
        let shift = u32::try_from(epoch % u64::from(self.nodes)).unwrap_or(0);
        ((position % self.nodes + shift) % self.nodes) / self.per_slot
    }

    /// How long after the epoch's start the node at `position` begins re-keying.
    pub fn delay(&self, position: u32, epoch: u64) -> Duration {
        self.step * self.slot(position, epoch)
    }

    /// From the first slot's start to the last slot's start.
    pub fn spread(&self) -> Duration {
        self.step * self.slots().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn without_a_concurrency_limit_everyone_starts_at_once() {
        let s = Stagger::plan(50, None, GRACE, DAY);
        assert_eq!(s.slots(), 1);
        assert_eq!(s.delay(49, 3), Duration::ZERO);
    }

    #[test]
    fn no_slot_holds_more_nodes_than_the_limit_and_every_node_has_a_slot() {
        let s = Stagger::plan(103, Some(10), GRACE, DAY);
        assert_eq!(s.slots(), 11);
        for epoch in [0, 1, 7, 102, 1000] {
            let mut per_slot = vec![0; s.slots() as usize];
            for p in 0..103 {
                per_slot[s.slot(p, epoch) as usize] += 1;
            }
            assert!(per_slot.iter().all(|&n| n <= 10), "{per_slot:?}");
            assert_eq!(per_slot.iter().sum::<u32>(), 103);
        }
    }

    #[test]
    fn slots_are_one_grace_period_apart_but_the_spread_stays_within_half_the_interval() {
        let s = Stagger::plan(5000, Some(50), GRACE, DAY);
        assert_eq!(s.step, GRACE);
        let short = Stagger::plan(5000, Some(50), GRACE, Duration::from_secs(600));
        assert!(
            short.spread() <= Duration::from_secs(300),
            "{:?}",
            short.spread()
        );
    }

    #[test]
    fn the_first_slot_moves_between_epochs() {
        let s = Stagger::plan(10, Some(2), GRACE, DAY);
        assert_ne!(s.slot(0, 0), s.slot(0, 5));
    }
}
