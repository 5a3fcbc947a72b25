//! Pair → effective policy, by one documented deterministic rule.
//!
//! **The rule.** Policies are ranked by `priority` (higher first), then by name (alphabetical
//! first). A node's policy is the best-ranked policy whose selector matches the node's labels
//! (none: the built-in default, which ranks below every policy). The effective policy of a pair
//! `{a, b}` is the better-ranked of `a`'s and `b`'s policies. So a node that an admin put under a
//! stricter (higher-priority) policy applies it to every pair it is part of, and both ends of a
//! pair always compute the same answer from the same objects, whichever end computes it.
//!
//! Revoked nodes take part in no pair. Counting what each policy governs is O(nodes × policies),
//! never O(nodes²).

use std::collections::BTreeMap;

use cipherlane_k8s_api::RotationPolicy;

use crate::selector::Selector;

/// A policy's identity and rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRef {
    pub name: String,
    pub priority: i32,
}

#[derive(Clone, Debug)]
struct Entry {
    policy: PolicyRef,
    selector: Selector,
}

/// What one policy governs in the current cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Governance {
    /// Nodes that have at least one pair governed by the policy.
    pub nodes: u32,
    /// Pairs governed by the policy.
    pub pairs: u64,
}

/// Every policy, in rank order (best first).
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    entries: Vec<Entry>,
}

impl PolicySet {
    /// Builds the ranked set from `(name, priority, selector)` triples.
    pub fn new(policies: impl IntoIterator<Item = (String, i32, Selector)>) -> PolicySet {
        let mut entries: Vec<Entry> = policies
            .into_iter()
            .map(|(name, priority, selector)| Entry {
                policy: PolicyRef { name, priority },
                selector,
            })
            .collect();
        entries.sort_by(|a, b| {
            b.policy
                .priority
                .cmp(&a.policy.priority)
                .then_with(|| a.policy.name.cmp(&b.policy.name))
        });
        PolicySet { entries }
    }

    /// Builds the ranked set from the API objects (objects being deleted are left out).
    pub fn from_policies<'a>(policies: impl IntoIterator<Item = &'a RotationPolicy>) -> PolicySet {
        PolicySet::new(
            policies
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| {
                    let selector = p
                        .spec
                        .node_selector
                        .as_ref()
                        .map(Selector::from)
                        .unwrap_or_default();
                    (
                        p.metadata.name.clone().unwrap_or_default(),
                        p.spec.priority,
                        selector,
                    )
                }),
        )
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The policy at a rank (0 is best).
    pub fn at(&self, rank: usize) -> Option<&PolicyRef> {
        self.entries.get(rank).map(|e| &e.policy)
    }

    /// The rank of a policy by name.
    pub fn rank_of(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.policy.name == name)
    }

    /// The rank of a node's own policy; `None` is the built-in default.
    pub fn node_rank(&self, labels: &BTreeMap<String, String>) -> Option<usize> {
        self.entries.iter().position(|e| e.selector.matches(labels))
    }

    /// A node's own policy; `None` is the built-in default.
    pub fn node_policy(&self, labels: &BTreeMap<String, String>) -> Option<&PolicyRef> {
        self.node_rank(labels).and_then(|r| self.at(r))
    }

    /// The effective policy of a pair, from its two nodes' ranks.
    pub fn pair_policy(&self, a: Option<usize>, b: Option<usize>) -> Option<&PolicyRef> {
        pair_rank(a, b).and_then(|r| self.at(r))
    }

    /// The effective policy of a pair, from its two nodes' labels.
    pub fn pair_policy_for_labels(
        &self,
        a: &BTreeMap<String, String>,
        b: &BTreeMap<String, String>,
    ) -> Option<&PolicyRef> {
        self.pair_policy(self.node_rank(a), self.node_rank(b))
    }

    /// What each policy governs (indexed by rank), given every non-revoked node's rank.
    pub fn governance(
        &self,
        node_ranks: impl IntoIterator<Item = Option<usize>>,
    ) -> Vec<Governance> {
        let p = self.entries.len();
        // counts[p] is the built-in default bucket.
        let mut counts = vec![0u64; p + 1];
        for r in node_ranks {
            counts[r.unwrap_or(p).min(p)] += 1;
        }
        let mut lower: u64 = counts[p];
        let mut out = vec![Governance::default(); p];
        for i in (0..p).rev() {
            let c = counts[i];
            let pairs = c * c.saturating_sub(1) / 2 + c * lower;
            let own = if c + lower >= 2 { c } else { 0 };
            let others = if c >= 1 { lower } else { 0 };
            out[i] = Governance {
                nodes: u32::try_from(own + others).unwrap_or(u32::MAX),
                pairs,
            };
            lower += c;
        }
        out
    }
}

/// The better of two node ranks (`None`, the default, ranks last).
pub fn pair_rank(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (Some(r), None) | (None, Some(r)) => Some(r),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn zone(z: &str) -> Selector {
        Selector {
            match_labels: labels(&[("zone", z)]),
            requirements: vec![],
        }
    }

    fn set() -> PolicySet {
        PolicySet::new([
            ("default".to_string(), 0, Selector::everything()),
            ("strict-a".to_string(), 10, zone("a")),
            ("also-a".to_string(), 10, zone("a")),
        ])
    }

    #[test]
    fn a_node_takes_the_highest_priority_matching_policy_and_ties_go_to_the_first_name() {
        let s = set();
        assert_eq!(
            s.node_policy(&labels(&[("zone", "a")]))
                .map(|p| p.name.as_str()),
            Some("also-a")
        );
        assert_eq!(
            s.node_policy(&labels(&[("zone", "b")]))
                .map(|p| p.name.as_str()),
            Some("default")
        );
    }

    #[test]
    fn a_pair_uses_the_better_ranked_of_its_two_nodes_policies_whichever_side_asks() {
        let s = set();
        let a = labels(&[("zone", "a")]);
        let b = labels(&[("zone", "b")]);
        assert_eq!(
            s.pair_policy_for_labels(&a, &b).map(|p| p.name.as_str()),
            Some("also-a")
        );
        assert_eq!(
            s.pair_policy_for_labels(&b, &a),
            s.pair_policy_for_labels(&a, &b)
        );
        assert_eq!(
            s.pair_policy_for_labels(&b, &b).map(|p| p.name.as_str()),
            Some("default")
        );
    }

    #[test]
    fn the_order_policies_are_listed_in_does_not_change_the_answer() {
        let a = PolicySet::new([
            ("x".to_string(), 1, zone("a")),
            ("y".to_string(), 1, zone("a")),
        ]);
        let b = PolicySet::new([
            ("y".to_string(), 1, zone("a")),
            ("x".to_string(), 1, zone("a")),
        ]);
        let l = labels(&[("zone", "a")]);
        assert_eq!(a.node_policy(&l), b.node_policy(&l));
    }

    #[test]
    fn nodes_no_policy_selects_fall_back_to_the_built_in_default() {
        let s = PolicySet::new([("only-a".to_string(), 0, zone("a"))]);
        let b = labels(&[("zone", "b")]);
        assert_eq!(s.pair_policy_for_labels(&b, &b), None);
    }

    #[test]
    fn governance_counts_pairs_and_nodes_without_enumerating_pairs() {
        // ranks: 0 = strict (2 nodes), 1 = default (3 nodes), none (1 node)
        let s = PolicySet::new([
            ("strict".to_string(), 5, zone("a")),
            ("default".to_string(), 0, zone("b")),
        ]);
        let ranks = [Some(0), Some(0), Some(1), Some(1), Some(1), None];
        let g = s.governance(ranks);
        // brute force
        let mut pairs = [0u64; 3];
        let mut nodes = [
            std::collections::BTreeSet::new(),
            Default::default(),
            Default::default(),
        ];
        for i in 0..ranks.len() {
            for j in i + 1..ranks.len() {
                let r = pair_rank(ranks[i], ranks[j]).unwrap_or(2);
                pairs[r] += 1;
                nodes[r].insert(i);
                nodes[r].insert(j);
            }
        }
        assert_eq!(
            g[0],
            Governance {
                nodes: nodes[0].len() as u32,
                pairs: pairs[0]
            }
        );
        assert_eq!(
            g[1],
            Governance {
                nodes: nodes[1].len() as u32,
                pairs: pairs[1]
            }
        );
        assert_eq!(g[0].pairs + g[1].pairs + pairs[2], 15);
    }

    #[test]
    fn a_policy_selecting_a_single_node_alone_governs_nothing() {
        let s = PolicySet::new([("solo".to_string(), 0, zone("a"))]);
        assert_eq!(s.governance([Some(0)])[0], Governance::default());
    }
}
