//! The diff of a desired [`DatapathState`] against the observed one, as an ordered plan.
//!
//! The order is make-before-break and fail-closed:
//!
//! 1. new inbound SAs (a receiver is ready before any sender uses its SA);
//! 2. new outbound SAs, oldest first (the kernel sends on the newest state, so a new SA takes
//!    over exactly when it is added);
//! 3. SA limit updates;
//! 4. policies added or updated, in priority order (exemptions, peers, guards, fail-closed);
//! 5. routes added or replaced;
//! 6. deletions last: routes, policies, outbound SAs, inbound SAs.
//!
//! Only objects the observed snapshot holds are deleted, and the adapter only reads objects that
//! carry Cipherlane's markers, so nothing outside Cipherlane is ever touched. An outbound SA that
//! the desired state keeps only as a fallback (not the newest) is never re-added on its own:
//! adding it after the newest would make the kernel switch back to it.
//!
//! A missing SA in `desired` is added: the plan cannot tell a new SA from one the kernel lost.
//! The caller filters lost ones out first and checks the plan with [`crate::KeyLedger`] (a key is
//! installed once: an SA that vanished is never re-added with its old key).

use crate::model::{DatapathState, Flow, Policy, PolicyKey, Route, State, StateKey};
use ipnet::IpNet;

/// One kernel change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    AddState(State),
    /// Same SA, new byte/packet limits (`XFRM_MSG_UPDSA`).
    UpdateStateLimits(State),
    DeleteState(StateKey),
    AddPolicy(Policy),
    /// Same identity, new action or template (`XFRM_MSG_UPDPOLICY`, atomic).
    UpdatePolicy(Policy),
    DeletePolicy(PolicyKey),
    AddRoute(Route),
    ReplaceRoute(Route),
    DeleteRoute(IpNet),
}

/// An ordered list of kernel changes; empty when the kernel already matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Counts of (added, changed, deleted) objects, for logs.
    pub fn summary(&self) -> (usize, usize, usize) {
        let mut s = (0, 0, 0);
        for step in &self.steps {
            match step {
                Step::AddState(_) | Step::AddPolicy(_) | Step::AddRoute(_) => s.0 += 1,
                Step::UpdateStateLimits(_) | Step::UpdatePolicy(_) | Step::ReplaceRoute(_) => {
                    s.1 += 1
                }
                Step::DeleteState(_) | Step::DeletePolicy(_) | Step::DeleteRoute(_) => s.2 += 1,
            }
        }
        s
    }
}

/// Computes the plan that turns `observed` into `desired`.
pub fn plan(desired: &DatapathState, observed: &DatapathState) -> Plan {
    let mut add_in = Vec::new();
    let mut add_out = Vec::new();
    let mut limits = Vec::new();
    let mut del_states_out = Vec::new();
    let mut del_states_in = Vec::new();

    for (key, want) in &desired.states {
        match observed.states.get(key) {
            None => match want.flow {
                Flow::Inbound => add_in.push(want.clone()),
                Flow::Outbound => add_out.push(want.clone()),
            },
            Some(have) if !have.same_identity_and_keys(want) => {
                // Same SPI, different SA: it must be recreated. Rare (SPIs are random), and
                // the order below keeps the window as short as a delete + add.
                match want.flow {
                    Flow::Inbound => del_states_in.push(*key),
                    Flow::Outbound => del_states_out.push(*key),
                }
                match want.flow {
                    Flow::Inbound => add_in.push(want.clone()),
                    Flow::Outbound => add_out.push(want.clone()),
                }
            }
            Some(have) if have.limits != want.limits => limits.push(want.clone()),
            Some(_) => {}
        }
    }
    // An outbound SA that is missing while a newer one to the same peer is present (or being
    // added later in the list) would become the active one if added now: only add outbound
    // SAs that are the newest of their peer, or older ones added together with (before) it.
    let newest_out = newest_outbound(desired);
    add_out.retain(|s| {
        let newest = newest_out
            .iter()
            .find(|(peer, _)| *peer == s.peer)
            .map(|(_, k)| *k);
        match newest {
            Some(newest) if newest == s.key => true,
            Some(newest) => !observed.states.contains_key(&newest),
            None => true,
        }
    });
    add_out.sort_by_key(|s| position_in_peer(desired, s));

    for (key, have) in &observed.states {
        if !desired.states.contains_key(key) {
            match have.flow {
                Flow::Inbound => del_states_in.push(*key),
                Flow::Outbound => del_states_out.push(*key),
            }
        }
    }

    let mut add_pol = Vec::new();
    for (key, want) in &desired.policies {
        match observed.policies.get(key) {
            None => add_pol.push(Step::AddPolicy(want.clone())),
            Some(have) if have != want => add_pol.push(Step::UpdatePolicy(want.clone())),
            Some(_) => {}
        }
    }
    add_pol.sort_by_key(|s| match s {
        Step::AddPolicy(p) | Step::UpdatePolicy(p) => p.priority,
        _ => u32::MAX,
    });
    let mut del_pol: Vec<&Policy> = observed
        .policies
        .values()
        .filter(|p| !desired.policies.contains_key(&p.key))
        .collect();
    // Per-peer policies first, node-wide guards last.
    del_pol.sort_by_key(|p| p.priority);
    let del_pol: Vec<PolicyKey> = del_pol.into_iter().map(|p| p.key).collect();

    let mut routes = Vec::new();
    for (dst, want) in &desired.routes {
        match observed.routes.get(dst) {
            None => routes.push(Step::AddRoute(*want)),
            Some(have) if have != want => routes.push(Step::ReplaceRoute(*want)),
            Some(_) => {}
        }
    }
    let del_routes: Vec<IpNet> = observed
        .routes
        .keys()
        .filter(|k| !desired.routes.contains_key(k))
        .copied()
        .collect();

    // Recreated SAs: their delete must precede their add.
    let recreate: Vec<StateKey> = desired
        .states
        .iter()
        .filter(|(k, w)| {
            observed
                .states
                .get(k)
                .is_some_and(|h| !h.same_identity_and_keys(w))
        })
        .map(|(k, _)| *k)
        .collect();

    let mut steps = Vec::new();
    steps.extend(recreate.iter().map(|k| Step::DeleteState(*k)));
    steps.extend(add_in.into_iter().map(Step::AddState));
    steps.extend(add_out.into_iter().map(Step::AddState));
    steps.extend(limits.into_iter().map(Step::UpdateStateLimits));
    steps.extend(add_pol);
    steps.extend(routes);
    steps.extend(del_routes.into_iter().map(Step::DeleteRoute));
    steps.extend(del_pol.into_iter().map(Step::DeletePolicy));
    steps.extend(
        del_states_out
            .into_iter()
            .chain(del_states_in)
            .filter(|k| !recreate.contains(k))
            .map(Step::DeleteState),
    );
    Plan { steps }
}

/// The newest (last listed) outbound SA per peer of a desired state.
fn newest_outbound(desired: &DatapathState) -> Vec<(std::net::IpAddr, StateKey)> {
    let mut out: Vec<(std::net::IpAddr, StateKey, usize)> = Vec::new();
    for s in desired.states.values().filter(|s| s.flow == Flow::Outbound) {
        let pos = position_in_peer(desired, s);
        match out.iter_mut().find(|(p, _, _)| *p == s.peer) {
            Some(entry) if entry.2 < pos => *entry = (s.peer, s.key, pos),
            Some(_) => {}
            None => out.push((s.peer, s.key, pos)),
        }
    }
    out.into_iter().map(|(p, k, _)| (p, k)).collect()
}

/// A state's position in the order the layout listed the SAs (oldest first).
fn position_in_peer(desired: &DatapathState, s: &State) -> usize {
    desired
        .state_order
        .iter()
        .position(|k| *k == s.key)
        .unwrap_or(usize::MAX)
}
