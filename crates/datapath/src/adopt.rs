//! Adoption after a restart: recover each peer's SAs from what the kernel holds, so the agent
//! can keep using them (no SA churn, no packet loss) until its next rotation.
//!
//! Key material is never stored on disk; the kernel is the only place it survives an agent
//! restart, and only root can read it back. Pure: takes an observed snapshot.

use std::collections::BTreeMap;

use cipherlane_core::{NodeName, PeerSpec, SaDirection, Spi};

use crate::layout::PeerKeys;
use crate::model::{DatapathState, Flow};

/// The SAs the kernel holds for each known peer, oldest first, as the layout wants them back.
/// Peers without any SA are absent from the result.
pub fn adopt_keys(observed: &DatapathState, peers: &[PeerSpec]) -> BTreeMap<NodeName, PeerKeys> {
    let mut out: BTreeMap<NodeName, PeerKeys> = BTreeMap::new();
    for key in &observed.state_order {
        let Some(state) = observed.states.get(key) else {
            continue;
        };
        let Some(peer) = peers.iter().find(|p| p.node_ip == state.peer) else {
            continue;
        };
        let Ok(spi) = Spi::new(state.key.spi) else {
            continue;
        };
        let dir = SaDirection {
            spi,
            key: state.aead.clone(),
        };
        let keys = out.entry(peer.name.clone()).or_default();
        match state.flow {
            Flow::Inbound => keys.inbound.push(dir),
            Flow::Outbound => keys.outbound.push(dir),
        }
    }
    out
}
