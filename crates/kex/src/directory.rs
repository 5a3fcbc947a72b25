//! What the key exchange needs to know about peers, as a trait the agent fills from the API
//! server (CipherlaneNode objects for identity keys, RotationPolicy for epoch, suites and
//! revocations). An in-memory implementation serves tests and the benchmark.
//!
//! The directory is the root of trust: a peer is whoever it says it is.

use std::collections::HashMap;
use std::sync::RwLock;

use cipherlane_core::{Epoch, KexGroup, NodeName, Suite};

use crate::negotiate::KeyExchangePolicy;

/// The effective policy of one pair of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairPolicy {
    /// The current epoch; handshakes at an older one are refused.
    pub epoch: Epoch,
    /// The suite an initiator proposes.
    pub suite: Suite,
    /// Suites a responder accepts (the policy's suite; with FIPS on, AES-GCM only).
    pub allowed: Vec<Suite>,
    /// Which key-exchange group the pair prefers, and whether only post-quantum ones will do.
    pub key_exchange: KeyExchangePolicy,
}

impl PairPolicy {
    /// A policy that proposes and allows exactly one suite: no downgrade is possible. The key
    /// exchange is the default (hybrid where both ends support it).
    pub fn only(epoch: Epoch, suite: Suite) -> PairPolicy {
        PairPolicy {
            epoch,
            suite,
            allowed: vec![suite],
            key_exchange: KeyExchangePolicy::default(),
        }
    }
}

/// One peer as the directory knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer's Ed25519 identity public key.
    pub identity_key: [u8; 32],
    /// The peer is revoked: no SA may be made with it.
    pub revoked: bool,
    /// The effective policy for the pair (local node, this peer).
    pub policy: PairPolicy,
    /// The key-exchange groups the peer publishes (`CipherlaneNode.spec.keyExchangeGroups`);
    /// `None` for a node of the previous release, which speaks version 1 (X25519) only.
    pub groups: Option<Vec<KexGroup>>,
}

/// Name → identity key, revocation and pair policy. Implemented by the agent over its watches.
pub trait PeerDirectory: Send + Sync {
    /// The peer's entry, or `None` if the API server does not know the node.
    fn lookup(&self, peer: &NodeName) -> Option<PeerEntry>;
}

/// A directory held in memory, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct InMemoryDirectory {
    peers: RwLock<HashMap<NodeName, PeerEntry>>,
}

impl InMemoryDirectory {
    pub fn new() -> InMemoryDirectory {
        InMemoryDirectory::default()
    }

    /// Adds or replaces a peer.
    pub fn insert(&self, peer: NodeName, entry: PeerEntry) {
        self.peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(peer, entry);
    }

    /// Changes a known peer in place; returns whether it was known.
    pub fn update(&self, peer: &NodeName, change: impl FnOnce(&mut PeerEntry)) -> bool {
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match peers.get_mut(peer) {
            Some(entry) => {
                change(entry);
                true
            }
            None => false,
        }
    }

    /// Forgets every peer (before a full re-list).
    pub fn clear(&self) {
        self.peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    pub fn remove(&self, peer: &NodeName) {
        self.peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(peer);
    }
}

impl PeerDirectory for InMemoryDirectory {
    fn lookup(&self, peer: &NodeName) -> Option<PeerEntry> {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(peer)
            .cloned()
    }
}
