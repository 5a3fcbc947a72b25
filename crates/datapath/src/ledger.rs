//! "A key is installed once" (DESIGN.md §3): which SAs, by SPI and key, the kernel has been given,
//! and which of those are gone from it.
//!
//! Adding an SA starts a new kernel instance: its sequence counter restarts at 1 and its replay
//! window is empty. Adding one again with a key the kernel had before would repeat AES-GCM nonces
//! under that key and salt by chance rather than never (NIST SP 800-38D needs them unique by
//! construction), would accept ESP packets recorded earlier as new, and the peer, whose replay
//! window is far ahead, would drop everything sent on it. So an SA that was installed (or adopted
//! from the kernel on start) and has vanished from the kernel while it is still wanted (a flush,
//! another IPsec daemon, a hard expiry) is *lost*: its keys are burned, never added again, and the
//! pair re-keys with a fresh handshake. SAs still in the kernel keep their counters and stay.
//!
//! ```text
//!   observe ──> lost(desired, observed) ──> caller burns the pairs' keys, re-keys them
//!           ──> note_present(desired, observed)
//!   plan ─────> admit(plan)  (refuses to add any (SPI, key) the kernel had; records the adds)
//!           ──> retain(desired)  (forgets keys that left the keyring: they can never come back)
//! ```
//!
//! Pure: no I/O, no clock. Memory is bounded by the SAs the node wants plus the keys burned by
//! losses (which are rare events).

use std::collections::BTreeMap;

use cipherlane_core::SaKey;

use crate::model::{DatapathState, State, StateKey};
use crate::plan::{Plan, Step};

/// A plan tried to install an SA the kernel already had once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to install SA {dst} spi {spi:#x} a second time with the key it had: its sequence \
     numbers and replay window would restart (the pair must re-key)"
)]
pub struct ReinstallRefused {
    pub dst: std::net::IpAddr,
    pub spi: u32,
}

/// The SAs given to the kernel (by SPI and key) that the node still wants, and the burned ones.
#[derive(Clone, Debug, Default)]
pub struct KeyLedger {
    installed: BTreeMap<StateKey, SaKey>,
    burned: BTreeMap<StateKey, Vec<SaKey>>,
}

impl KeyLedger {
    pub fn new() -> KeyLedger {
        KeyLedger::default()
    }

    fn had(&self, s: &State) -> bool {
        self.installed.get(&s.key) == Some(&s.aead)
            || self
                .burned
                .get(&s.key)
                .is_some_and(|keys| keys.contains(&s.aead))
    }

    /// The SAs `desired` wants whose key the kernel was given and that `observed` no longer holds
    /// as installed (missing, or replaced by a different SA under the same SPI). Each one is burned
    /// here: the caller must drop it from what it wants and re-key its pair.
    pub fn burn_lost(&mut self, desired: &DatapathState, observed: &DatapathState) -> Vec<State> {
        let lost: Vec<State> = desired
            .states
            .values()
            .filter(|s| self.had(s))
            .filter(|s| {
                observed
                    .states
                    .get(&s.key)
                    .is_none_or(|o| !o.same_identity_and_keys(s))
            })
            .cloned()
            .collect();
        for s in &lost {
            self.installed.remove(&s.key);
            let keys = self.burned.entry(s.key).or_default();
            if !keys.contains(&s.aead) {
                keys.push(s.aead.clone());
            }
        }
        lost
    }

    /// Records the SAs that `desired` wants and `observed` holds as they are: they are in the
    /// kernel (installed earlier, or adopted after a restart), so they may never be added again.
    pub fn note_present(&mut self, desired: &DatapathState, observed: &DatapathState) {
        for s in desired.states.values() {
            if observed
                .states
                .get(&s.key)
                .is_some_and(|o| o.same_identity_and_keys(s))
            {
                self.installed.insert(s.key, s.aead.clone());
            }
        }
    }

    /// Records every SA `kernel` holds (what a restarted agent adopts): from now on each of them
    /// counts as installed, even before a first plan ran.
    pub fn note_kernel(&mut self, kernel: &DatapathState) {
        for s in kernel.states.values() {
            self.installed.insert(s.key, s.aead.clone());
        }
    }

    /// Checks that `plan` adds no SA with a key the kernel had under that SPI, then records its
    /// adds as installed (before they are applied: an add that fails half-way still counts, so a
    /// key is never retried in a second instance). On refusal nothing is recorded.
    pub fn admit(&mut self, plan: &Plan) -> Result<(), ReinstallRefused> {
        let adds = plan.steps.iter().filter_map(|s| match s {
            Step::AddState(s) => Some(s),
            _ => None,
        });
        if let Some(s) = adds.clone().find(|s| self.had(s)) {
            return Err(ReinstallRefused {
                dst: s.key.dst,
                spi: s.key.spi,
            });
        }
        for s in adds {
            self.installed.insert(s.key, s.aead.clone());
        }
        Ok(())
    }

    /// Forgets installed SAs that `desired` no longer holds: they left the keyring (retired after
    /// their grace period, or their peer is gone), and a key that left the keyring never returns
    /// to it (keys come only from fresh handshakes and, on start, from the kernel itself).
    pub fn retain(&mut self, desired: &DatapathState) {
        self.installed
            .retain(|k, key| desired.states.get(k).is_some_and(|s| &s.aead == key));
    }

    /// How many installed SAs are recorded (for tests and metrics).
    pub fn installed(&self) -> usize {
        self.installed.len()
    }

    /// How many burned keys are remembered.
    pub fn burned(&self) -> usize {
        self.burned.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{desired_state, LocalNode, NodeInput, Peer, PeerKeys, SaSettings};
    use crate::plan::plan;
    use cipherlane_core::{NodeName, PeerSpec, SaDirection, Spi, Suite};

    fn dir(spi: u32, key: u8) -> SaDirection {
        SaDirection {
            spi: Spi::new(spi).expect("valid"),
            key: SaKey::new(Suite::AesGcm128, vec![key; 20]).expect("valid"),
        }
    }

    fn desired(keys: Option<PeerKeys>) -> DatapathState {
        desired_state(&NodeInput {
            local: LocalNode {
                name: NodeName::new("a").expect("name"),
                node_ip: "198.18.0.1".parse().expect("ip"),
                pod_cidrs: vec!["10.244.1.0/24".parse().expect("cidr")],
                underlay_ifindex: 2,
            },
            cluster_pod_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
            peers: vec![Peer {
                spec: PeerSpec {
                    name: NodeName::new("b").expect("name"),
                    node_ip: "198.18.0.2".parse().expect("ip"),
                    pod_cidrs: vec!["10.244.2.0/24".parse().expect("cidr")],
                },
                keys,
            }],
            settings: SaSettings::default(),
        })
        .expect("layout")
    }

    fn pair(inb: u32, out: u32, key: u8) -> PeerKeys {
        PeerKeys {
            inbound: vec![dir(inb, key)],
            outbound: vec![dir(out, key + 1)],
        }
    }

    /// One reconcile as the agent runs it: returns what it lost and the plan it applied.
    fn reconcile(
        ledger: &mut KeyLedger,
        want: &DatapathState,
        kernel: &mut DatapathState,
    ) -> (Vec<State>, Plan) {
        let lost = ledger.burn_lost(want, kernel);
        let mut want = want.clone();
        for s in &lost {
            want.states.remove(&s.key);
            want.state_order.retain(|k| *k != s.key);
        }
        ledger.note_present(&want, kernel);
        let p = plan(&want, kernel);
        ledger.admit(&p).expect("the plan never re-adds a key");
        kernel.apply(&p).expect("applies");
        ledger.retain(&want);
        (lost, p)
    }

    #[test]
    fn sas_flushed_from_the_kernel_are_lost_and_never_added_again() {
        let mut ledger = KeyLedger::new();
        let want = desired(Some(pair(0x1001, 0x2001, 7)));
        let mut kernel = DatapathState::default();
        let (lost, first) = reconcile(&mut ledger, &want, &mut kernel);
        assert!(lost.is_empty());
        assert_eq!(
            first
                .steps
                .iter()
                .filter(|s| matches!(s, Step::AddState(_)))
                .count(),
            2
        );
        assert_eq!(ledger.installed(), 2);

        kernel.states.clear(); // ip xfrm state flush
        kernel.state_order.clear();
        let (lost, repair) = reconcile(&mut ledger, &want, &mut kernel);
        let mut spis: Vec<u32> = lost.iter().map(|s| s.key.spi).collect();
        spis.sort();
        assert_eq!(spis, vec![0x1001, 0x2001], "both SAs are lost");
        assert!(
            !repair.steps.iter().any(|s| matches!(s, Step::AddState(_))),
            "the repair adds no SA: {repair:?}"
        );
        assert_eq!(ledger.burned(), 2);
        // asked again with the same keys (a stale keyring), the ledger still says lost
        let lost_again = ledger.burn_lost(&want, &kernel);
        assert_eq!(lost_again.len(), 2, "burned keys stay burned");
    }

    #[test]
    fn a_plan_that_would_reinstall_a_key_is_refused_and_records_nothing() {
        let mut ledger = KeyLedger::new();
        let want = desired(Some(pair(0x1001, 0x2001, 7)));
        let p = plan(&want, &DatapathState::default());
        ledger.admit(&p).expect("first install");
        let err = ledger
            .admit(&p)
            .expect_err("second install of the same keys");
        assert!(err.to_string().contains("a second time"), "{err}");
        assert_eq!(ledger.installed(), 2);
    }

    #[test]
    fn fresh_keys_under_a_reused_spi_are_not_a_reinstall() {
        let mut ledger = KeyLedger::new();
        let mut kernel = DatapathState::default();
        reconcile(
            &mut ledger,
            &desired(Some(pair(0x1001, 0x2001, 7))),
            &mut kernel,
        );
        // a new handshake that happens to draw the same SPIs, with new keys
        let (lost, p) = reconcile(
            &mut ledger,
            &desired(Some(pair(0x1001, 0x2001, 9))),
            &mut kernel,
        );
        assert!(lost.is_empty(), "the old keys were replaced, not lost");
        assert!(p.steps.iter().any(|s| matches!(s, Step::AddState(_))));
    }

    #[test]
    fn sas_adopted_from_the_kernel_count_as_installed() {
        let mut ledger = KeyLedger::new();
        let want = desired(Some(pair(0x1001, 0x2001, 7)));
        let mut kernel = want.clone(); // what a restarted agent finds and adopts
        let (lost, p) = reconcile(&mut ledger, &want, &mut kernel);
        assert!(lost.is_empty());
        assert!(p.is_empty(), "adoption changes nothing");
        assert_eq!(ledger.installed(), 2);
        kernel.states.clear();
        kernel.state_order.clear();
        assert_eq!(ledger.burn_lost(&want, &kernel).len(), 2);
    }

    #[test]
    fn an_sa_the_agent_retired_is_forgotten_not_lost() {
        let mut ledger = KeyLedger::new();
        let mut kernel = DatapathState::default();
        let both = PeerKeys {
            inbound: vec![dir(0x1001, 1), dir(0x1002, 3)],
            outbound: vec![dir(0x2001, 2), dir(0x2002, 4)],
        };
        reconcile(&mut ledger, &desired(Some(both)), &mut kernel);
        assert_eq!(ledger.installed(), 4);
        // the grace period is over: the old pair leaves the keyring, reconcile deletes it
        let newer = PeerKeys {
            inbound: vec![dir(0x1002, 3)],
            outbound: vec![dir(0x2002, 4)],
        };
        let (lost, p) = reconcile(&mut ledger, &desired(Some(newer)), &mut kernel);
        assert!(lost.is_empty());
        assert_eq!(
            p.steps
                .iter()
                .filter(|s| matches!(s, Step::DeleteState(_)))
                .count(),
            2
        );
        assert_eq!(ledger.installed(), 2);
        assert_eq!(ledger.burned(), 0);
    }

    #[test]
    fn an_sa_replaced_by_someone_else_under_our_spi_is_lost() {
        let mut ledger = KeyLedger::new();
        let want = desired(Some(pair(0x1001, 0x2001, 7)));
        let mut kernel = DatapathState::default();
        reconcile(&mut ledger, &want, &mut kernel);
        let k = *kernel.states.keys().next().expect("an SA");
        if let Some(s) = kernel.states.get_mut(&k) {
            s.aead = SaKey::new(Suite::AesGcm128, vec![0xee; 20]).expect("key");
        }
        let lost = ledger.burn_lost(&want, &kernel);
        assert_eq!(lost.iter().map(|s| s.key).collect::<Vec<_>>(), vec![k]);
    }
}
