//! Transcript hashes, signature inputs and the key schedule (docs/protocol.md, "Transcript" and
//! "Key schedule").
//!
//! Pure functions of their inputs, so that the test vectors in docs/protocol.md pin them down.
//! This module never draws randomness and never sees a socket.
//!
//! Each protocol version has its own label, so a transcript, a signature or a key of one version
//! can never be taken for one of the other. Version 2 binds the keys to the whole transcript
//! (HKDF info = H3, which covers both sides' groups and key shares) instead of listing fields.

use cipherlane_core::{Epoch, NodeName, SaKey, Spi, Suite};
use ring::{digest, hkdf, hmac};

use crate::wire::{Version, EPHEMERAL_LEN, MAC_LEN, NONCE_LEN};

/// Prefix of every version-1 hash, HKDF info and signature input.
pub const PROTOCOL_LABEL: &[u8] = b"cipherlane-kex-v1";
/// The same for version 2.
pub const PROTOCOL_LABEL_V2: &[u8] = b"cipherlane-kex-v2";
const INIT_SIGNATURE_CONTEXT: &[u8] = b"cipherlane-kex-v1 initiator signature";
const RESPONSE_SIGNATURE_CONTEXT: &[u8] = b"cipherlane-kex-v1 responder signature";
const INIT_SIGNATURE_CONTEXT_V2: &[u8] = b"cipherlane-kex-v2 initiator signature";
const RESPONSE_SIGNATURE_CONTEXT_V2: &[u8] = b"cipherlane-kex-v2 responder signature";

/// The label of `version`.
pub fn protocol_label(version: Version) -> &'static [u8] {
    match version {
        Version::V1 => PROTOCOL_LABEL,
        Version::V2 => PROTOCOL_LABEL_V2,
    }
}
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
pub fn init_hash(version: Version, init_unsigned: &[u8]) -> TranscriptHash {
    sha256(&[protocol_label(version), init_unsigned])
}

/// H2 = SHA-256(label ‖ init ‖ response without its signature).
pub fn response_hash(version: Version, init: &[u8], response_unsigned: &[u8]) -> TranscriptHash {
    sha256(&[protocol_label(version), init, response_unsigned])
}

/// H3 = SHA-256(label ‖ init ‖ response): what the confirm MAC covers.
pub fn confirm_hash(version: Version, init: &[u8], response: &[u8]) -> TranscriptHash {
    sha256(&[protocol_label(version), init, response])
}

/// The bytes the initiator signs: a context string then H1.
pub fn init_signature_input(version: Version, h1: &TranscriptHash) -> Vec<u8> {
    let context = match version {
        Version::V1 => INIT_SIGNATURE_CONTEXT,
        Version::V2 => INIT_SIGNATURE_CONTEXT_V2,
    };
    [context, h1.as_slice()].concat()
}

/// The bytes the responder signs: a context string then H2.
pub fn response_signature_input(version: Version, h2: &TranscriptHash) -> Vec<u8> {
    let context = match version {
        Version::V1 => RESPONSE_SIGNATURE_CONTEXT,
        Version::V2 => RESPONSE_SIGNATURE_CONTEXT_V2,
    };
    [context, h2.as_slice()].concat()
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

fn expand(prk: &hkdf::Prk, version: Version, label: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let parts = [protocol_label(version), label, info];
    // `expand` fails only if len > 255 * 32 bytes and `fill` only on a length mismatch; every
    // length here is at most 36 and the buffer is made with that same length.
    #[allow(clippy::expect_used)]
    prk.expand(&parts, Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF output length is small and matches the buffer");
    out
}

/// Version 1, HKDF-SHA256: PRK = Extract(salt = nonce_i ‖ nonce_r, IKM = X25519 shared
/// secret); each key = Expand(PRK, label ‖ direction ‖ info, suite's key+salt length).
pub fn derive_keys(shared_secret: &[u8], ctx: &KeyContext) -> Keys {
    derive(
        Version::V1,
        shared_secret,
        ctx.suite,
        &ctx.initiator_nonce,
        &ctx.responder_nonce,
        &ctx.info(),
    )
}

/// Version 2, HKDF-SHA256: PRK = Extract(salt = nonce_i ‖ nonce_r, IKM = the group's shared
/// secret, for a hybrid the two secrets concatenated); each key = Expand(PRK, label ‖ direction
/// ‖ H3, suite's key+salt length). H3 covers both signed messages, hence names, epoch, suite,
/// group, both supported-groups lists, both key shares, nonces and SPIs.
pub fn derive_keys_v2(
    shared_secret: &[u8],
    suite: Suite,
    initiator_nonce: &[u8; NONCE_LEN],
    responder_nonce: &[u8; NONCE_LEN],
    h3: &TranscriptHash,
) -> Keys {
    derive(
        Version::V2,
        shared_secret,
        suite,
        initiator_nonce,
        responder_nonce,
        h3,
    )
}

fn derive(
    version: Version,
    shared_secret: &[u8],
    suite: Suite,
    initiator_nonce: &[u8; NONCE_LEN],
    responder_nonce: &[u8; NONCE_LEN],
    info: &[u8],
) -> Keys {
    let salt_bytes = [initiator_nonce.as_slice(), responder_nonce.as_slice()].concat();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt_bytes).extract(shared_secret);
    let len = suite.keymat_len();
    let key = |label| {
        // The length is the suite's own keymat length, so SaKey::new cannot refuse it.
        #[allow(clippy::expect_used)]
        SaKey::new(suite, expand(&prk, version, label, info, len)).expect("length is keymat_len")
    };
    let mut confirm_key = [0u8; MAC_LEN];
    confirm_key.copy_from_slice(&expand(&prk, version, LABEL_CONFIRM, info, MAC_LEN));
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
