//! Applying a [`Plan`] to an in-memory [`DatapathState`], with the kernel's rules for existing and
//! missing objects (`EEXIST` on a second add, `ENOENT` on deleting what is not there).
//!
//! Two users: tests that check a plan really converges, and the agent's *recording* datapath
//! (used for many simulated nodes on one host, where no kernel could hold their SAs), which keeps
//! what it would have programmed instead of programming it.

use crate::model::{DatapathState, PolicyKey, StateKey};
use crate::plan::{Plan, Step};
use ipnet::IpNet;

/// A step that the kernel would have refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("adding SA {0:?}: it already exists")]
    StateExists(StateKey),
    #[error("changing or deleting SA {0:?}: it does not exist")]
    StateMissing(StateKey),
    #[error("adding policy {0:?}: it already exists")]
    PolicyExists(PolicyKey),
    #[error("changing or deleting policy {0:?}: it does not exist")]
    PolicyMissing(PolicyKey),
    #[error("adding the route to {0}: it already exists")]
    RouteExists(IpNet),
    #[error("deleting the route to {0}: it does not exist")]
    RouteMissing(IpNet),
}

impl DatapathState {
    /// Applies one step. On error nothing changed.
    pub fn apply_step(&mut self, step: &Step) -> Result<(), ApplyError> {
        match step {
            Step::AddState(s) => {
                if self.states.contains_key(&s.key) {
                    return Err(ApplyError::StateExists(s.key));
                }
                self.push_state(s.clone());
            }
            Step::UpdateStateLimits(s) => match self.states.get_mut(&s.key) {
                Some(have) => have.limits = s.limits,
                None => return Err(ApplyError::StateMissing(s.key)),
            },
            Step::DeleteState(k) => {
                if self.states.remove(k).is_none() {
                    return Err(ApplyError::StateMissing(*k));
                }
                self.state_order.retain(|x| x != k);
            }
            Step::AddPolicy(p) => {
                if self.policies.contains_key(&p.key) {
                    return Err(ApplyError::PolicyExists(p.key));
                }
                self.policies.insert(p.key, p.clone());
            }
            Step::UpdatePolicy(p) => match self.policies.get_mut(&p.key) {
                Some(have) => *have = p.clone(),
                None => return Err(ApplyError::PolicyMissing(p.key)),
            },
            Step::DeletePolicy(k) => {
                if self.policies.remove(k).is_none() {
                    return Err(ApplyError::PolicyMissing(*k));
                }
            }
            Step::AddRoute(r) => {
                if self.routes.contains_key(&r.dst) {
                    return Err(ApplyError::RouteExists(r.dst));
                }
                self.routes.insert(r.dst, *r);
            }
            // `ip route replace` adds a missing route too
            Step::ReplaceRoute(r) => {
                self.routes.insert(r.dst, *r);
            }
            Step::DeleteRoute(d) => {
                if self.routes.remove(d).is_none() {
                    return Err(ApplyError::RouteMissing(*d));
                }
            }
        }
        Ok(())
    }

    /// Applies a plan's steps in order, stopping at the first refused one (the steps before it
    /// stay applied, as in the kernel).
    pub fn apply(&mut self, plan: &Plan) -> Result<(), ApplyError> {
        plan.steps.iter().try_for_each(|s| self.apply_step(s))
    }
}

/// What a datapath holds for one peer node, in a form a person (or a benchmark) can check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRecord {
    /// The peer's node IP (the far end of the tunnel).
    pub node_ip: std::net::IpAddr,
    /// SPIs of the SAs from the peer, oldest first.
    pub inbound_spis: Vec<String>,
    /// SPIs of the SAs to the peer, oldest first; the kernel sends on the last one.
    pub outbound_spis: Vec<String>,
    /// Destinations whose outbound traffic must go through the tunnel to this peer (its pod
    /// CIDRs, and its node IP for traffic from local pods).
    pub encrypted_to: Vec<IpNet>,
}

/// Groups a datapath's SAs and required outbound policies by peer node, ordered by node IP.
pub fn peer_records(state: &DatapathState) -> Vec<PeerRecord> {
    use crate::model::{Direction, Flow};
    let mut peers: std::collections::BTreeMap<std::net::IpAddr, PeerRecord> = Default::default();
    for key in &state.state_order {
        let Some(s) = state.states.get(key) else {
            continue;
        };
        let rec = record_for(&mut peers, s.peer);
        let spi = format!("{:#010x}", s.key.spi);
        match s.flow {
            Flow::Inbound => rec.inbound_spis.push(spi),
            Flow::Outbound => rec.outbound_spis.push(spi),
        }
    }
    for p in state.policies.values() {
        let Some(t) = p.template.filter(|t| !t.optional) else {
            continue;
        };
        if p.key.dir != Direction::Out {
            continue;
        }
        let rec = record_for(&mut peers, t.dst);
        rec.encrypted_to.push(p.key.dst);
    }
    peers.into_values().collect()
}

fn record_for(
    peers: &mut std::collections::BTreeMap<std::net::IpAddr, PeerRecord>,
    node_ip: std::net::IpAddr,
) -> &mut PeerRecord {
    peers.entry(node_ip).or_insert_with(|| PeerRecord {
        node_ip,
        inbound_spis: Vec::new(),
        outbound_spis: Vec::new(),
        encrypted_to: Vec::new(),
    })
}
