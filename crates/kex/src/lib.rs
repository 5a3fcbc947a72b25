//! Cipherlane's authenticated pairwise key exchange, as a sans-I/O state machine.
//!
//! ```text
//!            PeerDirectory (trait; agent fills it from CipherlaneNode + RotationPolicy)
//!                  │ identity keys, revocations, epoch, allowed suites
//!                  v
//!   bytes ──> Endpoint::respond / Initiator::on_response / Responder::on_confirm ──> Vec<Action>
//!                  │  wire (codec) · schedule (transcript, HKDF, HMAC) · replay (nonces)
//!                  │  spi (receiver-chosen SPIs) · pacing (initiator rule, backoff, limits)
//!                  v
//!   Action::Send(bytes) | InstallInbound | SwitchOutbound | Established(SaPair)
//!                  │ executed by the caller (cipherlane-kex-grpc) through SaInstaller
//! ```
//!
//! This crate owns the protocol of docs/protocol.md: message encoding (versions 1 and 2), the
//! transcript, the key-exchange groups and their negotiation, the key schedule (X25519,
//! HKDF-SHA256, Ed25519 and HMAC-SHA256 from `ring`; ML-KEM-768 from `libcrux-ml-kem`), the
//! handshake states and every refusal. It must not open sockets, spawn tasks or read files; time comes
//! from an injected [`Clock`], randomness from an injected `ring` random source.
#![forbid(unsafe_code)]

pub mod clock;
pub mod directory;
pub mod error;
pub mod handshake;
pub mod installer;
pub mod negotiate;
pub mod pacing;
pub mod replay;
pub mod schedule;
pub mod share;
pub mod spi;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use directory::{InMemoryDirectory, PairPolicy, PeerDirectory, PeerEntry};
pub use error::{GroupRefusal, KexError, KexMetrics, RejectionKind};
pub use handshake::{Action, Endpoint, Initiator, KexConfig, Responder};
pub use installer::{InMemoryInstaller, InstallError, InstallerCall, SaInstaller};
pub use negotiate::KeyExchangePolicy;
pub use pacing::{
    initiates, ConcurrencyLimit, Crossing, HandshakeSlot, PairGuard, PairGuards, PeerRateLimit,
    RetrySchedule,
};
pub use share::SUPPORTED_GROUPS;
pub use spi::{SpiAllocator, SpiExhausted};
pub use wire::{DecodeError, Message, Version, MAX_MESSAGE_LEN};
