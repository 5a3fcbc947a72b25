//! The test vectors in docs/protocol.md are checked here: fixed inputs (identity seeds,
//! ephemeral private keys, nonces, SPIs, timestamp) must give exactly the messages and keys the
//! document lists. Run with `KEX_PRINT_VECTORS=1` to print what the code computes.
#![allow(deprecated)] // ring::test::rand::FixedSliceRandom: the only way to fix an X25519 key.

use std::collections::HashMap;
use std::sync::Arc;

use cipherlane_core::{Epoch, KexGroup, NodeName, Spi, Suite};
use cipherlane_kex::schedule::{self, KeyContext};
use cipherlane_kex::share::{self, InitiatorShare};
use cipherlane_kex::wire::{group_codes, Confirm, Init, Response, Version};
use cipherlane_kex::{
    Action, Endpoint, InMemoryDirectory, KexConfig, ManualClock, PairPolicy, PeerEntry,
};
use ring::agreement::{EphemeralPrivateKey, X25519};
use ring::digest;
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

fn version(v: &HashMap<String, String>) -> Version {
    match v.get("version").map(String::as_str) {
        None | Some("1") => Version::V1,
        Some("2") => Version::V2,
        Some(other) => panic!("unknown version {other}"),
    }
}

fn group_list(v: &HashMap<String, String>, key: &str) -> Vec<KexGroup> {
    text(v, key)
        .split(',')
        .map(|g| g.trim().parse().expect("group name"))
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// Computes every output of a handshake from a vector's inputs; also hands back the init.
fn compute(v: &HashMap<String, String>) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let version = version(v);
    let group: KexGroup = v
        .get("group")
        .map(|g| g.parse().expect("group"))
        .unwrap_or(KexGroup::X25519);
    let id_a = Ed25519KeyPair::from_seed_unchecked(&bytes(v, "identity_seed_a")).expect("seed");
    let id_b = Ed25519KeyPair::from_seed_unchecked(&bytes(v, "identity_seed_b")).expect("seed");
    let x25519 = |key| {
        let rnd = bytes(v, key);
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &rnd };
        EphemeralPrivateKey::generate(&X25519, &fixed).expect("x25519")
    };
    let seed_a: Option<[u8; 64]> = group
        .is_post_quantum()
        .then(|| bytes(v, "mlkem_seed_a").try_into().expect("64 bytes"));
    let m_b: Option<[u8; 32]> = group
        .is_post_quantum()
        .then(|| bytes(v, "mlkem_randomness_b").try_into().expect("32 bytes"));
    let share_a = InitiatorShare::from_parts(group, x25519("ephemeral_private_a"), seed_a)
        .expect("initiator share");
    let share_b = share::respond_with(group, share_a.public(), x25519("ephemeral_private_b"), m_b)
        .expect("responder share");
    let suite: Suite = text(v, "suite").parse().expect("suite");
    let spi = |k| Spi::new(u32::from_str_radix(text(v, k), 16).expect("hex spi")).expect("spi");
    let (offered, supported) = match version {
        Version::V1 => (Vec::new(), Vec::new()),
        Version::V2 => (
            group_codes(&group_list(v, "groups_a")),
            group_codes(&group_list(v, "groups_b")),
        ),
    };
    let mut init = Init {
        version,
        initiator: NodeName::new(text(v, "initiator")).expect("name"),
        responder: NodeName::new(text(v, "responder")).expect("name"),
        epoch: Epoch(text(v, "epoch").parse().expect("epoch")),
        suite,
        group,
        offered,
        share: share_a.public().to_vec(),
        nonce: arr(v, "nonce_a"),
        initiator_spi: spi("spi_a"),
        timestamp_ms: text(v, "timestamp_ms").parse().expect("ts"),
        signature: [0; 64],
    };
    let h1 = schedule::init_hash(version, &init.encode_unsigned());
    init.signature.copy_from_slice(
        id_a.sign(&schedule::init_signature_input(version, &h1))
            .as_ref(),
    );
    let init_bytes = init.encode();
    let mut response = Response {
        version,
        group,
        supported,
        share: share_b.public.clone(),
        nonce: arr(v, "nonce_b"),
        responder_spi: spi("spi_b"),
        signature: [0; 64],
    };
    let h2 = schedule::response_hash(version, &init_bytes, &response.encode_unsigned());
    response.signature.copy_from_slice(
        id_b.sign(&schedule::response_signature_input(version, &h2))
            .as_ref(),
    );
    let response_bytes = response.encode();
    let h3 = schedule::confirm_hash(version, &init_bytes, &response_bytes);
    let public_a = share_a.public().to_vec();
    let secret_a = share_a.finish(&response.share).expect("finish");
    assert_eq!(
        secret_a, share_b.secret,
        "both sides derive the same shared secret"
    );
    let keys = match version {
        Version::V1 => {
            let ctx = KeyContext {
                initiator: init.initiator.clone(),
                responder: init.responder.clone(),
                epoch: init.epoch,
                suite,
                initiator_spi: init.initiator_spi,
                responder_spi: response.responder_spi,
                initiator_ephemeral: public_a.clone().try_into().expect("32"),
                responder_ephemeral: share_b.public.clone().try_into().expect("32"),
                initiator_nonce: init.nonce,
                responder_nonce: response.nonce,
            };
            schedule::derive_keys(&secret_a, &ctx)
        }
        Version::V2 => {
            schedule::derive_keys_v2(&secret_a, suite, &init.nonce, &response.nonce, &h3)
        }
    };
    let confirm = Confirm {
        version,
        mac: schedule::confirm_mac(&keys.confirm_key, &h3),
    };
    let mut out = vec![
        ("identity_public_a", hex::encode(id_a.public_key().as_ref())),
        ("identity_public_b", hex::encode(id_b.public_key().as_ref())),
    ];
    let x_a = &public_a[public_a.len() - 32..];
    let x_b = &share_b.public[share_b.public.len() - 32..];
    out.push(("ephemeral_public_a", hex::encode(x_a)));
    out.push(("ephemeral_public_b", hex::encode(x_b)));
    match version {
        Version::V1 => {
            out.push(("shared_secret", hex::encode(&secret_a[..])));
            out.push(("init", hex::encode(&init_bytes)));
            out.push(("h1", hex::encode(h1)));
            out.push(("response", hex::encode(&response_bytes)));
        }
        Version::V2 => {
            if group.is_post_quantum() {
                // ML-KEM first in shares and in the secret (X25519MLKEM768)
                out.push(("mlkem_ek_a_sha256", sha256(&public_a[..1184])));
                out.push(("mlkem_ct_b_sha256", sha256(&share_b.public[..1088])));
                out.push(("mlkem_shared_secret", hex::encode(&secret_a[..32])));
                out.push(("x25519_shared_secret", hex::encode(&secret_a[32..])));
            }
            out.push(("shared_secret", hex::encode(&secret_a[..])));
            out.push(("init_len", init_bytes.len().to_string()));
            out.push(("init_sha256", sha256(&init_bytes)));
            out.push(("init_signature", hex::encode(init.signature)));
            out.push(("h1", hex::encode(h1)));
            out.push(("response_len", response_bytes.len().to_string()));
            out.push(("response_sha256", sha256(&response_bytes)));
            out.push(("response_signature", hex::encode(response.signature)));
        }
    }
    out.extend([
        ("h2", hex::encode(h2)),
        ("h3", hex::encode(h3)),
        (
            "key_initiator_to_responder",
            hex::encode(keys.initiator_to_responder.bytes()),
        ),
        (
            "key_responder_to_initiator",
            hex::encode(keys.responder_to_initiator.bytes()),
        ),
        ("confirm_key", hex::encode(keys.confirm_key)),
        ("confirm", hex::encode(confirm.encode())),
    ]);
    (out, init_bytes)
}

#[test]
fn the_documented_test_vectors_match_what_the_code_computes() {
    let all = vectors();
    for name in [
        "aes-gcm-128",
        "chacha20-poly1305",
        "x25519-mlkem768",
        "x25519-v2",
    ] {
        assert!(
            all.contains_key(name),
            "docs/protocol.md lacks vector {name}"
        );
    }
    let print = std::env::var_os("KEX_PRINT_VECTORS").is_some();
    for (name, v) in &all {
        for (key, got) in compute(v).0 {
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

/// Feeds a vector's init to a real endpoint of its responder, which must accept it.
fn endpoint_accepts(name: &str, groups_of_initiator: Option<Vec<KexGroup>>) -> Vec<Action> {
    let all = vectors();
    let v = all.get(name).expect("the vector");
    let id_b = Ed25519KeyPair::from_seed_unchecked(&bytes(v, "identity_seed_b")).expect("seed");
    let suite: Suite = text(v, "suite").parse().expect("suite");
    let dir = Arc::new(InMemoryDirectory::new());
    dir.insert(
        NodeName::new(text(v, "initiator")).expect("name"),
        PeerEntry {
            identity_key: arr(v, "identity_public_a"),
            revoked: false,
            policy: PairPolicy::only(Epoch(text(v, "epoch").parse().expect("epoch")), suite),
            groups: groups_of_initiator,
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
    let init = match version(v) {
        Version::V1 => bytes(v, "init"),
        Version::V2 => compute(v).1,
    };
    let (_responder, actions) = b.respond(&init).expect("the documented init verifies");
    actions
}

#[test]
fn an_endpoint_accepts_the_previous_releases_documented_init_and_answers_in_version_1() {
    // the previous release publishes no groups
    let actions = endpoint_accepts("aes-gcm-128", None);
    assert!(matches!(actions[0], Action::InstallInbound { .. }));
    let Action::Send(response) = &actions[1] else {
        panic!("a response")
    };
    assert_eq!(response[0], 1, "answered in version 1");
    assert_eq!(
        response.len(),
        2 + 32 + 32 + 4 + 64,
        "the previous release's layout"
    );
}

#[test]
fn an_endpoint_accepts_the_documented_hybrid_init() {
    let all = vectors();
    let groups = group_list(all.get("x25519-mlkem768").expect("vector"), "groups_a");
    let actions = endpoint_accepts("x25519-mlkem768", Some(groups));
    let Action::Send(response) = &actions[1] else {
        panic!("a response")
    };
    assert_eq!(response[0], 2, "answered in version 2");
}
