//! The netlink adapter of Cipherlane's datapath: reads the kernel's XFRM policies, SAs and routes
//! that carry Cipherlane's markers, applies a [`cipherlane_datapath::Plan`], subscribes to the kernel's XFRM
//! notifications (expiries, deletions, flushes), installs the second fence (an nftables table, in
//! [`nft`]), probes for ESP support and uninstalls exactly what Cipherlane installed.
//!
//! ```text
//!   agent ──> Kernel::observe ──> Observed ──┐
//!                                            ├─ datapath::plan ─> Plan ─> Kernel::apply
//!   agent ──> datapath::desired_state ───────┘
//!   Kernel::events ─> XfrmEvent (soft expiry: rekey; SA/policy deleted or flushed: look again)
//! ```
//!
//! It owns only the translation between datapath values and netlink messages; it makes no
//! decisions. Everything it reads is filtered by the markers of [`cipherlane_datapath::model`]
//! (reqid range, priority band, route protocol), so objects of other software are never read
//! into a plan and never deleted. All sockets are opened in the caller's network namespace.
#![forbid(unsafe_code)]

mod convert;
mod events;
mod kernel;
pub mod nft;
mod support;

pub use events::{ExpiryEvent, XfrmEvent, XfrmEvents};
pub use kernel::{Kernel, UninstallReport};
pub use support::{diagnose_missing_support, read_kernel_config, MissingSupport, ProbeFailure};

/// Errors of the netlink adapter. Each says which kernel object failed and how.
#[derive(Debug, thiserror::Error)]
pub enum XfrmError {
    #[error("cannot open a netlink socket ({what}): {source}; is CONFIG_XFRM_USER enabled and are we root (CAP_NET_ADMIN)?")]
    Socket {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{op} failed: {message}")]
    Netlink {
        op: String,
        message: String,
        errno: i32,
    },
    #[error("{op}: unexpected netlink answer: {detail}")]
    Unexpected { op: String, detail: String },
    #[error(
        "no interface holds node IP {0}: the node IP must be configured on the underlay device"
    )]
    NoUnderlay(std::net::IpAddr),
    #[error("{0}")]
    Unsupported(MissingSupport),
}

impl XfrmError {
    /// The positive errno of a failed netlink request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            XfrmError::Netlink { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}
