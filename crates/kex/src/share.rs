//! The key shares of each key-exchange group (docs/protocol.md §4a): what the initiator
//! sends, what the responder answers, and the shared secret both ends feed to HKDF.
//!
//! | group | initiator share | responder share | shared secret |
//! | --- | --- | --- | --- |
//! | `x25519` | X25519 public key (32) | X25519 public key (32) | X25519 (32) |
//! | `x25519-mlkem768` | ML-KEM-768 encapsulation key (1184) ‖ X25519 public key (32) | ML-KEM-768 ciphertext (1088) ‖ X25519 public key (32) | ML-KEM secret (32) ‖ X25519 secret (32) |
//!
//! The layout of `x25519-mlkem768` is TLS's X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem): ML-KEM
//! first in the shares and in the secret. X25519 and the hashes come from `ring`; ML-KEM-768
//! from `libcrux-ml-kem` (formally verified, the implementation OpenSSH and NSS ship).
//!
//! Input checks (FIPS 203 §7.2, §7.3): an encapsulation key must be 1184 bytes and pass the
//! modulus check (every coefficient below q) before anyone encapsulates to it; a ciphertext must
//! be 1088 bytes. The lengths are already enforced by the codec (`wire`); the modulus check is
//! here. An X25519 share that gives the all-zero secret (a low-order point) is refused.
//! This module never sees names, SPIs or transcripts, and draws randomness only from the source
//! it is given.

use cipherlane_core::KexGroup;
use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

/// X25519 public key length.
pub const X25519_LEN: usize = 32;
/// ML-KEM-768 encapsulation key length (FIPS 203, k = 3).
pub const MLKEM768_EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
pub const MLKEM768_CT_LEN: usize = 1088;
/// ML-KEM shared secret length.
pub const MLKEM_SS_LEN: usize = 32;

/// The groups this build can run, strongest first. It is what the agent publishes in its
/// `CipherlaneNode` (`spec.keyExchangeGroups`).
pub const SUPPORTED_GROUPS: &[KexGroup] = &[KexGroup::X25519MlKem768, KexGroup::X25519];

/// Whether this build implements `group`.
pub fn supports(group: KexGroup) -> bool {
    SUPPORTED_GROUPS.contains(&group)
}

/// The length of the initiator's and of the responder's share in `group`.
pub fn share_lengths(group: KexGroup) -> (usize, usize) {
    match group {
        KexGroup::X25519 => (X25519_LEN, X25519_LEN),
        KexGroup::X25519MlKem768 => (MLKEM768_EK_LEN + X25519_LEN, MLKEM768_CT_LEN + X25519_LEN),
        // ECDH P-256 (uncompressed point, 65 bytes) first, as TLS's SecP256r1MLKEM768.
        KexGroup::P256MlKem768 => (65 + MLKEM768_EK_LEN, 65 + MLKEM768_CT_LEN),
    }
}

/// Why a share cannot be used. Each maps to a `malformed` refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("key-exchange group {0} is not implemented by this build")]
    Unsupported(KexGroup),
    #[error("{what} is {got} bytes; {group} needs {expected}")]
    Length {
        group: KexGroup,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the ML-KEM-768 encapsulation key fails FIPS 203's input check (a coefficient is not reduced modulo q)")]
    EncapsulationKey,
    #[error("the X25519 public key is of low order (all-zero shared secret)")]
    LowOrder,
    #[error("the system random source failed")]
    Random,
}

/// A shared secret, wiped when dropped.
pub type SharedSecret = Zeroizing<Vec<u8>>;

/// The initiator's private half of its share, kept until the response arrives.
pub struct InitiatorShare {
    group: KexGroup,
    // Options so that `finish` can move them out; both are gone after it.
    x25519: Option<EphemeralPrivateKey>,
    mlkem: Option<Box<MlKem768PrivateKey>>,
    public: Vec<u8>,
}

impl Drop for InitiatorShare {
    fn drop(&mut self) {
        // ring wipes its own keys; libcrux's key type does not, so overwrite it here.
        if let Some(private) = self.mlkem.as_mut() {
            private[0..].fill(0);
        }
    }
}

impl std::fmt::Debug for InitiatorShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitiatorShare")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn x25519_keypair(rng: &dyn SecureRandom) -> Result<EphemeralPrivateKey, ShareError> {
    EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| ShareError::Random)
}

fn x25519_public(private: &EphemeralPrivateKey) -> Result<Vec<u8>, ShareError> {
    private
        .compute_public_key()
        .map(|p| p.as_ref().to_vec())
        .map_err(|_| ShareError::Random)
}

fn random<const N: usize>(rng: &dyn SecureRandom) -> Result<Zeroizing<[u8; N]>, ShareError> {
    let mut out = Zeroizing::new([0u8; N]);
    rng.fill(out.as_mut()).map_err(|_| ShareError::Random)?;
    Ok(out)
}

fn x25519_agree(private: EphemeralPrivateKey, peer: &[u8]) -> Result<SharedSecret, ShareError> {
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |s| {
        Zeroizing::new(s.to_vec())
    })
    .map_err(|_| ShareError::LowOrder)
}

fn check_len(
    group: KexGroup,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), ShareError> {
    if expected == got {
        Ok(())
    } else {
        Err(ShareError::Length {
            group,
            what,
            expected,
            got,
        })
    }
}

impl InitiatorShare {
    /// A fresh share: the X25519 key first, then (for a hybrid) the ML-KEM key generation seed
    /// `d ‖ z` (64 bytes), both from `rng`.
    pub fn generate(group: KexGroup, rng: &dyn SecureRandom) -> Result<InitiatorShare, ShareError> {
        let x25519 = x25519_keypair(rng)?;
        match group {
            KexGroup::X25519 => InitiatorShare::from_parts(group, x25519, None),
            KexGroup::X25519MlKem768 => {
                let seed = random::<64>(rng)?;
                InitiatorShare::from_parts(group, x25519, Some(*seed))
            }
            KexGroup::P256MlKem768 => Err(ShareError::Unsupported(group)),
        }
    }

    /// A share from fixed inputs (test vectors): the X25519 key and, for a hybrid, the ML-KEM
    /// key generation seed `d ‖ z` of FIPS 203's ML-KEM.KeyGen_internal.
    pub fn from_parts(
        group: KexGroup,
        x25519: EphemeralPrivateKey,
        mlkem_seed: Option<[u8; 64]>,
    ) -> Result<InitiatorShare, ShareError> {
        let x_public = x25519_public(&x25519)?;
        match (group, mlkem_seed) {
            (KexGroup::X25519, None) => Ok(InitiatorShare {
                group,
                x25519: Some(x25519),
                mlkem: None,
                public: x_public,
            }),
            (KexGroup::X25519MlKem768, Some(seed)) => {
                let seed = Zeroizing::new(seed);
                let (private, public) = mlkem768::generate_key_pair(*seed).into_parts();
                let mut share = Vec::with_capacity(MLKEM768_EK_LEN + X25519_LEN);
                share.extend_from_slice(public.as_slice());
                share.extend_from_slice(&x_public);
                Ok(InitiatorShare {
                    group,
                    x25519: Some(x25519),
                    mlkem: Some(Box::new(private)),
                    public: share,
                })
            }
            _ => Err(ShareError::Unsupported(group)),
        }
    }

    pub fn group(&self) -> KexGroup {
        self.group
    }

    /// The bytes the init carries.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Derives the shared secret from the responder's share.
    pub fn finish(mut self, responder_share: &[u8]) -> Result<SharedSecret, ShareError> {
        let group = self.group;
        let (_, expected) = share_lengths(group);
        check_len(group, "responder share", expected, responder_share.len())?;
        let x25519 = self.x25519.take().ok_or(ShareError::Unsupported(group))?;
        match group {
            KexGroup::X25519 => x25519_agree(x25519, responder_share),
            KexGroup::X25519MlKem768 => {
                let private = self.mlkem.as_ref().ok_or(ShareError::Unsupported(group))?;
                let (ct, x_peer) = responder_share.split_at(MLKEM768_CT_LEN);
                let ct = MlKem768Ciphertext::try_from(ct).map_err(|_| ShareError::Length {
                    group,
                    what: "ML-KEM ciphertext",
                    expected: MLKEM768_CT_LEN,
                    got: ct.len(),
                })?;
                // Decapsulation never fails: a wrong ciphertext gives an unrelated secret
                // (implicit rejection), and the confirm MAC then fails on the responder.
                let kem = Zeroizing::new(mlkem768::decapsulate(private, &ct));
                let x = x25519_agree(x25519, x_peer)?;
                Ok(concat(&kem[..], &x))
            }
            KexGroup::P256MlKem768 => Err(ShareError::Unsupported(group)),
        }
    }
}

fn concat(first: &[u8], second: &[u8]) -> SharedSecret {
    let mut out = Zeroizing::new(Vec::with_capacity(first.len() + second.len()));
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out
}

/// The responder's answer to an initiator share: its own share and the shared secret.
pub struct ResponderShare {
    pub public: Vec<u8>,
    pub secret: SharedSecret,
}

impl std::fmt::Debug for ResponderShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponderShare(<redacted>)")
    }
}

/// Answers `initiator_share`: the X25519 key first, then (for a hybrid) the 32-byte
/// encapsulation randomness `m`, both from `rng`.
pub fn respond(
    group: KexGroup,
    initiator_share: &[u8],
    rng: &dyn SecureRandom,
) -> Result<ResponderShare, ShareError> {
    let x25519 = x25519_keypair(rng)?;
    let m = match group {
        KexGroup::X25519 => None,
        KexGroup::X25519MlKem768 => Some(*random::<32>(rng)?),
        KexGroup::P256MlKem768 => return Err(ShareError::Unsupported(group)),
    };
    respond_with(group, initiator_share, x25519, m)
}

/// [`respond`] from fixed inputs (test vectors).
pub fn respond_with(
    group: KexGroup,
    initiator_share: &[u8],
    x25519: EphemeralPrivateKey,
    mlkem_randomness: Option<[u8; 32]>,
) -> Result<ResponderShare, ShareError> {
    let (expected, _) = share_lengths(group);
    check_len(group, "initiator share", expected, initiator_share.len())?;
    let x_public = x25519_public(&x25519)?;
    match (group, mlkem_randomness) {
        (KexGroup::X25519, None) => Ok(ResponderShare {
            secret: x25519_agree(x25519, initiator_share)?,
            public: x_public,
        }),
        (KexGroup::X25519MlKem768, Some(m)) => {
            let m = Zeroizing::new(m);
            let (ek, x_peer) = initiator_share.split_at(MLKEM768_EK_LEN);
            let ek = MlKem768PublicKey::try_from(ek).map_err(|_| ShareError::Length {
                group,
                what: "ML-KEM encapsulation key",
                expected: MLKEM768_EK_LEN,
                got: ek.len(),
            })?;
            if !mlkem768::validate_public_key(&ek) {
                return Err(ShareError::EncapsulationKey);
            }
            let (ct, kem) = mlkem768::encapsulate(&ek, *m);
            let kem = Zeroizing::new(kem);
            let x = x25519_agree(x25519, x_peer)?;
            let mut public = Vec::with_capacity(MLKEM768_CT_LEN + X25519_LEN);
            public.extend_from_slice(ct.as_slice());
            public.extend_from_slice(&x_public);
            Ok(ResponderShare {
                public,
                secret: concat(&kem[..], &x),
            })
        }
        _ => Err(ShareError::Unsupported(group)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn both_ends_of_every_supported_group_derive_the_same_secret() {
        let rng = SystemRandom::new();
        for &group in SUPPORTED_GROUPS {
            let init = InitiatorShare::generate(group, &rng).expect("share");
            assert_eq!(init.public().len(), share_lengths(group).0);
            let answer = respond(group, init.public(), &rng).expect("respond");
            assert_eq!(answer.public.len(), share_lengths(group).1);
            let secret = init.finish(&answer.public).expect("finish");
            assert_eq!(secret, answer.secret, "{group}");
            let want = if group.is_post_quantum() { 64 } else { 32 };
            assert_eq!(secret.len(), want);
        }
    }

    #[test]
    fn a_hybrid_secret_is_the_ml_kem_secret_then_the_x25519_secret() {
        let rng = SystemRandom::new();
        let init = InitiatorShare::generate(KexGroup::X25519MlKem768, &rng).expect("share");
        let answer = respond(KexGroup::X25519MlKem768, init.public(), &rng).expect("respond");
        // Replace the X25519 half of the response: the first 32 bytes (ML-KEM) stay, the last
        // 32 (X25519) change.
        let other_x = {
            let k = EphemeralPrivateKey::generate(&X25519, &rng).expect("x25519");
            k.compute_public_key().expect("public").as_ref().to_vec()
        };
        let mut changed = answer.public.clone();
        changed[MLKEM768_CT_LEN..].copy_from_slice(&other_x);
        let secret = init.finish(&changed).expect("finish");
        assert_eq!(secret[..32], answer.secret[..32], "ML-KEM part first");
        assert_ne!(secret[32..], answer.secret[32..], "X25519 part second");
    }

    #[test]
    fn wrong_lengths_a_low_order_point_and_a_bad_encapsulation_key_are_refused() {
        let rng = SystemRandom::new();
        let g = KexGroup::X25519MlKem768;
        let init = InitiatorShare::generate(g, &rng).expect("share");
        let err = respond(g, &init.public()[1..], &rng).expect_err("short");
        assert!(
            matches!(
                err,
                ShareError::Length {
                    expected: 1216,
                    got: 1215,
                    ..
                }
            ),
            "{err}"
        );
        // a coefficient of 0xfff (>= q = 3329) in the first slot of the encapsulation key
        let mut bad = init.public().to_vec();
        bad[0] = 0xff;
        bad[1] |= 0x0f;
        assert_eq!(
            respond(g, &bad, &rng).map(|_| ()),
            Err(ShareError::EncapsulationKey)
        );
        let mut low = init.public().to_vec();
        low[MLKEM768_EK_LEN..].fill(0);
        assert_eq!(
            respond(g, &low, &rng).map(|_| ()),
            Err(ShareError::LowOrder)
        );
        let answer = respond(g, init.public(), &rng).expect("respond");
        let err = init
            .finish(&answer.public[..1087])
            .expect_err("short ciphertext");
        assert!(
            matches!(
                err,
                ShareError::Length {
                    expected: 1120,
                    got: 1087,
                    ..
                }
            ),
            "{err}"
        );
    }
}
