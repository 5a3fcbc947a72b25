//! Two endpoints complete handshakes in memory with a manual clock; every refusal is checked
//! for its typed error and its counter.

use std::sync::Arc;
use std::time::Duration;

use cipherlane_core::{Epoch, KexGroup, NodeName, SaPair, Suite};
use cipherlane_kex::wire::{Confirm, Init, Message, Response, Version};
use cipherlane_kex::{
    Action, Endpoint, GroupRefusal, InMemoryDirectory, KexConfig, KexError, KeyExchangePolicy,
    ManualClock, PairPolicy, PeerEntry, RejectionKind, SUPPORTED_GROUPS,
};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

const T0: u64 = 1_800_000_000_000;

fn name(s: &str) -> NodeName {
    NodeName::new(s).expect("valid node name")
}

fn keypair() -> Ed25519KeyPair {
    Ed25519KeyPair::from_pkcs8(&pkcs8()).expect("parse")
}

fn pkcs8() -> Vec<u8> {
    let rng = SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .expect("keygen")
        .as_ref()
        .to_vec()
}

fn public(k: &Ed25519KeyPair) -> [u8; 32] {
    k.public_key().as_ref().try_into().expect("32 bytes")
}

struct Node {
    ep: Endpoint,
    dir: Arc<InMemoryDirectory>,
    key: [u8; 32],
    /// The identity key, to sign messages an attacker cannot (tests of authenticated peers that
    /// misbehave).
    pkcs8: Vec<u8>,
}

struct Lab {
    clock: Arc<ManualClock>,
    a: Node,
    b: Node,
}

fn node(n: &str, clock: &Arc<ManualClock>, config: KexConfig) -> Node {
    let pkcs8 = pkcs8();
    let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("parse");
    let key = public(&kp);
    let dir = Arc::new(InMemoryDirectory::new());
    let ep = Endpoint::new(
        name(n),
        kp,
        dir.clone(),
        clock.clone(),
        Arc::new(SystemRandom::new()),
        config,
    );
    Node {
        ep,
        dir,
        key,
        pkcs8,
    }
}

fn entry(key: [u8; 32], policy: PairPolicy) -> PeerEntry {
    PeerEntry {
        identity_key: key,
        revoked: false,
        policy,
        groups: Some(SUPPORTED_GROUPS.to_vec()),
    }
}

fn lab_with(config: KexConfig) -> Lab {
    let clock = Arc::new(ManualClock::new(T0));
    let a = node("node-a", &clock, config.clone());
    let b = node("node-b", &clock, config);
    let policy = PairPolicy::only(Epoch(3), Suite::AesGcm128);
    a.dir.insert(name("node-b"), entry(b.key, policy.clone()));
    b.dir.insert(name("node-a"), entry(a.key, policy));
    Lab { clock, a, b }
}

fn lab() -> Lab {
    lab_with(KexConfig::default())
}

fn sent(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Send(b) => Some(b.clone()),
            _ => None,
        })
        .expect("a Send action")
}

fn established(actions: &[Action]) -> SaPair {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Established { pair, .. } => Some(pair.clone()),
            _ => None,
        })
        .expect("an Established action")
}

/// Runs a full handshake a → b; returns (a's pair, b's pair).
fn handshake(lab: &Lab) -> (SaPair, SaPair) {
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let (resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    let a2 = init.on_response(&lab.a.ep, &sent(&b1)).expect("response");
    let b2 = resp.on_confirm(&lab.b.ep, &sent(&a2)).expect("confirm");
    (established(&a2), established(&b2))
}

#[test]
fn two_endpoints_complete_a_handshake_and_derive_mirrored_keys() {
    let lab = lab();
    let (a, b) = handshake(&lab);
    assert_eq!(a.inbound, b.outbound, "b→a SA must match on both sides");
    assert_eq!(a.outbound, b.inbound, "a→b SA must match on both sides");
    assert_ne!(
        a.inbound.key, a.outbound.key,
        "each direction has its own key"
    );
    assert_ne!(a.inbound.spi, a.outbound.spi);
    assert_eq!((a.epoch, a.suite), (Epoch(3), Suite::AesGcm128));
    assert_eq!(a.inbound.key.bytes().len(), 20);
    assert_eq!(lab.a.ep.metrics().established_as_initiator(), 1);
    assert_eq!(lab.b.ep.metrics().established_as_responder(), 1);
}

#[test]
fn actions_come_in_protocol_order_install_inbound_before_switching_outbound() {
    let lab = lab();
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    assert!(matches!(a1.as_slice(), [Action::Send(_)]));
    let (resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    assert!(matches!(
        b1.as_slice(),
        [Action::InstallInbound { .. }, Action::Send(_)]
    ));
    let a2 = init.on_response(&lab.a.ep, &sent(&b1)).expect("response");
    assert!(matches!(
        a2.as_slice(),
        [
            Action::InstallInbound { .. },
            Action::SwitchOutbound { .. },
            Action::Send(_),
            Action::Established { .. }
        ]
    ));
    let b2 = resp.on_confirm(&lab.b.ep, &sent(&a2)).expect("confirm");
    assert!(matches!(
        b2.as_slice(),
        [Action::SwitchOutbound { .. }, Action::Established { .. }]
    ));
}

#[test]
fn keys_are_sized_for_every_suite() {
    for suite in Suite::ALL {
        let lab = lab();
        for n in [&lab.a, &lab.b] {
            let peer = if n.ep.local() == &name("node-a") {
                "node-b"
            } else {
                "node-a"
            };
            n.dir.update(&name(peer), |e| {
                e.policy = PairPolicy::only(Epoch(3), suite)
            });
        }
        let (a, b) = handshake(&lab);
        assert_eq!(a.suite, suite);
        assert_eq!(a.inbound.key.bytes().len(), suite.keymat_len());
        assert_eq!(a.outbound, b.inbound);
    }
}

#[test]
fn re_keying_an_established_pair_gives_fresh_keys_and_spis_at_the_new_epoch() {
    let lab = lab();
    let (first_a, first_b) = handshake(&lab);
    lab.clock.advance(Duration::from_secs(3600));
    for (dir, peer) in [(&lab.a.dir, "node-b"), (&lab.b.dir, "node-a")] {
        dir.update(&name(peer), |e| e.policy.epoch = Epoch(4));
    }
    let (second_a, second_b) = handshake(&lab);
    assert_eq!(second_a.epoch, Epoch(4));
    assert_eq!(second_a.inbound, second_b.outbound);
    assert_eq!(second_a.outbound, second_b.inbound);
    assert_ne!(second_a.inbound.key, first_a.inbound.key);
    assert_ne!(second_a.outbound.key, first_a.outbound.key);
    assert_ne!(
        second_a.inbound.spi, first_a.inbound.spi,
        "old and new SA coexist"
    );
    assert_ne!(
        second_b.inbound.spi, first_b.inbound.spi,
        "old and new SA coexist"
    );
    // Re-keying at the same epoch (a volume-triggered rekey) works too.
    let (third_a, _) = handshake(&lab);
    assert_ne!(third_a.inbound.key, second_a.inbound.key);
}

fn assert_refused(err: KexError, kind: RejectionKind, ep: &Endpoint) {
    assert_eq!(err.kind(), kind, "{err}");
    assert!(ep.metrics().rejections(kind) >= 1, "{kind:?} not counted");
    assert!(!err.to_string().is_empty());
}

#[test]
fn an_init_signed_with_the_wrong_key_is_refused_as_bad_signature() {
    let lab = lab();
    lab.b
        .dir
        .update(&name("node-a"), |e| e.identity_key = public(&keypair()));
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("wrong key");
    assert_refused(err, RejectionKind::BadSignature, &lab.b.ep);
}

#[test]
fn a_response_signed_with_the_wrong_key_is_refused_by_the_initiator() {
    let lab = lab();
    lab.a
        .dir
        .update(&name("node-b"), |e| e.identity_key = public(&keypair()));
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let (_resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    let err = init
        .on_response(&lab.a.ep, &sent(&b1))
        .expect_err("wrong key");
    assert_refused(err, RejectionKind::BadSignature, &lab.a.ep);
}

#[test]
fn a_tampered_init_fails_its_signature() {
    let lab = lab();
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let mut bytes = sent(&a1);
    let spi_at = bytes.len() - 64 - 8 - 4;
    bytes[spi_at] ^= 0x40;
    let err = lab.b.ep.respond(&bytes).expect_err("tampered");
    assert_refused(err, RejectionKind::BadSignature, &lab.b.ep);
}

#[test]
fn an_init_from_an_unknown_node_is_refused() {
    let lab = lab();
    lab.b.dir.remove(&name("node-a"));
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("unknown");
    assert_refused(err, RejectionKind::UnknownNode, &lab.b.ep);
    let err = lab
        .a
        .ep
        .initiate(&name("node-z"))
        .expect_err("unknown peer");
    assert_refused(err, RejectionKind::UnknownNode, &lab.a.ep);
}

#[test]
fn a_revoked_node_can_neither_initiate_nor_be_initiated_with() {
    let lab = lab();
    lab.b.dir.update(&name("node-a"), |e| e.revoked = true);
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("revoked");
    assert_refused(err, RejectionKind::Revoked, &lab.b.ep);
    let err = lab.b.ep.initiate(&name("node-a")).expect_err("revoked");
    assert_refused(err, RejectionKind::Revoked, &lab.b.ep);
}

#[test]
fn a_replayed_init_is_refused_while_the_original_succeeds() {
    let lab = lab();
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let bytes = sent(&a1);
    lab.b.ep.respond(&bytes).expect("first time");
    lab.clock.advance(Duration::from_secs(10));
    let err = lab.b.ep.respond(&bytes).expect_err("replay");
    assert_refused(err, RejectionKind::Replay, &lab.b.ep);
    assert!(matches!(
        lab.b.ep.respond(&bytes),
        Err(KexError::Replay { .. })
    ));
}

#[test]
fn an_init_older_than_the_window_is_refused_even_after_its_nonce_was_forgotten() {
    let lab = lab();
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let bytes = sent(&a1);
    lab.b.ep.respond(&bytes).expect("first time");
    lab.clock.advance(Duration::from_secs(3600));
    let err = lab.b.ep.respond(&bytes).expect_err("stale");
    assert!(matches!(err, KexError::OutsideWindow { .. }), "{err}");
    assert_refused(err, RejectionKind::Replay, &lab.b.ep);
}

#[test]
fn a_node_refuses_to_handshake_with_itself_and_refuses_its_own_reflected_init() {
    let lab = lab();
    let err = lab.a.ep.initiate(&name("node-a")).expect_err("self");
    assert_refused(err, RejectionKind::Reflection, &lab.a.ep);
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    // An attacker reflects a's init (addressed to b) back to a.
    let err = lab.a.ep.respond(&sent(&a1)).expect_err("reflected");
    assert_refused(err, RejectionKind::Reflection, &lab.a.ep);
}

#[test]
fn an_init_addressed_to_another_node_is_refused_as_misdirected() {
    let lab = lab();
    let c = node("node-c", &lab.clock, KexConfig::default());
    c.dir.insert(
        name("node-a"),
        entry(lab.a.key, PairPolicy::only(Epoch(3), Suite::AesGcm128)),
    );
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = c.ep.respond(&sent(&a1)).expect_err("misdirected");
    assert_refused(err, RejectionKind::Misdirected, &c.ep);
}

#[test]
fn an_init_at_an_older_epoch_than_the_policy_is_refused() {
    let lab = lab();
    lab.b
        .dir
        .update(&name("node-a"), |e| e.policy.epoch = Epoch(4));
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("stale epoch");
    assert!(matches!(
        err,
        KexError::StaleEpoch {
            offered: Epoch(3),
            current: Epoch(4),
            ..
        }
    ));
    assert_refused(err, RejectionKind::StaleEpoch, &lab.b.ep);
}

#[test]
fn a_suite_the_policy_does_not_allow_is_refused_including_a_downgrade() {
    let lab = lab();
    // b's policy moved to AES-GCM-256; a (lagging, or malicious) still proposes AES-GCM-128.
    lab.b.dir.update(&name("node-a"), |e| {
        e.policy = PairPolicy::only(Epoch(3), Suite::AesGcm256)
    });
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("downgrade");
    assert_refused(err, RejectionKind::SuiteNotAllowed, &lab.b.ep);
    drop(init); // refused: a's handshake is over
                // FIPS: chacha20 is not allowed even when proposed.
    lab.b.dir.update(&name("node-a"), |e| {
        e.policy.allowed = vec![Suite::AesGcm128, Suite::AesGcm256]
    });
    lab.a.dir.update(&name("node-b"), |e| {
        e.policy = PairPolicy::only(Epoch(3), Suite::Chacha20Poly1305)
    });
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("not FIPS");
    assert_refused(err, RejectionKind::SuiteNotAllowed, &lab.b.ep);
}

#[test]
fn a_man_in_the_middle_cannot_downgrade_the_suite_without_breaking_the_signature() {
    let lab = lab();
    for (dir, peer) in [(&lab.a.dir, "node-b"), (&lab.b.dir, "node-a")] {
        dir.update(&name(peer), |e| {
            e.policy = PairPolicy {
                epoch: Epoch(3),
                suite: Suite::AesGcm256,
                allowed: vec![Suite::AesGcm128, Suite::AesGcm256],
                key_exchange: KeyExchangePolicy::default(),
            }
        });
    }
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let mut init = Init::decode(&sent(&a1)).expect("decodes");
    init.suite = Suite::AesGcm128;
    let err = lab.b.ep.respond(&init.encode()).expect_err("downgraded");
    assert_refused(err, RejectionKind::BadSignature, &lab.b.ep);
}

#[test]
fn malformed_and_oversized_messages_are_refused_without_panicking() {
    let lab = lab();
    for bytes in [
        vec![],
        vec![1],
        vec![1, 1, 0],
        vec![9, 9, 9],
        vec![1u8; 600],
    ] {
        let err = lab.b.ep.respond(&bytes).expect_err("malformed");
        assert_refused(err, RejectionKind::Malformed, &lab.b.ep);
    }
    let err = lab.b.ep.respond(&vec![1u8; 5000]).expect_err("oversized");
    assert_refused(err, RejectionKind::Oversized, &lab.b.ep);
    // A confirm where an init belongs, and an init where a response belongs.
    let confirm = Message::Confirm(Confirm {
        version: Version::V2,
        mac: [0; 32],
    })
    .encode();
    assert_eq!(
        lab.b.ep.respond(&confirm).map(|_| ()).map_err(|e| e.kind()),
        Err(RejectionKind::Malformed)
    );
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = init
        .on_response(&lab.a.ep, &sent(&a1))
        .expect_err("wrong kind");
    assert_refused(err, RejectionKind::Malformed, &lab.a.ep);
}

#[test]
fn a_response_with_a_low_order_ephemeral_key_is_refused_as_malformed() {
    let lab = lab();
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let (_resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    let mut response = Response::decode(&sent(&b1)).expect("decodes");
    let n = response.share.len();
    response.share[n - 32..].fill(0); // the X25519 half
    let err = init
        .on_response(&lab.a.ep, &response.encode())
        .expect_err("low order");
    // The signature covers the ephemeral key, so the change is caught there first.
    assert_refused(err, RejectionKind::BadSignature, &lab.a.ep);
}

#[test]
fn a_confirm_with_a_wrong_mac_is_refused_and_the_responder_does_not_switch() {
    let lab = lab();
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let (resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    let a2 = init.on_response(&lab.a.ep, &sent(&b1)).expect("response");
    let mut confirm = sent(&a2);
    let last = confirm.len() - 1;
    confirm[last] ^= 1;
    let err = resp.on_confirm(&lab.b.ep, &confirm).expect_err("bad mac");
    assert_refused(err, RejectionKind::BadConfirm, &lab.b.ep);
    assert_eq!(lab.b.ep.metrics().established_as_responder(), 0);
}

#[test]
fn steps_that_miss_their_deadline_time_out() {
    let lab = lab();
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let (resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    lab.clock.advance(Duration::from_secs(6));
    let err = init.on_response(&lab.a.ep, &sent(&b1)).expect_err("late");
    assert_refused(err, RejectionKind::Timeout, &lab.a.ep);
    let err = resp.abandon(&lab.b.ep);
    assert_refused(err, RejectionKind::Timeout, &lab.b.ep);
}

#[test]
fn a_peer_over_its_rate_limit_is_refused_until_tokens_refill() {
    let lab = lab_with(KexConfig {
        peer_rate_per_second: 1.0,
        peer_rate_burst: 2,
        ..KexConfig::default()
    });
    handshake(&lab);
    handshake(&lab);
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("rate limited");
    assert_refused(err, RejectionKind::RateLimited, &lab.b.ep);
    drop(init); // refused: a's handshake is over
    lab.clock.advance(Duration::from_secs(1));
    handshake(&lab);
}

#[test]
fn the_concurrency_cap_refuses_handshakes_beyond_it_and_frees_slots_when_they_end() {
    let lab = lab_with(KexConfig {
        max_concurrent_handshakes: 2,
        ..KexConfig::default()
    });
    // one handshake per pair at a time: the cap is about different peers
    let policy = PairPolicy::only(Epoch(3), Suite::AesGcm128);
    for peer in ["node-c", "node-d"] {
        lab.a
            .dir
            .insert(name(peer), entry(public(&keypair()), policy.clone()));
    }
    let (i1, _) = lab.a.ep.initiate(&name("node-b")).expect("first");
    let (_i2, _) = lab.a.ep.initiate(&name("node-c")).expect("second");
    let err = lab
        .a
        .ep
        .initiate(&name("node-d"))
        .expect_err("over the cap");
    assert_refused(err, RejectionKind::Overloaded, &lab.a.ep);
    let _ = i1.abandon(&lab.a.ep);
    lab.a
        .ep
        .initiate(&name("node-d"))
        .expect("a slot was freed");
}

#[test]
fn a_pair_stays_claimed_until_the_caller_has_carried_out_the_last_actions() {
    let lab = lab();
    let (a, b) = (name("node-a"), name("node-b"));
    let (init, a1) = lab.a.ep.initiate(&b).expect("initiate");
    let (resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    let (a2, a_claim) = init
        .on_response_guarded(&lab.a.ep, &sent(&b1))
        .expect("response");
    let (_b2, b_claim) = resp
        .on_confirm_guarded(&lab.b.ep, &sent(&a2))
        .expect("confirm");
    // while the SAs are being installed and the pair established, no other handshake of the
    // pair starts or is answered on either side
    assert!(lab.a.ep.handshake_active(&b) && lab.b.ep.handshake_active(&a));
    let err = lab.b.ep.initiate(&a).expect_err("b's fallback must wait");
    assert_refused(err, RejectionKind::Collision, &lab.b.ep);
    drop(b_claim);
    let (other, b3) = lab.b.ep.initiate(&a).expect("b is done");
    if cipherlane_kex::initiates(&a, &b) {
        let err = lab
            .a
            .ep
            .respond(&sent(&b3))
            .expect_err("a is still finishing its own");
        assert_refused(err, RejectionKind::Collision, &lab.a.ep);
    }
    drop((other, a_claim));
    assert!(!lab.a.ep.handshake_active(&b) && !lab.b.ep.handshake_active(&a));
}

#[test]
fn crossing_handshakes_of_one_pair_leave_both_nodes_with_the_same_pair() {
    let lab = lab();
    let (a, b) = (name("node-a"), name("node-b"));
    // both nodes start at once (a fallback initiator and the pair's initiator)
    let (init_a, a1) = lab.a.ep.initiate(&b).expect("a starts");
    let (init_b, b1) = lab.b.ep.initiate(&a).expect("b starts");
    assert!(lab.a.ep.handshake_active(&b) && lab.b.ep.handshake_active(&a));
    let err = lab.a.ep.initiate(&b).expect_err("one handshake per pair");
    assert_refused(err, RejectionKind::Collision, &lab.a.ep);
    // the inits cross on the wire
    let at_b = lab.b.ep.respond(&sent(&a1));
    let at_a = lab.a.ep.respond(&sent(&b1));
    let a_is_initiator = cipherlane_kex::initiates(&a, &b);
    let (pair_a, pair_b) = if a_is_initiator {
        let err = at_a.expect_err("a, the pair's initiator, refuses b's init");
        assert_refused(err, RejectionKind::Collision, &lab.a.ep);
        drop(init_b); // b's own handshake is over (refused)
        let (resp, b2) = at_b.expect("b answers a's init");
        let a2 = init_a.on_response(&lab.a.ep, &sent(&b2)).expect("response");
        let b3 = resp.on_confirm(&lab.b.ep, &sent(&a2)).expect("confirm");
        (established(&a2), established(&b3))
    } else {
        let err = at_b.expect_err("b, the pair's initiator, refuses a's init");
        assert_refused(err, RejectionKind::Collision, &lab.b.ep);
        drop(init_a);
        let (resp, a2) = at_a.expect("a answers b's init");
        let b2 = init_b.on_response(&lab.b.ep, &sent(&a2)).expect("response");
        let a3 = resp.on_confirm(&lab.a.ep, &sent(&b2)).expect("confirm");
        (established(&a3), established(&b2))
    };
    assert_eq!(pair_a.inbound, pair_b.outbound);
    assert_eq!(pair_a.outbound, pair_b.inbound);
    assert!(!lab.a.ep.handshake_active(&b) && !lab.b.ep.handshake_active(&a));
    // and the pair is free for the next rotation
    handshake(&lab);
}

#[test]
fn every_rejection_kind_has_a_distinct_metric_label() {
    let labels: std::collections::HashSet<_> =
        RejectionKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(labels.len(), RejectionKind::ALL.len());
    let lab = lab();
    let _ = lab.b.ep.respond(&[]);
    let counts = lab.b.ep.metrics().rejection_counts();
    assert!(counts.contains(&("malformed", 1)), "{counts:?}");
}

// --- key-exchange groups (docs/protocol.md §4a) ---

/// Re-signs an init as its initiator would (an authenticated peer that misbehaves).
fn resign(init: &mut Init, signer: &Node) {
    let kp = Ed25519KeyPair::from_pkcs8(&signer.pkcs8).expect("parse");
    let h1 = cipherlane_kex::schedule::init_hash(init.version, &init.encode_unsigned());
    init.signature.copy_from_slice(
        kp.sign(&cipherlane_kex::schedule::init_signature_input(
            init.version,
            &h1,
        ))
        .as_ref(),
    );
}

fn set_policy(lab: &Lab, on_a: KeyExchangePolicy, on_b: KeyExchangePolicy) {
    lab.a
        .dir
        .update(&name("node-b"), |e| e.policy.key_exchange = on_a);
    lab.b
        .dir
        .update(&name("node-a"), |e| e.policy.key_exchange = on_b);
}

const CLASSICAL: KeyExchangePolicy = KeyExchangePolicy {
    preferred: KexGroup::X25519,
    strict: false,
};
const STRICT: KeyExchangePolicy = KeyExchangePolicy {
    preferred: KexGroup::X25519MlKem768,
    strict: true,
};

#[test]
fn two_new_nodes_key_with_the_hybrid_group_by_default_in_version_2() {
    let lab = lab();
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    assert_eq!(init.group(), KexGroup::X25519MlKem768);
    let bytes = sent(&a1);
    assert_eq!(bytes[0], 2, "version 2 on the wire");
    let decoded = Init::decode(&bytes).expect("decodes");
    assert_eq!(
        decoded.share.len(),
        1184 + 32,
        "ML-KEM-768 key then X25519 key"
    );
    let (resp, b1) = lab.b.ep.respond(&bytes).expect("respond");
    assert_eq!(resp.group(), KexGroup::X25519MlKem768);
    assert_eq!(
        Response::decode(&sent(&b1)).expect("decodes").share.len(),
        1088 + 32
    );
    let a2 = init.on_response(&lab.a.ep, &sent(&b1)).expect("response");
    let b2 = resp.on_confirm(&lab.b.ep, &sent(&a2)).expect("confirm");
    assert_eq!(established(&a2).outbound, established(&b2).inbound);
    for ep in [&lab.a.ep, &lab.b.ep] {
        assert_eq!(ep.metrics().established_with(KexGroup::X25519MlKem768), 1);
        assert_eq!(ep.metrics().established_with(KexGroup::X25519), 0);
    }
}

#[test]
fn a_peer_of_the_previous_release_is_keyed_with_version_1_and_x25519() {
    let lab = lab();
    // neither side's CipherlaneNode lists groups, as before this release
    lab.a.dir.update(&name("node-b"), |e| e.groups = None);
    lab.b.dir.update(&name("node-a"), |e| e.groups = None);
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    assert_eq!(init.group(), KexGroup::X25519);
    assert_eq!(sent(&a1)[0], 1, "version 1 on the wire");
    assert_eq!(sent(&a1).len(), 2 + 7 + 7 + 8 + 1 + 32 + 32 + 4 + 8 + 64);
    let (resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    assert_eq!(sent(&b1)[0], 1);
    let a2 = init.on_response(&lab.a.ep, &sent(&b1)).expect("response");
    let b2 = resp.on_confirm(&lab.b.ep, &sent(&a2)).expect("confirm");
    assert_eq!(established(&a2).inbound, established(&b2).outbound);
    assert_eq!(lab.a.ep.metrics().established_with(KexGroup::X25519), 1);
}

#[test]
fn a_man_in_the_middle_who_strips_the_hybrid_group_breaks_the_signature() {
    let lab = lab();
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let mut init = Init::decode(&sent(&a1)).expect("decodes");
    // strip the hybrid from the offer and swap in a classical share of the attacker's
    init.offered = vec![KexGroup::X25519.code()];
    init.group = KexGroup::X25519;
    init.share = vec![9; 32];
    let err = lab.b.ep.respond(&init.encode()).expect_err("stripped");
    assert_refused(err, RejectionKind::BadSignature, &lab.b.ep);
    // the same in a version-1 frame
    init.version = Version::V1;
    init.offered.clear();
    let err = lab
        .b
        .ep
        .respond(&init.encode())
        .expect_err("rewritten as v1");
    assert_refused(err, RejectionKind::BadSignature, &lab.b.ep);
}

#[test]
fn failed_hybrid_handshakes_never_make_the_initiator_fall_back_to_x25519() {
    let lab = lab();
    for _ in 0..3 {
        // an attacker drops every response: the initiator times out and tries again
        let (init, _) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
        assert_eq!(init.group(), KexGroup::X25519MlKem768);
        let _ = init.abandon(&lab.a.ep);
        // or answers with a refusal of its own making: nothing the network says is read
    }
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    assert_eq!(init.group(), KexGroup::X25519MlKem768);
    assert_eq!(sent(&a1)[0], 2);
}

#[test]
fn a_signed_classical_init_from_a_hybrid_capable_peer_is_refused_as_a_downgrade() {
    let lab = lab();
    // a (lagging, or subverted) prefers x25519; b's policy wants the hybrid both publish
    set_policy(&lab, CLASSICAL, KeyExchangePolicy::default());
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    assert_eq!(init.group(), KexGroup::X25519);
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("downgrade");
    assert!(
        matches!(
            &err,
            KexError::GroupNotAllowed {
                refusal: GroupRefusal::Downgrade {
                    offered: KexGroup::X25519,
                    expected: KexGroup::X25519MlKem768
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient(), "heals once the views agree");
    assert_refused(err, RejectionKind::GroupNotAllowed, &lab.b.ep);
    drop(init); // refused: a's handshake is over
                // the other way round is no downgrade: b prefers x25519 but takes the stronger hybrid
    set_policy(&lab, KeyExchangePolicy::default(), CLASSICAL);
    let (a, _) = handshake(&lab);
    assert_eq!(
        lab.b
            .ep
            .metrics()
            .established_with(KexGroup::X25519MlKem768),
        1
    );
    assert_eq!(a.epoch, Epoch(3));
}

#[test]
fn a_version_1_init_from_a_peer_that_publishes_groups_is_refused_as_a_mismatch() {
    let lab = lab();
    // a believes b is of the previous release; b knows a is not
    lab.a.dir.update(&name("node-b"), |e| e.groups = None);
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    assert_eq!(sent(&a1)[0], 1);
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("mismatch");
    assert!(err.to_string().contains("version-1 init"), "{err}");
    assert_refused(err, RejectionKind::GroupMismatch, &lab.b.ep);
}

#[test]
fn offered_groups_that_differ_from_the_published_ones_are_refused_both_ways() {
    let lab = lab();
    // b's directory: a publishes x25519 only; a's init offers the hybrid too
    lab.b
        .dir
        .update(&name("node-a"), |e| e.groups = Some(vec![KexGroup::X25519]));
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("init mismatch");
    assert!(
        matches!(
            err,
            KexError::GroupMismatch {
                message: "init",
                ..
            }
        ),
        "{err}"
    );
    assert_refused(err, RejectionKind::GroupMismatch, &lab.b.ep);
    // a's directory: b publishes both; b's response lists only the hybrid
    let lab = lab_with(KexConfig::default());
    let b = node(
        "node-b",
        &lab.clock,
        KexConfig {
            groups: vec![KexGroup::X25519MlKem768],
            ..KexConfig::default()
        },
    );
    let policy = PairPolicy::only(Epoch(3), Suite::AesGcm128);
    lab.a
        .dir
        .insert(name("node-b"), entry(b.key, policy.clone()));
    b.dir.insert(name("node-a"), entry(lab.a.key, policy));
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let (_resp, b1) = b.ep.respond(&sent(&a1)).expect("b answers");
    let err = init
        .on_response(&lab.a.ep, &sent(&b1))
        .expect_err("response mismatch");
    assert!(
        matches!(
            err,
            KexError::GroupMismatch {
                message: "response",
                ..
            }
        ),
        "{err}"
    );
    assert_refused(err, RejectionKind::GroupMismatch, &lab.a.ep);
}

#[test]
fn a_ciphertext_of_the_wrong_size_is_refused_before_anything_is_installed() {
    let lab = lab();
    let (init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let (_resp, b1) = lab.b.ep.respond(&sent(&a1)).expect("respond");
    let mut response = Response::decode(&sent(&b1)).expect("decodes");
    response.share.remove(0); // 1087-byte ciphertext
    let err = init
        .on_response(&lab.a.ep, &response.encode())
        .expect_err("short ciphertext");
    assert!(
        matches!(
            &err,
            KexError::Malformed(cipherlane_kex::DecodeError::ShareLength {
                expected: 1120,
                got: 1119,
                ..
            })
        ),
        "{err}"
    );
    assert_refused(err, RejectionKind::Malformed, &lab.a.ep);
    assert_eq!(lab.a.ep.metrics().established_as_initiator(), 0);
}

#[test]
fn an_encapsulation_key_failing_the_fips_203_modulus_check_is_refused() {
    let lab = lab();
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("initiate");
    let mut init = Init::decode(&sent(&a1)).expect("decodes");
    // the first coefficient becomes 0xfff >= q = 3329; signed properly by a (an authenticated
    // but broken or malicious peer), so only the input check can catch it
    init.share[0] = 0xff;
    init.share[1] |= 0x0f;
    resign(&mut init, &lab.a);
    let err = lab.b.ep.respond(&init.encode()).expect_err("bad key");
    assert!(
        matches!(
            &err,
            KexError::BadShare {
                error: cipherlane_kex::share::ShareError::EncapsulationKey,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("FIPS 203"), "{err}");
    assert_refused(err, RejectionKind::Malformed, &lab.b.ep);
    assert!(
        !lab.b.ep.handshake_active(&name("node-a")),
        "nothing in flight"
    );
}

#[test]
fn a_strict_policy_refuses_classical_handshakes_in_both_roles() {
    let lab = lab();
    // b is of the previous release as far as a knows; a's policy is strict
    lab.a.dir.update(&name("node-b"), |e| {
        e.groups = None;
        e.policy.key_exchange = STRICT;
    });
    let err = lab
        .a
        .ep
        .initiate(&name("node-b"))
        .expect_err("no hybrid with b");
    assert!(err.to_string().contains("previous release"), "{err}");
    assert_refused(err, RejectionKind::GroupNotAllowed, &lab.a.ep);
    // a responder with a strict policy refuses a version-1 init from an old peer
    lab.b.dir.update(&name("node-a"), |e| {
        e.groups = None;
        e.policy.key_exchange = STRICT;
    });
    lab.a
        .dir
        .update(&name("node-b"), |e| e.policy.key_exchange = CLASSICAL);
    let (_init, a1) = lab.a.ep.initiate(&name("node-b")).expect("a sends v1");
    let err = lab.b.ep.respond(&sent(&a1)).expect_err("strict");
    assert!(
        matches!(
            err,
            KexError::GroupNotAllowed {
                refusal: GroupRefusal::Strict { .. },
                ..
            }
        ),
        "{err}"
    );
    // with hybrid on both sides a strict policy keys as usual
    let both_new = lab_with(KexConfig::default());
    set_policy(&both_new, STRICT, STRICT);
    handshake(&both_new);
}

#[test]
fn a_fips_node_and_a_non_fips_node_share_no_group_and_say_so() {
    let lab = lab();
    lab.a.dir.update(&name("node-b"), |e| {
        e.groups = Some(vec![KexGroup::P256MlKem768])
    });
    let err = lab
        .a
        .ep
        .initiate(&name("node-b"))
        .expect_err("no common group");
    let text = err.to_string();
    assert!(
        text.contains("no common group") && text.contains("FIPS"),
        "{text}"
    );
    assert_refused(err, RejectionKind::GroupNotAllowed, &lab.a.ep);
    assert!(!lab.a.ep.handshake_active(&name("node-b")));
}
