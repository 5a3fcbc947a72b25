//! The three key-exchange messages and their byte encoding.
//!
//! This module owns the wire format (docs/protocol.md, "Messages") and nothing else: it checks
//! shape (lengths, known codes, valid node names, SPIs outside 0-255, no trailing bytes) but no
//! signature, freshness or policy. Decoding never panics on any input; the fuzz target
//! `fuzz/fuzz_targets/decode_message.rs` feeds it arbitrary bytes.
//!
//! Every message starts with a version byte (1) and a kind byte (1 init, 2 response, 3 confirm).
//! Integers are big-endian; names are one length byte followed by that many bytes.

use cipherlane_core::{Epoch, NodeName, Spi, Suite};

/// The protocol version carried in the first byte of every message.
pub const VERSION: u8 = 1;
/// No message is longer than this; longer input is refused before any parsing.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// X25519 public key length.
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
    #[error("protocol version {0} is not supported (this node speaks version {VERSION})")]
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
}

/// Message 1, initiator → responder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init {
    pub initiator: NodeName,
    pub responder: NodeName,
    pub epoch: Epoch,
    pub suite: Suite,
    pub ephemeral: [u8; EPHEMERAL_LEN],
    pub nonce: [u8; NONCE_LEN],
    /// The SPI the initiator chose for its inbound SA (responder → initiator).
    pub initiator_spi: Spi,
    /// Initiator's wall clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub signature: [u8; SIGNATURE_LEN],
}

/// Message 2, responder → initiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub ephemeral: [u8; EPHEMERAL_LEN],
    pub nonce: [u8; NONCE_LEN],
    /// The SPI the responder chose for its inbound SA (initiator → responder).
    pub responder_spi: Spi,
    pub signature: [u8; SIGNATURE_LEN],
}

/// Message 3, initiator → responder: the key confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
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
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let msg = match r.u8("kind")? {
            KIND_INIT => Message::Init(Init {
                initiator: r.name("initiator")?,
                responder: r.name("responder")?,
                epoch: Epoch(r.u64("epoch")?),
                suite: r.suite()?,
                ephemeral: r.array("ephemeral")?,
                nonce: r.array("nonce")?,
                initiator_spi: r.spi("initiator_spi")?,
                timestamp_ms: r.u64("timestamp")?,
                signature: r.array("signature")?,
            }),
            KIND_RESPONSE => Message::Response(Response {
                ephemeral: r.array("ephemeral")?,
                nonce: r.array("nonce")?,
                responder_spi: r.spi("responder_spi")?,
                signature: r.array("signature")?,
            }),
            KIND_CONFIRM => Message::Confirm(Confirm {
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
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[VERSION, KIND_INIT]);
        put_name(&mut out, &self.initiator);
        put_name(&mut out, &self.responder);
        out.extend_from_slice(&self.epoch.0.to_be_bytes());
        out.push(self.suite.code());
        out.extend_from_slice(&self.ephemeral);
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
        let mut out = Vec::with_capacity(2 + EPHEMERAL_LEN + NONCE_LEN + 4 + SIGNATURE_LEN);
        out.extend_from_slice(&[VERSION, KIND_RESPONSE]);
        out.extend_from_slice(&self.ephemeral);
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
        out.extend_from_slice(&[VERSION, KIND_CONFIRM]);
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
            initiator: NodeName::new("node-a").expect("valid"),
            responder: NodeName::new("node-b").expect("valid"),
            epoch: Epoch(7),
            suite: Suite::AesGcm256,
            ephemeral: [1; 32],
            nonce: [2; 32],
            initiator_spi: Spi::new(0x1000).expect("valid"),
            timestamp_ms: 1_700_000_000_000,
            signature: [3; 64],
        }
    }

    #[test]
    fn every_message_round_trips_through_its_encoding() {
        let msgs = [
            Message::Init(sample_init()),
            Message::Response(Response {
                ephemeral: [4; 32],
                nonce: [5; 32],
                responder_spi: Spi::new(0x2000).expect("valid"),
                signature: [6; 64],
            }),
            Message::Confirm(Confirm { mac: [7; 32] }),
        ];
        for m in msgs {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn every_truncation_of_a_message_is_refused() {
        let bytes = sample_init().encode();
        for n in 0..bytes.len() {
            assert!(Message::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
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
        assert_eq!(Message::decode(&[2, 1]), Err(DecodeError::Version(2)));
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
        let confirm = Confirm { mac: [0; 32] }.encode();
        assert!(matches!(
            Init::decode(&confirm),
            Err(DecodeError::UnexpectedKind {
                expected: "init",
                got: "confirm"
            })
        ));
    }
}
