//! Domain types shared by every Cipherlane part.
//!
//! ```text
//!   kex (handshake) ──> SaPair per peer ──> datapath (desired XFRM state)
//!          ^                                      ^
//!          └──── PeerSpec (from CipherlaneNode) ──┘
//! ```
//!
//! This crate owns the vocabulary — cipher suites, key-exchange groups, SPIs, rotation epochs, node names, peers and
//! the key material of one SA — and nothing else. It does no I/O, has no async runtime and no
//! Kubernetes or netlink types: every other crate may depend on it, it depends on none of them.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Errors from parsing or validating a domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    #[error(
        "unknown cipher suite {0:?}: expected one of aes-gcm-128, aes-gcm-256, chacha20-poly1305"
    )]
    UnknownSuite(String),
    #[error("SPI {0:#x} is reserved: SPIs 0-255 are reserved by RFC 4303; choose 256 or above")]
    ReservedSpi(u32),
    #[error("key for {suite} must be {expected} bytes (key and salt), got {got}")]
    KeyLength {
        suite: Suite,
        expected: usize,
        got: usize,
    },
    #[error("node name {0:?} is not a valid Kubernetes node name (lower-case DNS subdomain, at most 253 characters)")]
    NodeName(String),
    #[error(
        "unknown key-exchange group {0:?}: expected one of x25519-mlkem768, p256-mlkem768, x25519"
    )]
    UnknownGroup(String),
}

/// An ESP AEAD cipher suite. The names are the ones users write in a `RotationPolicy`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Suite {
    /// AES-GCM with a 128-bit key (`rfc4106(gcm(aes))`). The default.
    #[default]
    #[serde(rename = "aes-gcm-128")]
    AesGcm128,
    /// AES-GCM with a 256-bit key (`rfc4106(gcm(aes))`).
    #[serde(rename = "aes-gcm-256")]
    AesGcm256,
    /// ChaCha20-Poly1305 (`rfc7539esp(chacha20,poly1305)`), RFC 7634.
    #[serde(rename = "chacha20-poly1305")]
    Chacha20Poly1305,
}

impl Suite {
    /// Every suite, strongest-preferred order is not implied.
    pub const ALL: [Suite; 3] = [Suite::AesGcm128, Suite::AesGcm256, Suite::Chacha20Poly1305];

    /// The name users write (`aes-gcm-128`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesGcm128 => "aes-gcm-128",
            Suite::AesGcm256 => "aes-gcm-256",
            Suite::Chacha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// The kernel's AEAD algorithm name for `XFRMA_ALG_AEAD`.
    pub fn kernel_alg(self) -> &'static str {
        match self {
            Suite::AesGcm128 | Suite::AesGcm256 => "rfc4106(gcm(aes))",
            Suite::Chacha20Poly1305 => "rfc7539esp(chacha20,poly1305)",
        }
    }

    /// Cipher key length in bytes, without the salt.
    pub fn key_len(self) -> usize {
        match self {
            Suite::AesGcm128 => 16,
            Suite::AesGcm256 | Suite::Chacha20Poly1305 => 32,
        }
    }

    /// Salt (implicit nonce part) length in bytes: 4 for both RFC 4106 and RFC 7634.
    pub fn salt_len(self) -> usize {
        4
    }

    /// Bytes of keying material the kernel wants: key followed by salt.
    pub fn keymat_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// Integrity check value length in bytes (16 for every suite here).
    pub fn icv_len(self) -> usize {
        16
    }

    /// Explicit per-packet IV length in bytes carried in each ESP packet (8 for every suite here).
    pub fn iv_len(self) -> usize {
        8
    }

    /// Whether the suite is allowed when the FIPS setting is on (AES-GCM only).
    pub fn fips_approved(self) -> bool {
        matches!(self, Suite::AesGcm128 | Suite::AesGcm256)
    }

    /// A stable one-byte code used on the wire by the key exchange.
    pub fn code(self) -> u8 {
        match self {
            Suite::AesGcm128 => 1,
            Suite::AesGcm256 => 2,
            Suite::Chacha20Poly1305 => 3,
        }
    }

    /// The suite for a wire code, if known.
    pub fn from_code(code: u8) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.code() == code)
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL
            .into_iter()
            .find(|suite| suite.name() == s)
            .ok_or_else(|| CoreError::UnknownSuite(s.to_string()))
    }
}

/// A key-exchange group: how the two ends of a handshake agree on the shared secret. The names
/// are the ones published in `CipherlaneNode.spec.keyExchangeGroups` and written in a
/// `RotationPolicy`'s `spec.keyExchange`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KexGroup {
    /// X25519 alone (the previous release's only group; classical).
    #[serde(rename = "x25519")]
    X25519,
    /// The hybrid of ML-KEM-768 (FIPS 203) and X25519, as TLS's X25519MLKEM768: the ML-KEM
    /// secret first, then the X25519 secret. The default.
    #[serde(rename = "x25519-mlkem768")]
    X25519MlKem768,
    /// The hybrid of ECDH P-256 and ML-KEM-768, as TLS's SecP256r1MLKEM768 (ECDH secret first):
    /// the group of FIPS mode, where X25519 is not an approved key agreement.
    #[serde(rename = "p256-mlkem768")]
    P256MlKem768,
}

impl KexGroup {
    /// Every group this protocol knows.
    pub const ALL: [KexGroup; 3] = [
        KexGroup::X25519MlKem768,
        KexGroup::P256MlKem768,
        KexGroup::X25519,
    ];

    /// The name users write (`x25519-mlkem768`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KexGroup::X25519 => "x25519",
            KexGroup::X25519MlKem768 => "x25519-mlkem768",
            KexGroup::P256MlKem768 => "p256-mlkem768",
        }
    }

    /// Whether the group resists a quantum attacker (it includes ML-KEM).
    pub fn is_post_quantum(self) -> bool {
        !matches!(self, KexGroup::X25519)
    }

    /// A stable one-byte code used on the wire by the key exchange.
    pub fn code(self) -> u8 {
        match self {
            KexGroup::X25519 => 1,
            KexGroup::X25519MlKem768 => 2,
            KexGroup::P256MlKem768 => 3,
        }
    }

    /// The group for a wire code, if known.
    pub fn from_code(code: u8) -> Option<KexGroup> {
        KexGroup::ALL.into_iter().find(|g| g.code() == code)
    }
}

impl fmt::Display for KexGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KexGroup {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KexGroup::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| CoreError::UnknownGroup(s.to_string()))
    }
}

/// An ESP Security Parameter Index, chosen by the receiver; never 0-255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Spi(u32);

impl Spi {
    /// Makes an SPI, refusing the reserved range 0-255.
    pub fn new(value: u32) -> Result<Spi, CoreError> {
        if value <= 255 {
            Err(CoreError::ReservedSpi(value))
        } else {
            Ok(Spi(value))
        }
    }

    pub fn value(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Spi {
    type Error = CoreError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Spi::new(v)
    }
}

impl From<Spi> for u32 {
    fn from(s: Spi) -> u32 {
        s.0
    }
}

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A rotation epoch of a `RotationPolicy`: it only grows; a rotation moves it by one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Kubernetes node name, validated as a DNS subdomain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: impl Into<String>) -> Result<NodeName, CoreError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if ok {
            Ok(NodeName(name))
        } else {
            Err(CoreError::NodeName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeName::new(s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keying material of one SA direction: the suite's key followed by its salt.
#[derive(Clone, PartialEq, Eq)]
pub struct SaKey {
    suite: Suite,
    bytes: Vec<u8>,
}

impl SaKey {
    pub fn new(suite: Suite, bytes: Vec<u8>) -> Result<SaKey, CoreError> {
        if bytes.len() != suite.keymat_len() {
            return Err(CoreError::KeyLength {
                suite,
                expected: suite.keymat_len(),
                got: bytes.len(),
            });
        }
        Ok(SaKey { suite, bytes })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Key then salt, as the kernel's `XFRMA_ALG_AEAD` wants it.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for SaKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaKey({}, <{} bytes redacted>)",
            self.suite,
            self.bytes.len()
        )
    }
}

/// One direction of a keyed pair: the SPI (chosen by that direction's receiver) and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaDirection {
    pub spi: Spi,
    pub key: SaKey,
}

/// The two SAs that a handshake with one peer produces, seen from the local node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaPair {
    pub epoch: Epoch,
    pub suite: Suite,
    /// Peer → local; the local node chose this SPI.
    pub inbound: SaDirection,
    /// Local → peer; the peer chose this SPI.
    pub outbound: SaDirection,
}

/// What the local node knows of a peer node from the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: NodeName,
    /// Tunnel endpoint: the peer's InternalIP.
    pub node_ip: IpAddr,
    pub pod_cidrs: Vec<IpNet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_round_trip_through_strings_and_wire_codes() {
        for s in Suite::ALL {
            assert_eq!(s.name().parse::<Suite>(), Ok(s));
            assert_eq!(Suite::from_code(s.code()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).expect("serialises"),
                format!("\"{}\"", s.name())
            );
        }
    }

    #[test]
    fn group_names_round_trip_through_strings_serde_and_wire_codes() {
        for g in KexGroup::ALL {
            assert_eq!(g.name().parse::<KexGroup>(), Ok(g));
            assert_eq!(KexGroup::from_code(g.code()), Some(g));
            assert_eq!(
                serde_json::to_string(&g).expect("serialises"),
                format!("\"{}\"", g.name())
            );
        }
        assert_eq!(KexGroup::from_code(0), None);
        let err = "kyber".parse::<KexGroup>().expect_err("unknown");
        assert!(err.to_string().contains("x25519-mlkem768"), "{err}");
        assert!(!KexGroup::X25519.is_post_quantum());
        assert!(
            KexGroup::X25519MlKem768.is_post_quantum() && KexGroup::P256MlKem768.is_post_quantum()
        );
    }

    #[test]
    fn an_unknown_suite_names_the_choices() {
        let err = "aes-cbc".parse::<Suite>().expect_err("must fail");
        assert!(err.to_string().contains("aes-gcm-128"), "{err}");
    }

    #[test]
    fn only_aes_gcm_is_fips_approved() {
        assert!(Suite::AesGcm128.fips_approved());
        assert!(Suite::AesGcm256.fips_approved());
        assert!(!Suite::Chacha20Poly1305.fips_approved());
    }

    #[test]
    fn keymat_is_key_plus_four_byte_salt() {
        assert_eq!(Suite::AesGcm128.keymat_len(), 20);
        assert_eq!(Suite::AesGcm256.keymat_len(), 36);
        assert_eq!(Suite::Chacha20Poly1305.keymat_len(), 36);
    }

    #[test]
    fn reserved_spis_are_refused() {
        assert!(Spi::new(0).is_err());
        assert!(Spi::new(255).is_err());
        assert_eq!(Spi::new(256).map(Spi::value), Ok(256));
        assert!(serde_json::from_str::<Spi>("7").is_err());
    }

    #[test]
    fn node_names_must_be_dns_subdomains() {
        assert!(NodeName::new("node-1.example").is_ok());
        assert!(NodeName::new("Node1").is_err());
        assert!(NodeName::new("").is_err());
        assert!(NodeName::new("-a").is_err());
        assert!(NodeName::new("a".repeat(254)).is_err());
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_and_keys_never_print() {
        assert!(SaKey::new(Suite::AesGcm128, vec![0; 16]).is_err());
        let key = SaKey::new(Suite::AesGcm128, vec![7; 20]).expect("right length");
        assert!(!format!("{key:?}").contains('7'));
    }
}
