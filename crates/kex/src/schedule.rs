//! Transcript hashes, signature inputs and the key schedule (docs/protocol.md, "Transcript" and
//! "Key schedule").
//!
//! Pure functions of their inputs, so that the test vectors in docs/protocol.md pin them down.
//! This module never draws randomness and never sees a socket.

use cipherlane_core::{Epoch, NodeName, SaKey, Spi, Suite};
use ring::{digest, hkdf, hmac};

use crate::wire::{EPHEMERAL_LEN, MAC_LEN, NONCE_LEN};

/// Prefix of every hash, HKDF info and signature input: binds everything to this protocol.
pub const PROTOCOL_LABEL: &[u8] = b"cipherlane-kex-v1";
const INIT_SIGNATURE_CONTEXT: &[u8] = b"cipherlane-kex-v1 initiator signature";
const RESPONSE_SIGNATURE_CONTEXT: &[u8] = b"cipherlane-kex-v1 responder signature";
const LABEL_I2R: &[u8] = b" esp initiator->responder";
const LABEL_R2I: &[u8] = b" esp responder->initiator";
const LABEL_CONFIRM: &[u8] = b" confirm";

/// A SHA-256 transcript hash.
pub type TranscriptHash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> TranscriptHash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// H1 = SHA-256(label ‖ init without its signature).
pub fn init_hash(init_unsigned: &[u8]) -> TranscriptHash {
    sha256(&[PROTOCOL_LABEL, init_unsigned])
}

/// H2 = SHA-256(label ‖ init ‖ response without its signature).
pub fn response_hash(init: &[u8], response_unsigned: &[u8]) -> TranscriptHash {
    sha256(&[PROTOCOL_LABEL, init, response_unsigned])
}

/// H3 = SHA-256(label ‖ init ‖ response): what the confirm MAC covers.
pub fn confirm_hash(init: &[u8], response: &[u8]) -> TranscriptHash {
    sha256(&[PROTOCOL_LABEL, init, response])
}

/// The bytes the initiator signs: a context string then H1.
pub fn init_signature_input(h1: &TranscriptHash) -> Vec<u8> {
    [INIT_SIGNATURE_CONTEXT, h1.as_slice()].concat()
}

/// The bytes the responder signs: a context string then H2.
pub fn response_signature_input(h2: &TranscriptHash) -> Vec<u8> {
    [RESPONSE_SIGNATURE_CONTEXT, h2.as_slice()].concat()
}

/// Everything the keys depend on besides the shared secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyContext {
    pub initiator: NodeName,
    pub responder: NodeName,
    pub epoch: Epoch,
    pub suite: Suite,
    pub initiator_spi: Spi,
    pub responder_spi: Spi,
    pub initiator_ephemeral: [u8; EPHEMERAL_LEN],
    pub responder_ephemeral: [u8; EPHEMERAL_LEN],
    pub initiator_nonce: [u8; NONCE_LEN],
    pub responder_nonce: [u8; NONCE_LEN],
}

impl KeyContext {
    /// The HKDF info after the label: names (length-prefixed), epoch, suite code, both SPIs,
    /// both ephemeral public keys.
    fn info(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 2 * 64 + 8 + 1 + 8 + 64);
        for name in [&self.initiator, &self.responder] {
            // NodeName is at most 253 bytes.
            out.push(name.as_str().len() as u8);
            out.extend_from_slice(name.as_str().as_bytes());
        }
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.push(self.suite.code());
        out.extend_from_slice(&self.initiator_spi.value().to_be_bytes());
        out.extend_from_slice(&self.responder_spi.value().to_be_bytes());
        out.extend_from_slice(&self.initiator_ephemeral);
        out.extend_from_slice(&self.responder_ephemeral);
        out
    }
}

/// The keys one handshake yields.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Initiator → responder SA (SPI chosen by the responder).
    pub initiator_to_responder: SaKey,
    /// Responder → initiator SA (SPI chosen by the initiator).
    pub responder_to_initiator: SaKey,
    /// Key of the confirm MAC; never leaves this crate's handshake.
    pub confirm_key: [u8; MAC_LEN],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, label: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let parts = [PROTOCOL_LABEL, label, info];
    // `expand` fails only if len > 255 * 32 bytes and `fill` only on a length mismatch; every
    // length here is at most 36 and the buffer is made with that same length.
    #[allow(clippy::expect_used)]
    prk.expand(&parts, Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF output length is small and matches the buffer");
    out
}

/// HKDF-SHA256: PRK = Extract(salt = nonce_i ‖ nonce_r, IKM = X25519 shared secret);
/// each key = Expand(PRK, label ‖ direction ‖ info, suite's key+salt length).
pub fn derive_keys(shared_secret: &[u8], ctx: &KeyContext) -> Keys {
    let salt_bytes = [
        ctx.initiator_nonce.as_slice(),
        ctx.responder_nonce.as_slice(),
    ]
    .concat();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt_bytes).extract(shared_secret);
    let info = ctx.info();
    let len = ctx.suite.keymat_len();
    let key = |label| {
        // The length is the suite's own keymat length, so SaKey::new cannot refuse it.
        #[allow(clippy::expect_used)]
        SaKey::new(ctx.suite, expand(&prk, label, &info, len)).expect("length is keymat_len")
    };
    let mut confirm_key = [0u8; MAC_LEN];
    confirm_key.copy_from_slice(&expand(&prk, LABEL_CONFIRM, &info, MAC_LEN));
    Keys {
        initiator_to_responder: key(LABEL_I2R),
        responder_to_initiator: key(LABEL_R2I),
        confirm_key,
    }
}

/// Confirm MAC = HMAC-SHA256(confirm key, H3).
pub fn confirm_mac(confirm_key: &[u8; MAC_LEN], h3: &TranscriptHash) -> [u8; MAC_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, confirm_key);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(hmac::sign(&key, h3).as_ref());
    out
}

/// Checks a confirm MAC in constant time.
pub fn verify_confirm_mac(confirm_key: &[u8; MAC_LEN], h3: &TranscriptHash, mac: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, confirm_key);
    hmac::verify(&key, h3, mac).is_ok()
}
