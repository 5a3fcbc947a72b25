//! The key exchange on the network: a tonic service and client around the sans-I/O state
//! machine of `cipherlane-kex`, plus the node identity key file.
//!
//! ```text
//!   KexClient::handshake(peer, addr)             KexService (KeyExchangeServer)
//!     Endpoint::initiate ── Frame(init) ──────>   Endpoint::respond
//!                                                  SaInstaller::install_inbound
//!     Initiator::on_response <── Frame(resp) ──┘
//!       install_inbound, switch_outbound
//!     ── Frame(confirm), end of client stream ─>   Responder::on_confirm
//!                                                  switch_outbound, established
//!     established  <───────── status OK ───────┘
//! ```
//!
//! One bidirectional-stream RPC carries a whole handshake; a client keeps one HTTP/2 connection
//! per peer address and reuses it for every handshake. The transport is plain HTTP/2: every
//! message is authenticated by the protocol itself and carries only public values.
//! This crate never sees Kubernetes; the agent feeds the `PeerDirectory` from the API server.
#![forbid(unsafe_code)]

pub mod client;
pub mod identity;
pub mod server;
mod status;

/// Generated from proto/kex.proto.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("cipherlane.kex.v1");
}

pub use client::{ClientConfig, HandshakeError, KexClient};
pub use identity::{parse_public_key_base64, IdentityError, NodeIdentity};
pub use server::{serve, KexService};

/// Largest gRPC message either side accepts; the protocol's own limit is smaller
/// (`cipherlane_kex::MAX_MESSAGE_LEN`), so anything between the two is refused and counted by
/// the state machine as oversized.
pub const MAX_GRPC_MESSAGE: usize = 4 * 1024;
