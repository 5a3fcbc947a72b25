//! Cipherlane's rotation decisions, as pure functions over plain values.
//!
//! ```text
//!   RotationPolicy specs ──> PolicySet ──> node policy, pair policy (effective_policy)
//!   spec + status + now  ──> RotationDecision (schedule)      ──> operator patches status
//!   node, epoch, N       ──> stagger slot (stagger)           ──> agent delays its re-key
//!   per-peer states      ──> PeerSummary, O(policies) (summary) ──> agent patches its status
//!   node summaries       ──> Convergence + conditions (convergence) ──> operator status
//!   Lease + now          ──> LeaseDecision (lease)            ──> operator leader election
//! ```
//!
//! This crate owns *what* to do; it never talks to the API server, reads a clock or sleeps:
//! every function takes `now` as an argument, so tests step time in memory. It reads the
//! `cipherlane-k8s-api` types only as data.
#![forbid(unsafe_code)]

/// The timestamp type used throughout (re-exported from k8s-openapi).
pub use cipherlane_k8s_api::k8s_openapi::jiff::Timestamp;

pub mod convergence;
pub mod duration;
pub mod effective_policy;
pub mod lease;
pub mod schedule;
pub mod selector;
pub mod stagger;
pub mod summary;

pub use convergence::{Convergence, PolicyConditions};
pub use duration::{parse_duration, DurationError};
pub use effective_policy::{PolicyRef, PolicySet};
pub use lease::{LeaseDecision, LeaseRecord};
pub use schedule::{RotationDecision, RotationReason};
pub use selector::Selector;
pub use stagger::Stagger;
pub use summary::{PeerState, PeerSummary};
