//! Which key-exchange group a pair uses, decided without any message from the network
//! (docs/protocol.md §4a): from the groups both nodes publish in their
//! `CipherlaneNode` (the API server vouches for them) and the pair's policy. Both ends compute
//! the same answer, so neither needs to trust a group list that arrives on the wire; the lists
//! that do arrive (signed, inside the transcript) must equal the published ones.
//!
//! A node of the previous release publishes no groups (`None`): it speaks version 1 of the wire
//! format, X25519 only. A pair uses a hybrid only when both ends publish it.

use cipherlane_core::KexGroup;

/// The pair's key-exchange policy (`RotationPolicy.spec.keyExchange`, `.spec.strictKeyExchange`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyExchangePolicy {
    /// The group to use when both nodes support it.
    pub preferred: KexGroup,
    /// Refuse every group that is not post-quantum (no classical fallback, not even with a
    /// node of the previous release).
    pub strict: bool,
}

impl Default for KeyExchangePolicy {
    /// Hybrid where both ends support it, X25519 with nodes of the previous release.
    fn default() -> Self {
        KeyExchangePolicy {
            preferred: KexGroup::X25519MlKem768,
            strict: false,
        }
    }
}

impl KeyExchangePolicy {
    /// Whether the policy accepts `group` at all.
    pub fn allows(&self, group: KexGroup) -> bool {
        group.is_post_quantum() || !self.strict
    }

    /// Groups in the order the policy wants them: the preferred one, then the other
    /// post-quantum ones, then (unless strict) X25519.
    fn order(&self) -> impl Iterator<Item = KexGroup> + '_ {
        std::iter::once(self.preferred)
            .chain(
                KexGroup::ALL
                    .into_iter()
                    .filter(|g| g.is_post_quantum() && *g != self.preferred),
            )
            .chain(std::iter::once(KexGroup::X25519))
            .filter(|g| self.allows(*g))
    }
}

/// The groups a node supports as far as the protocol is concerned: what it publishes, or X25519
/// alone for a node of the previous release.
pub fn effective(published: Option<&[KexGroup]>) -> &[KexGroup] {
    published.unwrap_or(&[KexGroup::X25519])
}

/// The group a pair uses: the first in the policy's order that both nodes support, or `None`
/// when there is none (a strict policy and a classical-only node; a FIPS node and a non-FIPS
/// node).
pub fn select(
    policy: &KeyExchangePolicy,
    local: &[KexGroup],
    peer: Option<&[KexGroup]>,
) -> Option<KexGroup> {
    let peer = effective(peer);
    policy
        .order()
        .find(|g| local.contains(g) && peer.contains(g))
}

/// Whether a responder may accept `offered` from an initiator whose expected group is
/// `expected` (what [`select`] says): the same group, or a post-quantum one where the responder
/// expected a classical one (the two nodes saw different policies for a moment; taking the
/// stronger group is no downgrade). Never a classical group where a post-quantum one was due.
pub fn acceptable(policy: &KeyExchangePolicy, offered: KexGroup, expected: KexGroup) -> bool {
    policy.allows(offered)
        && (offered == expected || (offered.is_post_quantum() && !expected.is_post_quantum()))
}

/// Whether two group lists name the same known groups (order and unknown codes aside).
pub fn same_groups(a: &[KexGroup], b: &[KexGroup]) -> bool {
    a.iter().all(|g| b.contains(g)) && b.iter().all(|g| a.contains(g))
}

/// Comma-separated names, for messages.
pub fn names(groups: &[KexGroup]) -> String {
    groups
        .iter()
        .map(|g| g.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use KexGroup::*;

    const NEW: &[KexGroup] = &[X25519MlKem768, X25519];
    const FIPS: &[KexGroup] = &[P256MlKem768];

    #[test]
    fn two_new_nodes_use_the_hybrid_and_a_node_of_the_previous_release_gets_x25519() {
        let p = KeyExchangePolicy::default();
        assert_eq!(select(&p, NEW, Some(NEW)), Some(X25519MlKem768));
        assert_eq!(select(&p, NEW, None), Some(X25519));
    }

    #[test]
    fn a_strict_policy_leaves_a_classical_only_peer_without_a_group() {
        let p = KeyExchangePolicy {
            strict: true,
            ..KeyExchangePolicy::default()
        };
        assert_eq!(select(&p, NEW, Some(NEW)), Some(X25519MlKem768));
        assert_eq!(select(&p, NEW, None), None);
        assert!(!p.allows(X25519));
    }

    #[test]
    fn a_classical_preference_uses_x25519_but_takes_a_hybrid_from_a_peer_that_sends_one() {
        let p = KeyExchangePolicy {
            preferred: X25519,
            strict: false,
        };
        assert_eq!(select(&p, NEW, Some(NEW)), Some(X25519));
        assert!(acceptable(&p, X25519MlKem768, X25519), "stronger is fine");
        let hybrid = KeyExchangePolicy::default();
        assert!(!acceptable(&hybrid, X25519, X25519MlKem768), "a downgrade");
    }

    #[test]
    fn fips_and_non_fips_nodes_share_no_group() {
        let p = KeyExchangePolicy::default();
        assert_eq!(select(&p, FIPS, Some(NEW)), None);
        assert_eq!(select(&p, FIPS, Some(FIPS)), Some(P256MlKem768));
        assert_eq!(select(&p, FIPS, None), None);
    }

    #[test]
    fn group_lists_compare_as_sets() {
        assert!(same_groups(&[X25519, X25519MlKem768], NEW));
        assert!(!same_groups(&[X25519], NEW));
        assert_eq!(names(NEW), "x25519-mlkem768, x25519");
    }
}
