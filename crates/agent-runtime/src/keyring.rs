//! The agent's keyring: for every peer, the SAs that the key exchange has installed, in the order the
//! protocol installed them, and when each old one may go. Pure: time is passed in.
//!
//! The protocol's make-before-break order maps onto it directly:
//! - `install_inbound`: a new inbound SA joins the peer's list (the kernel accepts on every one);
//! - `switch_outbound`: a new outbound SA joins; the newest outbound is the one the kernel sends on;
//! - `established`: the pair is complete; every older SA of that peer retires after the grace period.
//!
//! An inbound SA whose handshake never completed (a lost confirm) is kept until a later pair with that
//! peer is established: the initiator may already be sending on it.
//!
//! `burn`: SAs of the peer vanished from the kernel while wanted (a flush, another daemon, a hard
//! expiry). Their keys are burned: they leave the ring for good (their SPIs stay reserved), the pair
//! is no longer established, and the peer is due for a fresh handshake at once, whichever side of the
//! pair this node is, until a new pair is established.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cipherlane_core::{Epoch, NodeName, SaDirection, SaPair, Spi};
use cipherlane_datapath::PeerKeys;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    sa: SaDirection,
    epoch: Epoch,
    /// When set, the SA is removed at this instant.
    retire_at: Option<Instant>,
}

/// What is known of one peer's SAs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRing {
    inbound: Vec<Entry>,
    outbound: Vec<Entry>,
    established: Option<(SaPair, Instant)>,
    /// Since when SAs of this pair are burned and a fresh handshake is due.
    burned_at: Option<Instant>,
}

impl PeerRing {
    /// The pair currently in use, with when it was established.
    pub fn current(&self) -> Option<&(SaPair, Instant)> {
        self.established.as_ref()
    }
}

/// Every peer's SAs.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    peers: BTreeMap<NodeName, PeerRing>,
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// A new inbound SA from `peer` exists (the kernel must accept on it before the peer uses it).
    pub fn install_inbound(&mut self, peer: &NodeName, epoch: Epoch, sa: &SaDirection) {
        let ring = self.peers.entry(peer.clone()).or_default();
        if !ring.inbound.iter().any(|e| e.sa.spi == sa.spi) {
            ring.inbound.push(Entry {
                sa: sa.clone(),
                epoch,
                retire_at: None,
            });
        }
    }

    /// Send to `peer` on `sa` from now on (it is appended; the newest outbound SA wins).
    pub fn switch_outbound(&mut self, peer: &NodeName, epoch: Epoch, sa: &SaDirection) {
        let ring = self.peers.entry(peer.clone()).or_default();
        ring.outbound.retain(|e| e.sa.spi != sa.spi);
        ring.outbound.push(Entry {
            sa: sa.clone(),
            epoch,
            retire_at: None,
        });
    }

    /// The pair with `peer` is complete: older SAs retire at `now + grace`.
    pub fn established(&mut self, peer: &NodeName, pair: &SaPair, now: Instant, grace: Duration) {
        let ring = self.peers.entry(peer.clone()).or_default();
        let retire = now + grace;
        // both SAs of the pair must be present (a restart may have adopted them from the kernel)
        if !ring.inbound.iter().any(|e| e.sa.spi == pair.inbound.spi) {
            ring.inbound.push(Entry {
                sa: pair.inbound.clone(),
                epoch: pair.epoch,
                retire_at: None,
            });
        }
        if ring.outbound.last().map(|e| e.sa.spi) != Some(pair.outbound.spi) {
            ring.outbound.retain(|e| e.sa.spi != pair.outbound.spi);
            ring.outbound.push(Entry {
                sa: pair.outbound.clone(),
                epoch: pair.epoch,
                retire_at: None,
            });
        }
        for e in ring.inbound.iter_mut().chain(ring.outbound.iter_mut()) {
            let current = e.sa.spi == pair.inbound.spi || e.sa.spi == pair.outbound.spi;
            if current {
                e.retire_at = None;
            } else if e.retire_at.is_none() {
                e.retire_at = Some(retire);
            }
        }
        ring.established = Some((pair.clone(), now));
        ring.burned_at = None;
    }

    /// SAs with `peer` (by SPI) vanished from the kernel: drops them from the ring for good, ends
    /// the established pair and marks the peer due for a fresh handshake. Their SPIs are not
    /// handed back (a new handshake takes new ones). Returns whether the peer was known.
    pub fn burn(&mut self, peer: &NodeName, spis: &[Spi], now: Instant) -> bool {
        let Some(ring) = self.peers.get_mut(peer) else {
            return false;
        };
        ring.inbound.retain(|e| !spis.contains(&e.sa.spi));
        ring.outbound.retain(|e| !spis.contains(&e.sa.spi));
        ring.established = None;
        ring.burned_at.get_or_insert(now);
        true
    }

    /// Since when the pair with `peer` has burned SAs and waits for a fresh handshake.
    pub fn burned_since(&self, peer: &NodeName) -> Option<Instant> {
        self.peers.get(peer).and_then(|r| r.burned_at)
    }

    /// Removes every SA whose grace period is over; returns the removed inbound SPIs (this node
    /// chose them, so it may hand them out again once the kernel no longer holds them).
    pub fn expire(&mut self, now: Instant) -> Vec<Spi> {
        let mut released = Vec::new();
        for ring in self.peers.values_mut() {
            released.extend(
                ring.inbound
                    .iter()
                    .filter(|e| e.retire_at.is_some_and(|t| t <= now))
                    .map(|e| e.sa.spi),
            );
            ring.inbound.retain(|e| e.retire_at.is_none_or(|t| t > now));
            ring.outbound
                .retain(|e| e.retire_at.is_none_or(|t| t > now));
        }
        released
    }

    /// The earliest pending retirement, for the caller's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|r| r.inbound.iter().chain(r.outbound.iter()))
            .filter_map(|e| e.retire_at)
            .min()
    }

    /// Forgets a peer entirely (removed from the cluster, or revoked): its SAs go at the next apply.
    /// Returns the peer's inbound SPIs.
    pub fn remove_peer(&mut self, peer: &NodeName) -> Option<Vec<Spi>> {
        self.peers
            .remove(peer)
            .map(|r| r.inbound.iter().map(|e| e.sa.spi).collect())
    }

    /// The SAs to program for `peer`, oldest first, as the datapath wants them.
    pub fn keys(&self, peer: &NodeName) -> Option<PeerKeys> {
        let ring = self.peers.get(peer)?;
        let keys = PeerKeys {
            inbound: ring.inbound.iter().map(|e| e.sa.clone()).collect(),
            outbound: ring.outbound.iter().map(|e| e.sa.clone()).collect(),
        };
        (!keys.is_empty()).then_some(keys)
    }

    /// The established pair with `peer`, if any.
    pub fn current(&self, peer: &NodeName) -> Option<&(SaPair, Instant)> {
        self.peers.get(peer).and_then(PeerRing::current)
    }

    /// Peers that have any SA.
    pub fn peers(&self) -> impl Iterator<Item = &NodeName> {
        self.peers.keys()
    }

    /// The epoch of the newest outbound SA per peer.
    pub fn outbound_epoch(&self, peer: &NodeName) -> Option<Epoch> {
        self.peers
            .get(peer)
            .and_then(|r| r.outbound.last())
            .map(|e| e.epoch)
    }

    /// Seeds a peer from SAs adopted from the kernel at start (no retirements pending).
    pub fn adopt(&mut self, peer: &NodeName, keys: &PeerKeys, epoch: Epoch) {
        let ring = self.peers.entry(peer.clone()).or_default();
        for sa in &keys.inbound {
            if !ring.inbound.iter().any(|e| e.sa.spi == sa.spi) {
                ring.inbound.push(Entry {
                    sa: sa.clone(),
                    epoch,
                    retire_at: None,
                });
            }
        }
        for sa in &keys.outbound {
            if !ring.outbound.iter().any(|e| e.sa.spi == sa.spi) {
                ring.outbound.push(Entry {
                    sa: sa.clone(),
                    epoch,
                    retire_at: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipherlane_core::{SaKey, Suite};

    fn dir(spi: u32) -> SaDirection {
        SaDirection {
            spi: Spi::new(spi).expect("valid"),
            key: SaKey::new(Suite::AesGcm128, vec![spi as u8; 20]).expect("valid"),
        }
    }
    fn pair(epoch: u64, inb: u32, out: u32) -> SaPair {
        SaPair {
            epoch: Epoch(epoch),
            suite: Suite::AesGcm128,
            inbound: dir(inb),
            outbound: dir(out),
        }
    }
    fn spis(v: &[SaDirection]) -> Vec<u32> {
        v.iter().map(|d| d.spi.value()).collect()
    }
    fn peer() -> NodeName {
        NodeName::new("node-b").expect("valid")
    }

    #[test]
    fn a_rotation_keeps_old_sas_for_the_grace_period_then_drops_them() {
        let mut k = Keyring::new();
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        k.install_inbound(&peer(), Epoch(1), &dir(0x1001));
        k.switch_outbound(&peer(), Epoch(1), &dir(0x2001));
        k.established(&peer(), &pair(1, 0x1001, 0x2001), t0, grace);
        // rotation: inbound first, then outbound, then established
        k.install_inbound(&peer(), Epoch(2), &dir(0x1002));
        let mid = k.keys(&peer()).expect("keys");
        assert_eq!(spis(&mid.inbound), vec![0x1001, 0x1002]);
        assert_eq!(
            spis(&mid.outbound),
            vec![0x2001],
            "outbound not switched yet"
        );
        k.switch_outbound(&peer(), Epoch(2), &dir(0x2002));
        k.established(&peer(), &pair(2, 0x1002, 0x2002), t0, grace);
        let during = k.keys(&peer()).expect("keys");
        assert_eq!(spis(&during.inbound), vec![0x1001, 0x1002]);
        assert_eq!(
            spis(&during.outbound),
            vec![0x2001, 0x2002],
            "newest outbound last"
        );
        assert!(k.expire(t0 + Duration::from_secs(29)).is_empty());
        let released: Vec<u32> = k
            .expire(t0 + Duration::from_secs(31))
            .iter()
            .map(|s| s.value())
            .collect();
        assert_eq!(released, vec![0x1001], "the old inbound SPI is free again");
        let after = k.keys(&peer()).expect("keys");
        assert_eq!(spis(&after.inbound), vec![0x1002]);
        assert_eq!(spis(&after.outbound), vec![0x2002]);
        assert_eq!(k.next_expiry(), None);
    }

    #[test]
    fn an_inbound_sa_whose_confirm_was_lost_is_kept_until_a_later_pair_is_established() {
        let mut k = Keyring::new();
        let t0 = Instant::now();
        k.established(
            &peer(),
            &pair(1, 0x1001, 0x2001),
            t0,
            Duration::from_secs(1),
        );
        k.install_inbound(&peer(), Epoch(2), &dir(0x1002)); // responder: no confirm ever arrives
        assert!(k.expire(t0 + Duration::from_secs(3600)).is_empty());
        assert_eq!(
            spis(&k.keys(&peer()).expect("keys").inbound),
            vec![0x1001, 0x1002]
        );
        assert_eq!(
            k.current(&peer()).map(|(p, _)| p.epoch),
            Some(Epoch(1)),
            "still on the old pair"
        );
    }

    #[test]
    fn a_removed_peer_has_no_keys() {
        let mut k = Keyring::new();
        k.established(
            &peer(),
            &pair(1, 0x1001, 0x2001),
            Instant::now(),
            Duration::ZERO,
        );
        assert_eq!(
            k.remove_peer(&peer()).map(|v| v.len()),
            Some(1),
            "its inbound SPI is released"
        );
        assert_eq!(k.keys(&peer()), None);
    }

    #[test]
    fn burned_sas_leave_the_ring_and_the_peer_waits_for_a_fresh_pair() {
        let mut k = Keyring::new();
        let t0 = Instant::now();
        k.established(
            &peer(),
            &pair(1, 0x1001, 0x2001),
            t0,
            Duration::from_secs(5),
        );
        let t1 = t0 + Duration::from_secs(60);
        assert!(k.burn(&peer(), &[Spi::new(0x1001).expect("spi")], t1));
        assert_eq!(
            k.current(&peer()),
            None,
            "the pair is no longer established"
        );
        assert_eq!(k.burned_since(&peer()), Some(t1));
        let left = k
            .keys(&peer())
            .expect("the outbound SA is still in the kernel");
        assert!(left.inbound.is_empty());
        assert_eq!(spis(&left.outbound), vec![0x2001]);
        // a second loss before the re-key keeps the first instant
        k.burn(
            &peer(),
            &[Spi::new(0x2001).expect("spi")],
            t1 + Duration::from_secs(1),
        );
        assert_eq!(k.burned_since(&peer()), Some(t1));
        assert_eq!(k.keys(&peer()), None);
        assert!(
            k.expire(t1 + Duration::from_secs(3600)).is_empty(),
            "burned SPIs are not released"
        );
        // the fresh handshake
        k.install_inbound(&peer(), Epoch(1), &dir(0x1003));
        k.switch_outbound(&peer(), Epoch(1), &dir(0x2003));
        k.established(
            &peer(),
            &pair(1, 0x1003, 0x2003),
            t1 + Duration::from_secs(2),
            Duration::from_secs(5),
        );
        assert_eq!(k.burned_since(&peer()), None);
        assert!(k.current(&peer()).is_some());
        assert!(
            !k.burn(&NodeName::new("node-z").expect("valid"), &[], t1),
            "unknown peer"
        );
    }

    #[test]
    fn adopted_sas_are_kept_and_not_duplicated_when_the_pair_is_reestablished() {
        let mut k = Keyring::new();
        let adopted = PeerKeys {
            inbound: vec![dir(0x1001)],
            outbound: vec![dir(0x2001)],
        };
        k.adopt(&peer(), &adopted, Epoch(1));
        k.established(
            &peer(),
            &pair(1, 0x1001, 0x2001),
            Instant::now(),
            Duration::ZERO,
        );
        assert_eq!(k.keys(&peer()), Some(adopted));
    }
}
