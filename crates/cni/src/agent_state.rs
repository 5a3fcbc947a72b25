//! The contract between cipherlane-agent and the plugin: one small JSON file the agent writes
//! atomically (default `/run/cipherlane/agent-state.json`) and the plugin reads on every
//! ADD, CHECK and STATUS.
//!
//! ```json
//! {"version":1,"ready":true,"reason":"","nodeName":"node-a","podMtu":1420,"podCidrs":["10.244.1.0/24"]}
//! ```
//!
//! `ready` is true only while the node can encrypt (its fail-closed policies are in place and
//! the datapath is programmed). While it is false, or the file is missing or unreadable, the
//! plugin refuses ADD and STATUS with CNI error 50, so no pod starts unencrypted.
//!
//! The agent calls [`AgentState::ready`] / [`AgentState::not_ready`] and [`write_agent_state`];
//! the plugin calls [`read_agent_state`] and [`AgentState::readiness`].

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::atomic_file;

/// The current file format version.
pub const AGENT_STATE_VERSION: u32 = 1;

/// What the agent tells the plugin about this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// File format version; [`AGENT_STATE_VERSION`].
    pub version: u32,
    /// True while the node can encrypt pod traffic.
    pub ready: bool,
    /// Why the node is not ready (shown to users in the CNI error); empty when ready.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub node_name: String,
    /// The MTU pods get: underlay MTU minus the ESP tunnel overhead.
    #[serde(default)]
    pub pod_mtu: u32,
    /// This node's pod CIDRs (IPv4 first; an IPv6 one later for dual-stack).
    #[serde(default)]
    pub pod_cidrs: Vec<IpNet>,
}

/// What ADD needs from a ready node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyNode {
    pub pod_mtu: u32,
    pub pod_cidr_v4: Ipv4Net,
}

impl AgentState {
    /// The state of a node that encrypts: pods may start.
    pub fn ready(node_name: impl Into<String>, pod_mtu: u32, pod_cidrs: Vec<IpNet>) -> Self {
        AgentState {
            version: AGENT_STATE_VERSION,
            ready: true,
            reason: String::new(),
            node_name: node_name.into(),
            pod_mtu,
            pod_cidrs,
        }
    }

    /// The state of a node that cannot encrypt (yet, or any more), with the reason users see.
    pub fn not_ready(node_name: impl Into<String>, reason: impl Into<String>) -> Self {
        AgentState {
            version: AGENT_STATE_VERSION,
            ready: false,
            reason: reason.into(),
            node_name: node_name.into(),
            pod_mtu: 0,
            pod_cidrs: Vec::new(),
        }
    }

    /// Whether pods may be added, and with which MTU and CIDR; otherwise the reason they may not.
    pub fn readiness(&self) -> Result<ReadyNode, String> {
        if self.version != AGENT_STATE_VERSION {
            return Err(format!(
                "agent state version {} is not the {AGENT_STATE_VERSION} this plugin reads; upgrade the plugin and the agent together",
                self.version
            ));
        }
        if !self.ready {
            let reason = if self.reason.is_empty() {
                "no reason given"
            } else {
                &self.reason
            };
            return Err(format!(
                "cipherlane-agent on node {:?} is not ready to encrypt pod traffic: {reason}",
                self.node_name
            ));
        }
        let pod_cidr_v4 = self
            .pod_cidrs
            .iter()
            .find_map(|c| match c {
                IpNet::V4(v4) => Some(v4.trunc()),
                IpNet::V6(_) => None,
            })
            .ok_or_else(|| {
                format!(
                    "agent state of node {:?} lists no IPv4 pod CIDR (podCidrs: {:?})",
                    self.node_name, self.pod_cidrs
                )
            })?;
        if !(576..=65_535).contains(&self.pod_mtu) {
            return Err(format!(
                "agent state of node {:?} has pod MTU {}, outside 576..=65535",
                self.node_name, self.pod_mtu
            ));
        }
        Ok(ReadyNode {
            pod_mtu: self.pod_mtu,
            pod_cidr_v4,
        })
    }

    /// Whether `ip` is in one of this node's pod CIDRs.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.pod_cidrs.iter().any(|c| match c {
            IpNet::V4(v4) => v4.contains(&ip),
            IpNet::V6(_) => false,
        })
    }
}

/// Why the agent state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AgentStateError {
    #[error("agent state file {0} does not exist: cipherlane-agent has not started on this node or has not finished its first sync")]
    Missing(PathBuf),
    #[error("agent state file {path} could not be read: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("agent state file {path} is not valid agent state JSON: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads the agent state file.
pub fn read_agent_state(path: &Path) -> Result<AgentState, AgentStateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AgentStateError::Missing(path.to_path_buf()))
        }
        Err(source) => {
            return Err(AgentStateError::Unreadable {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes).map_err(|source| AgentStateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the agent state file atomically (temporary file, fsync, rename, fsync of the folder),
/// creating the folder if needed. Readers see the old or the new state, never a torn one.
pub fn write_agent_state(path: &Path, state: &AgentState) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    atomic_file::write(path, &json, 0o644, atomic_file::Durability::PowerLoss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_state_yields_the_mtu_and_the_ipv4_cidr() {
        let s = AgentState::ready(
            "node-a",
            1420,
            vec![
                "fd00::/64".parse().unwrap(),
                "10.244.1.0/24".parse().unwrap(),
            ],
        );
        let r = s.readiness().unwrap();
        assert_eq!(r.pod_mtu, 1420);
        assert_eq!(r.pod_cidr_v4, "10.244.1.0/24".parse::<Ipv4Net>().unwrap());
    }

    #[test]
    fn a_not_ready_state_gives_its_reason() {
        let s = AgentState::not_ready("node-a", "no fail-closed policy yet");
        let reason = s.readiness().unwrap_err();
        assert!(reason.contains("no fail-closed policy yet"), "{reason}");
        assert!(reason.contains("node-a"));
    }

    #[test]
    fn a_ready_state_without_ipv4_cidr_or_with_a_bad_mtu_is_refused() {
        assert!(AgentState::ready("n", 1400, vec![]).readiness().is_err());
        assert!(
            AgentState::ready("n", 100, vec!["10.0.0.0/24".parse().unwrap()])
                .readiness()
                .is_err()
        );
    }

    #[test]
    fn the_wire_format_uses_camel_case_keys() {
        let s = AgentState::ready("n", 1400, vec!["10.0.0.0/24".parse().unwrap()]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["podMtu"], 1400);
        assert_eq!(v["podCidrs"][0], "10.0.0.0/24");
        assert_eq!(v["nodeName"], "n");
    }

    #[test]
    fn a_written_state_reads_back_identically_and_a_missing_one_says_so() {
        let dir = std::env::temp_dir().join(format!("cl-agent-state-{}", std::process::id()));
        let path = dir.join("sub/agent-state.json");
        let s = AgentState::ready("n", 1400, vec!["10.0.0.0/24".parse().unwrap()]);
        write_agent_state(&path, &s).unwrap();
        assert_eq!(read_agent_state(&path).unwrap(), s);
        let missing = read_agent_state(&dir.join("nope.json")).unwrap_err();
        assert!(matches!(missing, AgentStateError::Missing(_)));
        std::fs::write(&path, b"{torn").unwrap();
        assert!(matches!(
            read_agent_state(&path),
            Err(AgentStateError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
