//! The agent's settings: command-line flags, each also readable from the environment variable the
//! Helm chart sets (`CIPHERLANE_*`). Parsing and validation only; nothing here opens a file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cipherlane_core::{NodeName, Suite};

use crate::backend::DatapathMode;
use ipnet::IpNet;

/// `cipherlane-agent run`: run the node agent.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// This node's name (the Node object's name).
    #[arg(long, env = "CIPHERLANE_NODE_NAME")]
    pub node_name: String,

    /// This node's tunnel endpoint (its InternalIP). Default: the Node object's InternalIP.
    #[arg(long, env = "CIPHERLANE_NODE_IP")]
    pub node_ip: Option<IpAddr>,

    /// The cluster's pod CIDRs, comma-separated: traffic to them that has no SA is blocked.
    #[arg(
        long,
        env = "CIPHERLANE_CLUSTER_POD_CIDRS",
        value_delimiter = ',',
        required = true
    )]
    pub cluster_pod_cidrs: Vec<IpNet>,

    /// TCP port of the key-exchange gRPC service on the node IP.
    #[arg(long, env = "CIPHERLANE_KEX_PORT", default_value_t = 9471)]
    pub kex_port: u16,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "CIPHERLANE_HTTP_ADDR", default_value = "0.0.0.0:9472")]
    pub http_addr: SocketAddr,

    /// Cipher suite proposed when no RotationPolicy selects this node.
    #[arg(long, env = "CIPHERLANE_SUITE", default_value = "aes-gcm-128")]
    pub suite: Suite,

    /// Allow only FIPS-approved suites (AES-GCM).
    #[arg(long, env = "CIPHERLANE_FIPS", default_value_t = false, action = clap::ArgAction::Set)]
    pub fips: bool,

    /// Underlay MTU; 0 reads it from the interface that holds the node IP.
    #[arg(long, env = "CIPHERLANE_MTU", default_value_t = 0)]
    pub mtu: u32,

    /// Where SAs and policies go: `kernel` (XFRM; the only mode that encrypts) or `recording`
    /// (SIMULATION ONLY: nothing is programmed or encrypted; what would be is written to
    /// `datapath-recording.json` in the state directory; for running many agents on one host).
    #[arg(long, env = "CIPHERLANE_DATAPATH", value_enum, default_value_t = DatapathMode::Kernel)]
    pub datapath: DatapathMode,

    #[command(flatten)]
    pub paths: NodePaths,

    /// Persistent data: the node identity key.
    #[arg(
        long,
        env = "CIPHERLANE_DATA_DIR",
        default_value = "/var/lib/cipherlane"
    )]
    pub data_dir: PathBuf,

    /// The CNI network name in the conflist.
    #[arg(
        long,
        env = "CIPHERLANE_CNI_NETWORK_NAME",
        default_value = "cipherlane"
    )]
    pub cni_network_name: String,

    /// The CNI plugin's log folder, written into the conflist.
    #[arg(
        long,
        env = "CIPHERLANE_CNI_LOG_DIR",
        default_value = "/var/log/cipherlane"
    )]
    pub cni_log_dir: PathBuf,

    /// Grace period for old SAs when no RotationPolicy sets one, e.g. 30s.
    #[arg(long, env = "CIPHERLANE_GRACE_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// Re-check the kernel's state at least this often, e.g. 30s.
    #[arg(long, env = "CIPHERLANE_RESYNC", default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,
}

/// Where the agent meets the CNI plugin on the node; shared by `run` and `uninstall`.
#[derive(clap::Args, Clone, Debug)]
pub struct NodePaths {
    /// Runtime state shared with the CNI plugin (agent-state.json).
    #[arg(long, env = "CIPHERLANE_STATE_DIR", default_value = "/run/cipherlane")]
    pub state_dir: PathBuf,

    /// Where the conflist is written once the node is ready.
    #[arg(
        long,
        env = "CIPHERLANE_CNI_CONF_DIR",
        default_value = "/etc/cni/net.d"
    )]
    pub cni_conf_dir: PathBuf,

    /// The conflist's file name.
    #[arg(
        long,
        env = "CIPHERLANE_CNI_CONF_NAME",
        default_value = cipherlane_cni::conflist::CONFLIST_FILE_NAME
    )]
    pub cni_conf_name: String,
}

/// A settings error a person can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--node-name {0:?} is not a valid node name: {1}")]
    NodeName(String, String),
    #[error("--cluster-pod-cidrs is empty: give the cluster's pod CIDR(s), e.g. 10.244.0.0/16")]
    NoClusterCidr,
    #[error(
        "--suite {0} is not allowed with --fips=true (FIPS allows aes-gcm-128 and aes-gcm-256)"
    )]
    SuiteNotFips(Suite),
}

impl RunArgs {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<NodeName, ConfigError> {
        let name = NodeName::new(self.node_name.clone())
            .map_err(|e| ConfigError::NodeName(self.node_name.clone(), e.to_string()))?;
        if self.cluster_pod_cidrs.is_empty() {
            return Err(ConfigError::NoClusterCidr);
        }
        if self.fips && !self.suite.fips_approved() {
            return Err(ConfigError::SuiteNotFips(self.suite));
        }
        Ok(name)
    }
}

/// Parses `90s`, `5m`, `2h`, `1d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 30s, 5m, 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use ms, s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn durations_take_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn flags_parse_and_fips_refuses_chacha() {
        let cli = Cli::try_parse_from([
            "agent",
            "--node-name",
            "node-a",
            "--cluster-pod-cidrs",
            "10.244.0.0/16",
            "--suite",
            "chacha20-poly1305",
            "--fips",
            "true",
        ])
        .expect("parses");
        assert_eq!(
            cli.run.validate(),
            Err(ConfigError::SuiteNotFips(Suite::Chacha20Poly1305))
        );
    }

    #[test]
    fn a_bad_cidr_is_a_clear_error() {
        let err = Cli::try_parse_from([
            "agent",
            "--node-name",
            "a",
            "--cluster-pod-cidrs",
            "10.244.0.0/33",
        ])
        .err()
        .expect("fails");
        assert!(err.to_string().contains("cluster-pod-cidrs"), "{err}");
    }

    #[test]
    fn an_invalid_node_name_is_refused() {
        let cli = Cli::try_parse_from([
            "agent",
            "--node-name",
            "Node_A",
            "--cluster-pod-cidrs",
            "10.244.0.0/16",
        ])
        .expect("parses");
        assert!(matches!(cli.run.validate(), Err(ConfigError::NodeName(..))));
    }
}
