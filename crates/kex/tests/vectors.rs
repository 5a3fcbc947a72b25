//! The test vectors in docs/protocol.md are checked here: fixed inputs (identity seeds,
//! ephemeral private keys, nonces, SPIs, timestamp) must give exactly the messages and keys the
//! document lists. Run with `KEX_PRINT_VECTORS=1` to print what the code computes.
#![allow(deprecated)] // ring::test::rand::FixedSliceRandom: the only way to fix an X25519 key.

use std::collections::HashMap;
use std::sync::Arc;

use cipherlane_core::{Epoch, NodeName, Spi, Suite};
use cipherlane_kex::schedule::{self, KeyContext};
use cipherlane_kex::wire::{Confirm, Init, Response};
use cipherlane_kex::{
    Action, Endpoint, InMemoryDirectory, KexConfig, ManualClock, PairPolicy, PeerEntry,
};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::signature::{Ed25519KeyPair, KeyPair};

const PROTOCOL_MD: &str = include_str!("../../../docs/protocol.md");

fn vectors() -> HashMap<String, HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut lines = PROTOCOL_MD.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("```text vector:") else {
            continue;
        };
        let mut fields = HashMap::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            if let Some((k, v)) = l.split_once('=') {
                fields.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        out.insert(name.trim().to_string(), fields);
    }
    out
}

fn bytes(v: &HashMap<String, String>, key: &str) -> Vec<u8> {
    hex::decode(v.get(key).unwrap_or_else(|| panic!("vector lacks {key}"))).expect("hex")
}

fn arr(v: &HashMap<String, String>, key: &str) -> [u8; 32] {
    bytes(v, key).try_into().expect("32 bytes")
}

fn text<'a>(v: &'a HashMap<String, String>, key: &str) -> &'a str {
    v.get(key).unwrap_or_else(|| panic!("vector lacks {key}"))
}

/// Computes every output of a handshake from a vector's inputs.
fn compute(v: &HashMap<String, String>) -> Vec<(&'static str, String)> {
    let id_a = Ed25519KeyPair::from_seed_unchecked(&bytes(v, "identity_seed_a")).expect("seed");
    let id_b = Ed25519KeyPair::from_seed_unchecked(&bytes(v, "identity_seed_b")).expect("seed");
    let eph = |key| {
        let rnd = bytes(v, key);
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &rnd };
        let private = EphemeralPrivateKey::generate(&X25519, &fixed).expect("x25519");
        let public: [u8; 32] = private
            .compute_public_key()
            .expect("public")
            .as_ref()
            .try_into()
            .expect("32");
        (private, public)
    };
    let (ea, pa) = eph("ephemeral_private_a");
    let (eb, pb) = eph("ephemeral_private_b");
    let suite: Suite = text(v, "suite").parse().expect("suite");
    let spi = |k| Spi::new(u32::from_str_radix(text(v, k), 16).expect("hex spi")).expect("spi");
    let mut init = Init {
        initiator: NodeName::new(text(v, "initiator")).expect("name"),
        responder: NodeName::new(text(v, "responder")).expect("name"),
        epoch: Epoch(text(v, "epoch").parse().expect("epoch")),
        suite,
        ephemeral: pa,
        nonce: arr(v, "nonce_a"),
        initiator_spi: spi("spi_a"),
        timestamp_ms: text(v, "timestamp_ms").parse().expect("ts"),
        signature: [0; 64],
    };
    let h1 = schedule::init_hash(&init.encode_unsigned());
    init.signature
        .copy_from_slice(id_a.sign(&schedule::init_signature_input(&h1)).as_ref());
    let init_bytes = init.encode();
    let mut response = Response {
        ephemeral: pb,
        nonce: arr(v, "nonce_b"),
        responder_spi: spi("spi_b"),
        signature: [0; 64],
    };
    let h2 = schedule::response_hash(&init_bytes, &response.encode_unsigned());
    response
        .signature
        .copy_from_slice(id_b.sign(&schedule::response_signature_input(&h2)).as_ref());
    let response_bytes = response.encode();
    let ctx = KeyContext {
        initiator: init.initiator.clone(),
        responder: init.responder.clone(),
        epoch: init.epoch,
        suite,
        initiator_spi: init.initiator_spi,
        responder_spi: response.responder_spi,
        initiator_ephemeral: pa,
        responder_ephemeral: pb,
        initiator_nonce: init.nonce,
        responder_nonce: response.nonce,
    };
    let mut shared = Vec::new();
    let keys_a = agreement::agree_ephemeral(ea, &UnparsedPublicKey::new(&X25519, pb), |s| {
        shared = s.to_vec();
        schedule::derive_keys(s, &ctx)
    })
    .expect("agree");
    let keys_b = agreement::agree_ephemeral(eb, &UnparsedPublicKey::new(&X25519, pa), |s| {
        schedule::derive_keys(s, &ctx)
    })
    .expect("agree");
    assert_eq!(keys_a, keys_b, "both sides derive the same keys");
    let h3 = schedule::confirm_hash(&init_bytes, &response_bytes);
    let confirm = Confirm {
        mac: schedule::confirm_mac(&keys_a.confirm_key, &h3),
    };
    vec![
        ("identity_public_a", hex::encode(id_a.public_key().as_ref())),
        ("identity_public_b", hex::encode(id_b.public_key().as_ref())),
        ("ephemeral_public_a", hex::encode(pa)),
        ("ephemeral_public_b", hex::encode(pb)),
        ("shared_secret", hex::encode(&shared)),
        ("init", hex::encode(&init_bytes)),
        ("h1", hex::encode(h1)),
        ("response", hex::encode(&response_bytes)),
        ("h2", hex::encode(h2)),
        ("h3", hex::encode(h3)),
        (
            "key_initiator_to_responder",
            hex::encode(keys_a.initiator_to_responder.bytes()),
        ),
        (
            "key_responder_to_initiator",
            hex::encode(keys_a.responder_to_initiator.bytes()),
        ),
        ("confirm_key", hex::encode(keys_a.confirm_key)),
        ("confirm", hex::encode(confirm.encode())),
    ]
}

#[test]
fn the_documented_test_vectors_match_what_the_code_computes() {
    let all = vectors();
    assert!(
        all.len() >= 2,
        "docs/protocol.md must hold at least two vectors"
    );
    let print = std::env::var_os("KEX_PRINT_VECTORS").is_some();
    for (name, v) in &all {
        for (key, got) in compute(v) {
            if print {
                println!("{name}: {key} = {got}");
                continue;
            }
            assert_eq!(
                v.get(key).map(String::as_str),
                Some(got.as_str()),
                "vector {name}: {key} differs from docs/protocol.md"
            );
        }
    }
    assert!(
        !print,
        "printed the vectors; unset KEX_PRINT_VECTORS to check them"
    );
}

#[test]
fn an_endpoint_accepts_the_documented_init_and_answers_it() {
    let all = vectors();
    let v = all.get("aes-gcm-128").expect("the aes-gcm-128 vector");
    let id_b = Ed25519KeyPair::from_seed_unchecked(&bytes(v, "identity_seed_b")).expect("seed");
    let dir = Arc::new(InMemoryDirectory::new());
    dir.insert(
        NodeName::new(text(v, "initiator")).expect("name"),
        PeerEntry {
            identity_key: arr(v, "identity_public_a"),
            revoked: false,
            policy: PairPolicy::only(
                Epoch(text(v, "epoch").parse().expect("epoch")),
                Suite::AesGcm128,
            ),
        },
    );
    let clock = Arc::new(ManualClock::new(
        text(v, "timestamp_ms").parse().expect("ts"),
    ));
    let b = Endpoint::new(
        NodeName::new(text(v, "responder")).expect("name"),
        id_b,
        dir,
        clock,
        Arc::new(ring::rand::SystemRandom::new()),
        KexConfig::default(),
    );
    let (_responder, actions) = b
        .respond(&bytes(v, "init"))
        .expect("the documented init verifies");
    assert!(matches!(actions[0], Action::InstallInbound { .. }));
}
