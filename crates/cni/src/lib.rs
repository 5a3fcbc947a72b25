//! The `cipherlane` CNI plugin's logic, without the plugin's I/O.
//!
//! ```text
//!  runtime ──env+stdin──> env::Invocation + config::NetConf ──> (binary: netlink, IPAM store)
//!                                                                 │
//!  agent ──agent_state::write_agent_state──> /run/cipherlane/agent-state.json ──> readiness gate
//!  agent ──conflist::write_conflist──> /etc/cni/net.d/05-cipherlane.conflist
//!  binary <── result::AddResult / error::CniError (per spec version) ──> stdout
//! ```
//!
//! This crate owns the CNI protocol vocabulary (commands, config keys, result shapes for 1.1.0,
//! 1.0.0 and 0.4.0, error codes), IPAM decisions (which address is next, which leases a GC
//! releases, host veth naming), and the agent ↔ plugin contract (agent state file, conflist).
//! Its only I/O is whole-file atomic reads and writes ([`atomic_file`]) so the agent and the
//! plugin share one implementation; it never touches netlink, namespaces or the environment.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent_state;
pub mod atomic_file;
pub mod config;
pub mod conflist;
pub mod env;
pub mod error;
pub mod ipam;
pub mod result;
pub mod version;

pub use agent_state::{read_agent_state, write_agent_state, AgentState, ReadyNode};
pub use config::NetConf;
pub use conflist::{write_conflist, ConflistSpec};
pub use env::{Command, Invocation};
pub use error::{CniError, ErrorCode};
pub use ipam::{Attachment, Lease};
pub use result::AddResult;
pub use version::SpecVersion;
