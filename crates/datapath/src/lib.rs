//! Cipherlane's datapath logic: the XFRM policies, SAs and routes a node should have, and the
//! ordered, make-before-break plan that gets the kernel there.
//!
//! ```text
//!   NodeInput (local node, peers, their SAs, cluster pod CIDR, suite settings)
//!        │ layout::desired_state
//!        v
//!   DatapathState (desired) ──┐
//!                             ├─ plan::plan ──> Plan [AddState(in).., AddState(out).., policies,
//!   DatapathState (observed) ─┘                       routes, deletions..]
//!        ^                                               │
//!        └──────── cipherlane-xfrm (netlink adapter) <───┘
//! ```
//!
//! This crate owns the policy layout of DESIGN.md §3, the ownership markers (reqid range,
//! priority band, route protocol), adoption of kernel SAs after a restart, the key ledger (a key is
//! installed once: SAs lost from the kernel are burned, never re-added), the ESP MTU overhead,
//! `/proc/net/xfrm_stat` parsing and the Prometheus rendering of datapath metrics. It must not do
//! I/O: no netlink, no files, no clock (time is passed in).
#![forbid(unsafe_code)]

pub mod adopt;
pub mod fence;
pub mod layout;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod mtu;
pub mod plan;
pub mod state_file;
pub mod xfrm_stat;

pub use adopt::adopt_keys;
pub use fence::{FenceSpec, FENCE_TABLE};
pub use layout::{
    desired_state, hash_thresholds, LayoutError, LocalNode, NodeInput, Peer, PeerKeys, SaSettings,
};
pub use ledger::{KeyLedger, ReinstallRefused};
pub use memory::{peer_records, ApplyError, PeerRecord};
pub use metrics::{render_metrics, MetricsInput};
pub use model::{
    is_our_reqid, Action, DatapathState, Direction, Flow, Observed, Policy, PolicyKey, Priority,
    Route, SaLimits, State, StateCounters, StateKey, Template, PRIORITY_BAND, REQID, REQID_RANGE,
    ROUTE_PROTOCOL,
};
pub use mtu::{pod_mtu, pod_mtu_for_all, tunnel_overhead, OuterFamily};
pub use plan::{plan, Plan, Step};
pub use state_file::{StateFile, StateFileError};
pub use xfrm_stat::{parse_xfrm_stat, XfrmCounter, XfrmStatError};
