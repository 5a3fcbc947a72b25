//! How refusals travel: a `KexError` becomes a gRPC status whose message starts with the
//! rejection label (`bad_signature: ...`), so the initiator can count what the peer refused.

use cipherlane_kex::{KexError, RejectionKind};
use tonic::{Code, Status};

pub(crate) fn to_status(err: &KexError) -> Status {
    let code = match err.kind() {
        RejectionKind::Malformed | RejectionKind::Oversized => Code::InvalidArgument,
        RejectionKind::UnknownNode
        | RejectionKind::Revoked
        | RejectionKind::BadSignature
        | RejectionKind::Reflection
        | RejectionKind::Misdirected
        | RejectionKind::BadConfirm => Code::PermissionDenied,
        RejectionKind::Replay => Code::AlreadyExists,
        RejectionKind::StaleEpoch
        | RejectionKind::SuiteNotAllowed
        | RejectionKind::GroupNotAllowed
        | RejectionKind::GroupMismatch => Code::FailedPrecondition,
        RejectionKind::RateLimited | RejectionKind::Overloaded => Code::ResourceExhausted,
        RejectionKind::Timeout => Code::DeadlineExceeded,
        RejectionKind::Internal => Code::Internal,
        RejectionKind::Collision => Code::Aborted,
    };
    Status::new(code, format!("{}: {err}", err.kind().as_str()))
}

/// The rejection label at the start of a peer's status message, if it is one of ours.
pub(crate) fn rejection_label(status: &Status) -> Option<RejectionKind> {
    let label = status.message().split(':').next()?;
    RejectionKind::ALL.into_iter().find(|k| k.as_str() == label)
}
