//! Why a handshake was refused or failed: one typed error per cause, each with a stable metric
//! label ([`RejectionKind`]) and counters for them ([`KexMetrics`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cipherlane_core::{Epoch, KexGroup, NodeName, Suite};

use crate::negotiate::names;

use crate::spi::SpiExhausted;
use crate::wire::DecodeError;

/// A refused or failed handshake step. Never a panic: every input maps to one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KexError {
    #[error("malformed key-exchange message: {0}")]
    Malformed(DecodeError),
    #[error("node {0} is not in the peer directory (no CipherlaneNode with an identity key)")]
    UnknownNode(NodeName),
    #[error("node {0} is revoked by policy: no SA may be made with it")]
    Revoked(NodeName),
    #[error(
        "signature of {peer} on the {message} does not verify against its published identity key"
    )]
    BadSignature {
        peer: NodeName,
        message: &'static str,
    },
    #[error("init from {peer} replays a nonce already seen")]
    Replay { peer: NodeName },
    #[error("init from {peer} is outside the freshness window ({skew_ms} ms from the local clock; check NTP on both nodes)")]
    OutsideWindow { peer: NodeName, skew_ms: i64 },
    #[error("reflection: node {0} was asked to handshake with itself")]
    Reflection(NodeName),
    #[error("init addressed to {addressed} reached {local}")]
    Misdirected {
        addressed: NodeName,
        local: NodeName,
    },
    #[error("init from {peer} is at epoch {offered}, older than the current epoch {current}")]
    StaleEpoch {
        peer: NodeName,
        offered: Epoch,
        current: Epoch,
    },
    #[error(
        "suite {suite} from {peer} is not allowed by the pair's policy (allowed: {allowed:?})"
    )]
    SuiteNotAllowed {
        peer: NodeName,
        suite: Suite,
        allowed: Vec<Suite>,
    },
    #[error("key-exchange group refused for {peer}: {refusal}")]
    GroupNotAllowed {
        peer: NodeName,
        refusal: GroupRefusal,
    },
    #[error("{peer}'s {message} lists the groups [{}], but its CipherlaneNode publishes {} (a stripped or stale offer; refused until the two agree)", names(.sent), .published.as_deref().map(|p| format!("[{}]", names(p))).unwrap_or_else(|| "none (a node of the previous release)".into()))]
    GroupMismatch {
        peer: NodeName,
        message: &'static str,
        sent: Vec<KexGroup>,
        published: Option<Vec<KexGroup>>,
    },
    #[error("key share from {peer} refused: {error}")]
    BadShare {
        peer: NodeName,
        error: crate::share::ShareError,
    },
    #[error("confirm from {peer} carries a wrong MAC")]
    BadConfirm { peer: NodeName },
    #[error("peer {peer} is over its handshake rate limit; retry in {retry_after:?}")]
    RateLimited {
        peer: NodeName,
        retry_after: Duration,
    },
    #[error("this node is at its limit of {limit} ({what}); retry later")]
    Overloaded { what: &'static str, limit: usize },
    #[error("handshake with {peer} not started: {}", .crossing.as_str())]
    Collision {
        peer: NodeName,
        crossing: crate::pacing::Crossing,
    },
    #[error("handshake with {peer} timed out waiting for the {step}")]
    Timeout { peer: NodeName, step: &'static str },
    #[error(transparent)]
    Spi(#[from] SpiExhausted),
    #[error("the system random source failed")]
    Random,
}

/// Why a key-exchange group cannot be used with a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRefusal {
    /// The initiator used a weaker group than the one both nodes publish and the policy wants.
    Downgrade {
        offered: KexGroup,
        expected: KexGroup,
    },
    /// The policy is strict and the group is not post-quantum.
    Strict { offered: KexGroup },
    /// This node does not implement the group.
    Unsupported {
        offered: KexGroup,
        local: Vec<KexGroup>,
    },
    /// The two nodes share no group the policy allows.
    NoCommonGroup {
        local: Vec<KexGroup>,
        peer: Option<Vec<KexGroup>>,
        strict: bool,
    },
}

impl std::fmt::Display for GroupRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupRefusal::Downgrade { offered, expected } => write!(
                f,
                "{offered} is weaker than {expected}, which both nodes publish and the pair's policy selects (downgrade)"
            ),
            GroupRefusal::Strict { offered } => write!(
                f,
                "{offered} is not post-quantum and the pair's policy is strict (strictKeyExchange: true)"
            ),
            GroupRefusal::Unsupported { offered, local } => write!(
                f,
                "{offered} is not implemented here (this node supports {})",
                names(local)
            ),
            GroupRefusal::NoCommonGroup {
                local,
                peer,
                strict,
            } => {
                write!(
                    f,
                    "no common group: this node supports [{}], the peer {}",
                    names(local),
                    match peer {
                        Some(p) => format!("publishes [{}]", names(p)),
                        None => "runs the previous release (x25519 only)".into(),
                    }
                )?;
                if *strict {
                    f.write_str("; the pair's policy is strict (post-quantum only)")?;
                }
                if local.contains(&KexGroup::P256MlKem768)
                    != peer
                        .as_deref()
                        .is_some_and(|p| p.contains(&KexGroup::P256MlKem768))
                {
                    f.write_str("; a FIPS node pairs only with FIPS nodes")?;
                }
                Ok(())
            }
        }
    }
}

/// The label a rejection is counted under; stable, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    Malformed,
    Oversized,
    UnknownNode,
    Revoked,
    BadSignature,
    Replay,
    Reflection,
    Misdirected,
    StaleEpoch,
    SuiteNotAllowed,
    BadConfirm,
    RateLimited,
    Overloaded,
    Timeout,
    Internal,
    Collision,
    GroupNotAllowed,
    GroupMismatch,
}

impl RejectionKind {
    pub const ALL: [RejectionKind; 18] = [
        RejectionKind::Malformed,
        RejectionKind::Oversized,
        RejectionKind::UnknownNode,
        RejectionKind::Revoked,
        RejectionKind::BadSignature,
        RejectionKind::Replay,
        RejectionKind::Reflection,
        RejectionKind::Misdirected,
        RejectionKind::StaleEpoch,
        RejectionKind::SuiteNotAllowed,
        RejectionKind::BadConfirm,
        RejectionKind::RateLimited,
        RejectionKind::Overloaded,
        RejectionKind::Timeout,
        RejectionKind::Internal,
        RejectionKind::Collision,
        RejectionKind::GroupNotAllowed,
        RejectionKind::GroupMismatch,
    ];

    /// The metric label, e.g. `bad_signature`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::Malformed => "malformed",
            RejectionKind::Oversized => "oversized",
            RejectionKind::UnknownNode => "unknown_node",
            RejectionKind::Revoked => "revoked",
            RejectionKind::BadSignature => "bad_signature",
            RejectionKind::Replay => "replay",
            RejectionKind::Reflection => "reflection",
            RejectionKind::Misdirected => "misdirected",
            RejectionKind::StaleEpoch => "stale_epoch",
            RejectionKind::SuiteNotAllowed => "suite_not_allowed",
            RejectionKind::BadConfirm => "bad_confirm",
            RejectionKind::RateLimited => "rate_limited",
            RejectionKind::Overloaded => "overloaded",
            RejectionKind::Timeout => "timeout",
            RejectionKind::Internal => "internal",
            RejectionKind::Collision => "collision",
            RejectionKind::GroupNotAllowed => "group_not_allowed",
            RejectionKind::GroupMismatch => "group_mismatch",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl KexError {
    pub fn kind(&self) -> RejectionKind {
        match self {
            KexError::Malformed(DecodeError::Oversized(_)) => RejectionKind::Oversized,
            KexError::Malformed(_) | KexError::BadShare { .. } => RejectionKind::Malformed,
            KexError::UnknownNode(_) => RejectionKind::UnknownNode,
            KexError::Revoked(_) => RejectionKind::Revoked,
            KexError::BadSignature { .. } => RejectionKind::BadSignature,
            KexError::Replay { .. } | KexError::OutsideWindow { .. } => RejectionKind::Replay,
            KexError::Reflection(_) => RejectionKind::Reflection,
            KexError::Misdirected { .. } => RejectionKind::Misdirected,
            KexError::StaleEpoch { .. } => RejectionKind::StaleEpoch,
            KexError::SuiteNotAllowed { .. } => RejectionKind::SuiteNotAllowed,
            KexError::BadConfirm { .. } => RejectionKind::BadConfirm,
            KexError::RateLimited { .. } => RejectionKind::RateLimited,
            KexError::Overloaded { .. } => RejectionKind::Overloaded,
            KexError::Timeout { .. } => RejectionKind::Timeout,
            KexError::Collision { .. } => RejectionKind::Collision,
            KexError::GroupNotAllowed { .. } => RejectionKind::GroupNotAllowed,
            KexError::GroupMismatch { .. } => RejectionKind::GroupMismatch,
            KexError::Spi(_) | KexError::Random => RejectionKind::Internal,
        }
    }

    /// Whether trying again later can succeed without anything else changing. A collision is not:
    /// the other handshake of the pair keys it. A group mismatch or downgrade is: the two nodes'
    /// views of each other's CipherlaneNode or of the policy converge.
    pub fn is_transient(&self) -> bool {
        if matches!(
            self,
            KexError::GroupMismatch { .. }
                | KexError::GroupNotAllowed {
                    refusal: GroupRefusal::Downgrade { .. },
                    ..
                }
        ) {
            return true;
        }
        matches!(
            self.kind(),
            RejectionKind::RateLimited
                | RejectionKind::Overloaded
                | RejectionKind::Timeout
                | RejectionKind::Internal
                | RejectionKind::StaleEpoch
                | RejectionKind::Replay
        )
    }
}

/// Counters of one endpoint: handshakes started and completed, rejections by kind. The agent
/// exports them on `/metrics`.
#[derive(Debug, Default)]
pub struct KexMetrics {
    initiated: AtomicU64,
    established_as_initiator: AtomicU64,
    established_as_responder: AtomicU64,
    /// Established handshakes (both roles) by group, indexed by the group's wire code - 1.
    established_by_group: [AtomicU64; KexGroup::ALL.len()],
    rejections: [AtomicU64; RejectionKind::ALL.len()],
    /// Per kind, the monotonic second (plus one) of the last `warn` line: a flood of refusals
    /// logs at most one warning per kind per second (the rest at debug; the counters see all).
    last_warning: [AtomicU64; RejectionKind::ALL.len()],
}

impl KexMetrics {
    pub(crate) fn count_initiated(&self) {
        self.initiated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_established(&self, as_initiator: bool, group: KexGroup) {
        if let Some(c) = self.established_by_group.get(usize::from(group.code()) - 1) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if as_initiator {
            self.established_as_initiator
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.established_as_responder
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_rejection(&self, kind: RejectionKind) {
        self.rejections[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a refusal of this kind at `second` should be logged as a warning.
    pub(crate) fn should_warn(&self, kind: RejectionKind, second: u64) -> bool {
        let slot = &self.last_warning[kind.index()];
        let stamp = second.saturating_add(1);
        let previous = slot.load(Ordering::Relaxed);
        previous != stamp
            && slot
                .compare_exchange(previous, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub fn initiated(&self) -> u64 {
        self.initiated.load(Ordering::Relaxed)
    }

    pub fn established_as_initiator(&self) -> u64 {
        self.established_as_initiator.load(Ordering::Relaxed)
    }

    pub fn established_as_responder(&self) -> u64 {
        self.established_as_responder.load(Ordering::Relaxed)
    }

    /// Handshakes established (either role) with `group`.
    pub fn established_with(&self, group: KexGroup) -> u64 {
        self.established_by_group
            .get(usize::from(group.code()) - 1)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn rejections(&self, kind: RejectionKind) -> u64 {
        self.rejections[kind.index()].load(Ordering::Relaxed)
    }

    /// Every rejection counter with its label, for an exporter.
    pub fn rejection_counts(&self) -> Vec<(&'static str, u64)> {
        RejectionKind::ALL
            .into_iter()
            .map(|k| (k.as_str(), self.rejections(k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_warns_once_per_kind_per_second_but_counts_all() {
        let m = KexMetrics::default();
        assert!(m.should_warn(RejectionKind::Replay, 0));
        assert!(!m.should_warn(RejectionKind::Replay, 0));
        assert!(
            m.should_warn(RejectionKind::BadSignature, 0),
            "kinds are independent"
        );
        assert!(m.should_warn(RejectionKind::Replay, 1));
        for _ in 0..3 {
            m.count_rejection(RejectionKind::Replay);
        }
        assert_eq!(m.rejections(RejectionKind::Replay), 3);
    }
}
