//! The three key-exchange messages and their byte encoding.
//!
//! This module owns the wire format (docs/protocol.md, "Messages") and nothing else: it checks
//! shape (lengths, known codes, valid node names, SPIs outside 0-255, no trailing bytes) but no
//! signature, freshness or policy. Decoding never panics on any input; the fuzz target
//! `fuzz/fuzz_targets/decode_message.rs` feeds it arbitrary bytes.
//!
//! Every message starts with a version byte and a kind byte (1 init, 2 response, 3 confirm).
//! Version 1 is the previous release's format (X25519 only, a 32-byte ephemeral key); version 2
//! adds the key-exchange group, each side's supported groups and a length-prefixed key share of
//! the group's exact size. Integers are big-endian; names are one length byte followed by that
//! many bytes.

use cipherlane_core::{Epoch, KexGroup, NodeName, Spi, Suite};

use crate::share::share_lengths;

/// A protocol version: the first byte of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// The previous release's format: X25519 only, no negotiation fields.
    V1,
    /// Groups: the group, both sides' supported groups, a key share sized by the group.
    V2,
}

impl Version {
    pub fn byte(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Version> {
        match b {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }
}

/// No message is longer than this; longer input is refused before any parsing. The largest
/// possible version-2 init (two 253-byte names, a 1249-byte share) fits.
pub const MAX_MESSAGE_LEN: usize = 2048;
/// At most this many groups in a supported-groups list.
pub const MAX_GROUPS: usize = 16;
/// X25519 public key length (the share of version 1).
pub const EPHEMERAL_LEN: usize = 32;
/// Nonce length.
pub const NONCE_LEN: usize = 32;
/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// HMAC-SHA256 tag length of the confirm.
pub const MAC_LEN: usize = 32;

const KIND_INIT: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_CONFIRM: u8 = 3;

/// Why bytes are not a well-formed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is longer than the {MAX_MESSAGE_LEN}-byte limit")]
    Oversized(usize),
    #[error("message ends early: needed {needed} more bytes for {field}")]
    Truncated { field: &'static str, needed: usize },
    #[error("protocol version {0} is not supported (this node speaks versions 1 and 2)")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("expected a {expected} message, got a {got}")]
    UnexpectedKind {
        expected: &'static str,
        got: &'static str,
    },
    #[error("{0} bytes follow the end of the message")]
    Trailing(usize),
    #[error("field {field} is invalid: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("the {field} is {got} bytes; group {group} needs exactly {expected}")]
    ShareLength {
        field: &'static str,
        group: KexGroup,
        expected: usize,
        got: usize,
    },
}

/// Message 1, initiator → responder.
///
/// In version 1, `group` is always `x25519`, `offered` is empty and `share` is the 32-byte
/// X25519 key (none of them is on the wire but the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init {
    pub version: Version,
    pub initiator: NodeName,
    pub responder: NodeName,
    pub epoch: Epoch,
    pub suite: Suite,
    /// The group of `share` (version 2).
    pub group: KexGroup,
    /// The groups the initiator supports, as it publishes them: wire codes, unknown ones kept
    /// (version 2; a later release may know more groups).
    pub offered: Vec<u8>,
    /// The initiator's key share of `group` (docs/protocol.md §4a).
    pub share: Vec<u8>,
    pub nonce: [u8; NONCE_LEN],
    /// The SPI the initiator chose for its inbound SA (responder → initiator).
    pub initiator_spi: Spi,
    /// Initiator's wall clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub signature: [u8; SIGNATURE_LEN],
}

/// Message 2, responder → initiator. In version 1, `group` is `x25519` and `supported` empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    /// The group of `share`: the init's (version 2).
    pub group: KexGroup,
    /// The groups the responder supports, as it publishes them (version 2).
    pub supported: Vec<u8>,
    /// The responder's key share of `group`.
    pub share: Vec<u8>,
    pub nonce: [u8; NONCE_LEN],
    /// The SPI the responder chose for its inbound SA (initiator → responder).
    pub responder_spi: Spi,
    pub signature: [u8; SIGNATURE_LEN],
}

/// Message 3, initiator → responder: the key confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    pub version: Version,
    pub mac: [u8; MAC_LEN],
}

/// Any of the three messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Init(Init),
    Response(Response),
    Confirm(Confirm),
}

impl Message {
    fn kind_name(&self) -> &'static str {
        match self {
            Message::Init(_) => "init",
            Message::Response(_) => "response",
            Message::Confirm(_) => "confirm",
        }
    }

    /// Decodes one message, refusing anything malformed or oversized.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::Oversized(bytes.len()));
        }
        let mut r = Reader { rest: bytes };
        let byte = r.u8("version")?;
        let version = Version::from_byte(byte).ok_or(DecodeError::Version(byte))?;
        let msg = match r.u8("kind")? {
            KIND_INIT => {
                let initiator = r.name("initiator")?;
                let responder = r.name("responder")?;
                let epoch = Epoch(r.u64("epoch")?);
                let suite = r.suite()?;
                let (group, offered, share) = match version {
                    Version::V1 => (
                        KexGroup::X25519,
                        Vec::new(),
                        r.take("ephemeral", EPHEMERAL_LEN)?.to_vec(),
                    ),
                    Version::V2 => {
                        let group = r.group()?;
                        let offered = r.groups("offered groups")?;
                        let share = r.share("initiator share", group, share_lengths(group).0)?;
                        (group, offered, share)
                    }
                };
                Message::Init(Init {
                    version,
                    initiator,
                    responder,
                    epoch,
                    suite,
                    group,
                    offered,
                    share,
                    nonce: r.array("nonce")?,
                    initiator_spi: r.spi("initiator_spi")?,
                    timestamp_ms: r.u64("timestamp")?,
                    signature: r.array("signature")?,
                })
            }
            KIND_RESPONSE => {
                let (group, supported, share) = match version {
                    Version::V1 => (
                        KexGroup::X25519,
                        Vec::new(),
                        r.take("ephemeral", EPHEMERAL_LEN)?.to_vec(),
                    ),
                    Version::V2 => {
                        let group = r.group()?;
                        let supported = r.groups("supported groups")?;
                        let share = r.share("responder share", group, share_lengths(group).1)?;
                        (group, supported, share)
                    }
                };
                Message::Response(Response {
                    version,
                    group,
                    supported,
                    share,
                    nonce: r.array("nonce")?,
                    responder_spi: r.spi("responder_spi")?,
                    signature: r.array("signature")?,
                })
            }
            KIND_CONFIRM => Message::Confirm(Confirm {
                version,
                mac: r.array("mac")?,
            }),
            other => return Err(DecodeError::Kind(other)),
        };
        if !r.rest.is_empty() {
            return Err(DecodeError::Trailing(r.rest.len()));
        }
        Ok(msg)
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Init(m) => m.encode(),
            Message::Response(m) => m.encode(),
            Message::Confirm(m) => m.encode(),
        }
    }
}

impl Init {
    /// The signed part: everything but the signature.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(300 + self.share.len());
        out.extend_from_slice(&[self.version.byte(), KIND_INIT]);
        put_name(&mut out, &self.initiator);
        put_name(&mut out, &self.responder);
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.push(self.suite.code());
        put_exchange(
            &mut out,
            self.version,
            self.group,
            &self.offered,
            &self.share,
        );
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.initiator_spi.value().to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_unsigned();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes bytes that must be an init.
    pub fn decode(bytes: &[u8]) -> Result<Init, DecodeError> {
        match Message::decode(bytes)? {
            Message::Init(m) => Ok(m),
            other => Err(DecodeError::UnexpectedKind {
                expected: "init",
                got: other.kind_name(),
            }),
        }
    }
}

impl Response {
    /// The signed part: everything but the signature.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + MAX_GROUPS + self.share.len() + NONCE_LEN + 4 + SIGNATURE_LEN);
        out.extend_from_slice(&[self.version.byte(), KIND_RESPONSE]);
        put_exchange(
            &mut out,
            self.version,
            self.group,
            &self.supported,
            &self.share,
        );
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.responder_spi.value().to_be_bytes());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_unsigned();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes bytes that must be a response.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        match Message::decode(bytes)? {
            Message::Response(m) => Ok(m),
            other => Err(DecodeError::UnexpectedKind {
                expected: "response",
                got: other.kind_name(),
            }),
        }
    }
}

impl Confirm {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + MAC_LEN);
        out.extend_from_slice(&[self.version.byte(), KIND_CONFIRM]);
        out.extend_from_slice(&self.mac);
        out
    }

    /// Decodes bytes that must be a confirm.
    pub fn decode(bytes: &[u8]) -> Result<Confirm, DecodeError> {
        match Message::decode(bytes)? {
            Message::Confirm(m) => Ok(m),
            other => Err(DecodeError::UnexpectedKind {
                expected: "confirm",
                got: other.kind_name(),
            }),
        }
    }
}

/// Version 1: the 32-byte X25519 key only. Version 2: group code, groups (count byte, codes),
/// share (u16 length, bytes).
fn put_exchange(out: &mut Vec<u8>, version: Version, group: KexGroup, groups: &[u8], share: &[u8]) {
    if version == Version::V2 {
        out.push(group.code());
        // At most MAX_GROUPS codes (the decoder refuses more; the encoder is only fed lists
        // built from known groups or decoded ones).
        out.push(groups.len().min(MAX_GROUPS) as u8);
        out.extend_from_slice(&groups[..groups.len().min(MAX_GROUPS)]);
        // Shares are at most 1249 bytes, far below u16::MAX.
        out.extend_from_slice(&(share.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(share);
}

/// The wire codes of `groups`, for `Init::offered` and `Response::supported`.
pub fn group_codes(groups: &[KexGroup]) -> Vec<u8> {
    groups.iter().map(|g| g.code()).collect()
}

/// The groups this protocol knows among `codes` (unknown codes are skipped).
pub fn known_groups(codes: &[u8]) -> Vec<KexGroup> {
    codes
        .iter()
        .filter_map(|&c| KexGroup::from_code(c))
        .collect()
}

fn put_name(out: &mut Vec<u8>, name: &NodeName) {
    // NodeName guarantees 1..=253 bytes, so the length fits in one byte.
    out.push(name.as_str().len() as u8);
    out.extend_from_slice(name.as_str().as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n - self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn name(&mut self, field: &'static str) -> Result<NodeName, DecodeError> {
        let len = self.u8(field)? as usize;
        let raw = self.take(field, len)?;
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError::Field {
            field,
            reason: "not UTF-8".into(),
        })?;
        NodeName::new(text).map_err(|e| DecodeError::Field {
            field,
            reason: e.to_string(),
        })
    }

    fn suite(&mut self) -> Result<Suite, DecodeError> {
        let code = self.u8("suite")?;
        Suite::from_code(code).ok_or(DecodeError::Field {
            field: "suite",
            reason: format!("unknown suite code {code}"),
        })
    }

    fn group(&mut self) -> Result<KexGroup, DecodeError> {
        let code = self.u8("group")?;
        KexGroup::from_code(code).ok_or(DecodeError::Field {
            field: "group",
            reason: format!("unknown key-exchange group code {code}"),
        })
    }

    /// A count byte (1..=MAX_GROUPS) and that many distinct, non-zero codes.
    fn groups(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let n = self.u8(field)? as usize;
        if n == 0 || n > MAX_GROUPS {
            return Err(DecodeError::Field {
                field,
                reason: format!("{n} groups; 1 to {MAX_GROUPS} expected"),
            });
        }
        let codes = self.take(field, n)?.to_vec();
        for (i, c) in codes.iter().enumerate() {
            if *c == 0 || codes[..i].contains(c) {
                return Err(DecodeError::Field {
                    field,
                    reason: format!("group code {c} is zero or repeated"),
                });
            }
        }
        Ok(codes)
    }

    /// A u16 length, which must be the group's share length, and the share.
    fn share(
        &mut self,
        field: &'static str,
        group: KexGroup,
        expected: usize,
    ) -> Result<Vec<u8>, DecodeError> {
        let got = u16::from_be_bytes(self.array(field)?) as usize;
        if got != expected {
            return Err(DecodeError::ShareLength {
                field,
                group,
                expected,
                got,
            });
        }
        Ok(self.take(field, got)?.to_vec())
    }

    fn spi(&mut self, field: &'static str) -> Result<Spi, DecodeError> {
        let v = self.u32(field)?;
        Spi::new(v).map_err(|e| DecodeError::Field {
            field,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_init() -> Init {
        Init {
            version: Version::V1,
            initiator: NodeName::new("node-a").expect("valid"),
            responder: NodeName::new("node-b").expect("valid"),
            epoch: Epoch(7),
            suite: Suite::AesGcm256,
            group: KexGroup::X25519,
            offered: Vec::new(),
            share: vec![1; 32],
            nonce: [2; 32],
            initiator_spi: Spi::new(0x1000).expect("valid"),
            timestamp_ms: 1_700_000_000_000,
            signature: [3; 64],
        }
    }

    fn sample_hybrid_init() -> Init {
        Init {
            version: Version::V2,
            group: KexGroup::X25519MlKem768,
            offered: group_codes(&[KexGroup::X25519MlKem768, KexGroup::X25519]),
            share: vec![9; 1216],
            ..sample_init()
        }
    }

    fn sample_hybrid_response() -> Response {
        Response {
            version: Version::V2,
            group: KexGroup::X25519MlKem768,
            supported: vec![2, 1, 77],
            share: vec![4; 1120],
            nonce: [5; 32],
            responder_spi: Spi::new(0x2000).expect("valid"),
            signature: [6; 64],
        }
    }

    #[test]
    fn every_message_of_both_versions_round_trips_through_its_encoding() {
        let msgs = [
            Message::Init(sample_init()),
            Message::Init(sample_hybrid_init()),
            Message::Response(Response {
                version: Version::V1,
                group: KexGroup::X25519,
                supported: Vec::new(),
                share: vec![4; 32],
                nonce: [5; 32],
                responder_spi: Spi::new(0x2000).expect("valid"),
                signature: [6; 64],
            }),
            Message::Response(sample_hybrid_response()),
            Message::Confirm(Confirm {
                version: Version::V1,
                mac: [7; 32],
            }),
            Message::Confirm(Confirm {
                version: Version::V2,
                mac: [7; 32],
            }),
        ];
        for m in msgs {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn the_version_1_layout_is_unchanged_from_the_previous_release() {
        // version, kind, 2 names, epoch, suite, 32-byte key, nonce, SPI, timestamp, signature
        let bytes = sample_init().encode();
        assert_eq!(bytes.len(), 2 + 7 + 7 + 8 + 1 + 32 + 32 + 4 + 8 + 64);
        assert_eq!(&bytes[..2], &[1, 1]);
        assert_eq!(&bytes[25..57], &[1; 32], "the X25519 key follows the suite");
    }

    #[test]
    fn every_truncation_of_a_message_is_refused() {
        for bytes in [
            sample_init().encode(),
            sample_hybrid_init().encode(),
            sample_hybrid_response().encode(),
        ] {
            for n in 0..bytes.len() {
                assert!(Message::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
            }
        }
    }

    #[test]
    fn a_share_or_ciphertext_of_the_wrong_size_is_refused_with_its_sizes() {
        let mut short = sample_hybrid_response();
        short.share.truncate(1087);
        assert_eq!(
            Message::decode(&short.encode()),
            Err(DecodeError::ShareLength {
                field: "responder share",
                group: KexGroup::X25519MlKem768,
                expected: 1120,
                got: 1087
            })
        );
        let mut long = sample_hybrid_init();
        long.share.push(0);
        assert!(matches!(
            Message::decode(&long.encode()),
            Err(DecodeError::ShareLength {
                expected: 1216,
                got: 1217,
                ..
            })
        ));
        // an X25519-sized share under the hybrid group
        let mut classical_share = sample_hybrid_init();
        classical_share.share = vec![1; 32];
        assert!(matches!(
            Message::decode(&classical_share.encode()),
            Err(DecodeError::ShareLength { got: 32, .. })
        ));
    }

    #[test]
    fn group_lists_must_be_short_distinct_and_non_empty_and_the_group_known() {
        let good = sample_hybrid_init().encode();
        let group_at = 2 + 7 + 7 + 8 + 1;
        let mut unknown = good.clone();
        unknown[group_at] = 99;
        assert!(matches!(
            Message::decode(&unknown),
            Err(DecodeError::Field { field: "group", .. })
        ));
        let mut repeated = good.clone();
        repeated[group_at + 3] = repeated[group_at + 2];
        assert!(matches!(
            Message::decode(&repeated),
            Err(DecodeError::Field {
                field: "offered groups",
                ..
            })
        ));
        let mut none = sample_hybrid_init();
        none.offered.clear();
        assert!(Message::decode(&none.encode()).is_err());
        // unknown codes in a list are kept (a later release may know more groups)
        let r = sample_hybrid_response();
        assert_eq!(
            known_groups(&r.supported),
            [KexGroup::X25519MlKem768, KexGroup::X25519]
        );
    }

    #[test]
    fn trailing_bytes_oversized_input_and_unknown_codes_are_refused() {
        let mut bytes = sample_init().encode();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(DecodeError::Trailing(1)));
        assert_eq!(
            Message::decode(&vec![1u8; MAX_MESSAGE_LEN + 1]),
            Err(DecodeError::Oversized(MAX_MESSAGE_LEN + 1))
        );
        assert_eq!(Message::decode(&[3, 1]), Err(DecodeError::Version(3)));
        assert_eq!(Message::decode(&[1, 9]), Err(DecodeError::Kind(9)));
    }

    #[test]
    fn reserved_spis_bad_suites_and_bad_names_are_refused() {
        let good = sample_init().encode();
        // SPI sits 4+8 bytes before the signature's 64 at the end.
        let spi_at = good.len() - 64 - 8 - 4;
        let mut bad_spi = good.clone();
        bad_spi[spi_at..spi_at + 4].copy_from_slice(&7u32.to_be_bytes());
        assert!(matches!(
            Message::decode(&bad_spi),
            Err(DecodeError::Field {
                field: "initiator_spi",
                ..
            })
        ));
        let suite_at = 2 + 7 + 7 + 8;
        let mut bad_suite = good.clone();
        bad_suite[suite_at] = 99;
        assert!(matches!(
            Message::decode(&bad_suite),
            Err(DecodeError::Field { field: "suite", .. })
        ));
        let mut bad_name = good;
        bad_name[3] = b'A';
        assert!(matches!(
            Message::decode(&bad_name),
            Err(DecodeError::Field {
                field: "initiator",
                ..
            })
        ));
    }

    #[test]
    fn a_message_of_the_wrong_kind_is_refused_by_the_typed_decoder() {
        let confirm = Confirm {
            version: Version::V1,
            mac: [0; 32],
        }
        .encode();
        assert!(matches!(
            Init::decode(&confirm),
            Err(DecodeError::UnexpectedKind {
                expected: "init",
                got: "confirm"
            })
        ));
    }
}
