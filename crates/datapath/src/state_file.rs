//! The JSON form of a node's datapath input, used by `cipherlane-agent datapath apply --state`
//! to program a given state before the key exchange is wired, and by tests.
//!
//! Keys are hex (key followed by the 4-byte salt). A peer without `keys` keeps whatever SAs the
//! kernel already holds for it (adoption) or, if none, stays behind the fail-closed block.
//!
//! ```json
//! { "local": { "name": "a", "nodeIP": "198.18.0.1", "podCIDRs": ["10.244.1.0/24"] },
//!   "clusterPodCIDRs": ["10.244.0.0/16"],
//!   "peers": [ { "name": "b", "nodeIP": "198.18.0.2", "podCIDRs": ["10.244.2.0/24"],
//!                "keys": { "suite": "aes-gcm-128",
//!                          "inbound":  [ { "spi": 4098, "key": "0011...0304" } ],
//!                          "outbound": [ { "spi": 4097, "key": "0011...0304" } ] } } ] }
//! ```

use std::net::IpAddr;

use cipherlane_core::{CoreError, NodeName, PeerSpec, SaDirection, SaKey, Spi, Suite};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::layout::{LocalNode, NodeInput, Peer, PeerKeys, SaSettings};
use crate::model::SaLimits;

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("peer {peer}: key of SPI {spi} is not hex: {source}")]
    Hex {
        peer: String,
        spi: u32,
        source: hex::FromHexError,
    },
    #[error("peer {peer}: {source}")]
    Core { peer: String, source: CoreError },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalNodeFile {
    pub name: NodeName,
    #[serde(rename = "nodeIP")]
    pub node_ip: IpAddr,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SaFile {
    pub spi: u32,
    /// Hex: key then salt.
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeysFile {
    #[serde(default)]
    pub suite: Suite,
    #[serde(default)]
    pub inbound: Vec<SaFile>,
    #[serde(default)]
    pub outbound: Vec<SaFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerFile {
    pub name: NodeName,
    #[serde(rename = "nodeIP")]
    pub node_ip: IpAddr,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
    #[serde(default)]
    pub keys: Option<KeysFile>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LimitsFile {
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StateFile {
    pub local: LocalNodeFile,
    #[serde(rename = "clusterPodCIDRs")]
    pub cluster_pod_cidrs: Vec<IpNet>,
    #[serde(default)]
    pub peers: Vec<PeerFile>,
    #[serde(default)]
    pub fips: bool,
    #[serde(default)]
    pub replay_window: Option<u32>,
    #[serde(default)]
    pub limits: LimitsFile,
}

fn sa(peer: &NodeName, suite: Suite, f: &SaFile) -> Result<SaDirection, StateFileError> {
    let bytes =
        hex::decode(f.key.trim_start_matches("0x")).map_err(|source| StateFileError::Hex {
            peer: peer.to_string(),
            spi: f.spi,
            source,
        })?;
    let core = |source| StateFileError::Core {
        peer: peer.to_string(),
        source,
    };
    Ok(SaDirection {
        spi: Spi::new(f.spi).map_err(core)?,
        key: SaKey::new(suite, bytes).map_err(core)?,
    })
}

impl StateFile {
    /// The peers as the API would describe them.
    pub fn peer_specs(&self) -> Vec<PeerSpec> {
        self.peers
            .iter()
            .map(|p| PeerSpec {
                name: p.name.clone(),
                node_ip: p.node_ip,
                pod_cidrs: p.pod_cidrs.clone(),
            })
            .collect()
    }

    /// The layout input; `underlay_ifindex` is resolved by the adapter from the node IP.
    pub fn to_input(&self, underlay_ifindex: u32) -> Result<NodeInput, StateFileError> {
        let mut peers = Vec::new();
        for p in &self.peers {
            let keys = match &p.keys {
                None => None,
                Some(k) => Some(PeerKeys {
                    inbound: k
                        .inbound
                        .iter()
                        .map(|f| sa(&p.name, k.suite, f))
                        .collect::<Result<_, _>>()?,
                    outbound: k
                        .outbound
                        .iter()
                        .map(|f| sa(&p.name, k.suite, f))
                        .collect::<Result<_, _>>()?,
                }),
            };
            peers.push(Peer {
                spec: PeerSpec {
                    name: p.name.clone(),
                    node_ip: p.node_ip,
                    pod_cidrs: p.pod_cidrs.clone(),
                },
                keys,
            });
        }
        let defaults = SaSettings::default();
        Ok(NodeInput {
            local: LocalNode {
                name: self.local.name.clone(),
                node_ip: self.local.node_ip,
                pod_cidrs: self.local.pod_cidrs.clone(),
                underlay_ifindex,
            },
            cluster_pod_cidrs: self.cluster_pod_cidrs.clone(),
            peers,
            settings: SaSettings {
                replay_window: self.replay_window.unwrap_or(defaults.replay_window),
                fips: self.fips,
                limits: SaLimits {
                    soft_bytes: self.limits.soft_bytes,
                    hard_bytes: self.limits.hard_bytes,
                    soft_packets: self.limits.soft_packets,
                    hard_packets: self.limits.hard_packets,
                },
            },
        })
    }
}
