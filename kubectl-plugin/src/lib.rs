//! `kubectl cipherlane`: what an admin runs to see and steer Cipherlane.
//!
//! - `status` renders the cluster's encryption state ([`render`], pure: objects in, text out,
//!   tested against golden files): policies, nodes and a node × node matrix for small clusters,
//!   a summary for big ones. Per-pair figures are derived from the nodes' bounded status
//!   summaries (the API holds no per-pair objects), so a cell shows the lower of the two ends'
//!   epochs for the pair's policy and the older of the two ends' oldest keys.
//! - `rotate [POLICY]` and `revoke NODE` ([`commands`]) each make one write that a plain
//!   `kubectl patch` could make too (docs/operations.md lists both forms).
#![forbid(unsafe_code)]

pub mod commands;
pub mod render;
