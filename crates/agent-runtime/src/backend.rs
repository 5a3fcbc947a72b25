//! Where the agent's datapath goes.
//!
//! - [`Backend::Kernel`]: the Linux kernel over netlink (XFRM SAs and policies, routes). The only
//!   mode that encrypts anything, and the default.
//! - [`Backend::Recording`]: **a simulation aid, not a datapath.** It programs nothing and
//!   encrypts nothing; it applies each plan to an in-memory state with the kernel's rules and
//!   writes what it holds to `datapath-recording.json` in the state directory. It exists so that
//!   a hundred agents can run on one host against a real API server (one kernel could not hold a
//!   hundred nodes' SAs with distinct addresses), for the convergence and memory benchmarks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context as _;
use cipherlane_core::SaKey;
use cipherlane_core::Suite;
use cipherlane_datapath::{
    peer_records, DatapathState, FenceSpec, Observed, Plan, StateCounters, StateKey, Step,
};
use cipherlane_xfrm::{diagnose_missing_support, read_kernel_config, Kernel, XfrmEvents};

/// XFRM policy hash thresholds (IPv4, IPv6), as set.
pub type HashThresholds = (Option<(u8, u8)>, Option<(u8, u8)>);

/// The `--datapath` flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathMode {
    /// Program the kernel's XFRM state (encrypts).
    #[default]
    Kernel,
    /// SIMULATION ONLY: record what would be programmed; nothing is encrypted.
    Recording,
}

/// The label every recording carries, so that nobody mistakes one for a datapath.
pub const RECORDING_LABEL: &str =
    "RECORDING (simulation only): nothing here was programmed into a kernel and no traffic is encrypted";

pub enum Backend {
    Kernel(Kernel),
    Recording(Box<Recording>),
}

/// The recording datapath's state.
pub struct Recording {
    node: String,
    file: PathBuf,
    inner: Mutex<RecordingInner>,
}

#[derive(Default)]
struct RecordingInner {
    state: DatapathState,
    added_unix: std::collections::BTreeMap<cipherlane_datapath::StateKey, u64>,
    applies: u64,
    steps: u64,
    hash_thresholds: Option<HashThresholds>,
    node_ip: Option<IpAddr>,
    /// Every key ever added under each SA identity: a recording refuses a second install of one
    /// (DESIGN.md §3, "a key is installed once"), so simulations check the rule too.
    ever_installed: std::collections::BTreeMap<StateKey, Vec<SaKey>>,
}

impl Backend {
    pub fn connect(
        mode: DatapathMode,
        node: &str,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Backend> {
        Ok(match mode {
            DatapathMode::Kernel => Backend::Kernel(
                Kernel::connect().context("opening netlink (the agent needs CAP_NET_ADMIN)")?,
            ),
            DatapathMode::Recording => {
                tracing::warn!("{RECORDING_LABEL}");
                Backend::Recording(Box::new(Recording {
                    node: node.to_string(),
                    file: state_dir.join("datapath-recording.json"),
                    inner: Mutex::new(RecordingInner::default()),
                }))
            }
        })
    }

    pub fn is_recording(&self) -> bool {
        matches!(self, Backend::Recording(_))
    }

    /// `Err(explanation)` when the kernel cannot do ESP with `suite`.
    pub async fn probe(&self, suite: Suite) -> Result<(), String> {
        match self {
            Backend::Kernel(k) => k.probe_esp(suite, false).await.map_err(|probe| {
                diagnose_missing_support(probe, read_kernel_config().as_deref(), suite, false)
                    .to_string()
            }),
            Backend::Recording(_) => Ok(()),
        }
    }

    /// Makes the node forward packets (pods sit on point-to-point veths). `Err(reason)` when
    /// forwarding is off and cannot be turned on (a container's /proc/sys is read-only).
    pub fn enable_forwarding(&self) -> Result<(), String> {
        if self.is_recording() {
            return Ok(());
        }
        const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
        let current = std::fs::read_to_string(PATH).ok();
        if current.as_deref().map(str::trim) == Some("1") {
            return Ok(()); // already on: nothing to write (works with a read-only /proc/sys)
        }
        let written = std::fs::write(PATH, "1").map_err(|e| e.to_string()).err();
        match forwarding_problem(current.as_deref(), written) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// The interface index holding the node IP (a recording takes note of the node IP).
    pub async fn underlay_ifindex(&self, node_ip: IpAddr) -> anyhow::Result<u32> {
        match self {
            Backend::Kernel(k) => k
                .underlay_ifindex(node_ip)
                .await
                .with_context(|| format!("no local interface holds the node IP {node_ip}")),
            Backend::Recording(r) => {
                r.lock().node_ip = Some(node_ip);
                Ok(1)
            }
        }
    }

    pub async fn set_hash_thresholds(
        &self,
        v4: Option<(u8, u8)>,
        v6: Option<(u8, u8)>,
    ) -> anyhow::Result<()> {
        match self {
            Backend::Kernel(k) => Ok(k.set_hash_thresholds(v4, v6).await?),
            Backend::Recording(r) => {
                r.lock().hash_thresholds = Some((v4, v6));
                Ok(())
            }
        }
    }

    /// Cipherlane's objects as the datapath holds them now.
    pub async fn observe(&self, local_ips: &[IpAddr]) -> anyhow::Result<Observed> {
        match self {
            Backend::Kernel(k) => Ok(k.observe(local_ips).await?),
            Backend::Recording(r) => {
                let inner = r.lock();
                let mut observed = Observed::default();
                for key in &inner.state.state_order {
                    if let Some(s) = inner.state.states.get(key) {
                        let counters = StateCounters {
                            add_time: inner.added_unix.get(key).copied().unwrap_or(0),
                            ..StateCounters::default()
                        };
                        observed.add_state(s.clone(), counters);
                    }
                }
                observed.datapath.policies = inner.state.policies.clone();
                observed.datapath.routes = inner.state.routes.clone();
                Ok(observed)
            }
        }
    }

    pub async fn apply(&self, plan: &Plan) -> anyhow::Result<()> {
        match self {
            Backend::Kernel(k) => Ok(k.apply(plan).await?),
            Backend::Recording(r) => r.apply(plan),
        }
    }

    /// Installs (replaces, atomically) the nftables fence; nothing for a recording.
    pub fn install_fence(&self, spec: &FenceSpec) -> anyhow::Result<()> {
        match self {
            Backend::Kernel(_) => Ok(cipherlane_xfrm::nft::install(spec)?),
            Backend::Recording(_) => Ok(()),
        }
    }

    /// Whether the fence in the kernel holds every rule of `spec` (a read; a recording has none).
    pub fn fence_intact(&self, spec: &FenceSpec) -> anyhow::Result<bool> {
        match self {
            Backend::Kernel(_) => Ok(cipherlane_xfrm::nft::rule_count()?
                == Some(cipherlane_xfrm::nft::expected_rules(spec))),
            Backend::Recording(_) => Ok(true),
        }
    }

    /// The kernel's XFRM notifications (expiries, deletions, flushes); `None` for a recording
    /// (no traffic, no other software touching it).
    pub fn events(&self) -> anyhow::Result<Option<XfrmEvents>> {
        match self {
            Backend::Kernel(k) => Ok(Some(k.events()?)),
            Backend::Recording(_) => Ok(None),
        }
    }
}

impl Recording {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecordingInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, plan: &Plan) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let text = {
            let mut inner = self.lock();
            for step in &plan.steps {
                // an SA still present is refused by the kernel's own rule (EEXIST) below
                let Step::AddState(s) = step else { continue };
                if inner.state.states.contains_key(&s.key) {
                    continue;
                }
                let keys = inner.ever_installed.entry(s.key).or_default();
                if keys.contains(&s.aead) {
                    anyhow::bail!(
                        "the recorded datapath refused to install SA {} spi {:#x} a second time with the same key",
                        s.key.dst,
                        s.key.spi
                    );
                }
                keys.push(s.aead.clone());
            }
            let result = inner.state.apply(plan);
            let RecordingInner {
                state, added_unix, ..
            } = &mut *inner;
            added_unix.retain(|k, _| state.states.contains_key(k));
            for k in state.states.keys() {
                added_unix.entry(*k).or_insert(now);
            }
            inner.applies += 1;
            inner.steps += plan.steps.len() as u64;
            result.context("the recorded datapath refused a step, as the kernel would")?;
            self.render(&inner)
        };
        crate::node::write_file_atomically(&self.file, &text)
            .with_context(|| format!("writing {}", self.file.display()))
    }

    fn render(&self, inner: &RecordingInner) -> String {
        let doc = serde_json::json!({
            "datapath": RECORDING_LABEL,
            "node": self.node,
            "nodeIp": inner.node_ip,
            "applies": inner.applies,
            "steps": inner.steps,
            "sas": inner.state.states.len(),
            "policies": inner.state.policies.len(),
            "routes": inner.state.routes.len(),
            "hashThresholds": inner
                .hash_thresholds
                .map(|(v4, v6)| serde_json::json!({ "v4": v4, "v6": v6 })),
            "peers": peer_records(&inner.state),
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipherlane_core::{Epoch, NodeName, PeerSpec, SaDirection, SaKey, SaPair, Spi};
    use cipherlane_datapath::{
        desired_state, plan, LocalNode, NodeInput, Peer, PeerKeys, SaSettings,
    };

    fn input(keyed: bool) -> NodeInput {
        let dir = |spi: u32| SaDirection {
            spi: Spi::new(spi).expect("valid"),
            key: SaKey::new(Suite::AesGcm128, vec![spi as u8; 20]).expect("valid"),
        };
        let pair = SaPair {
            epoch: Epoch(1),
            suite: Suite::AesGcm128,
            inbound: dir(0x2002),
            outbound: dir(0x2001),
        };
        NodeInput {
            local: LocalNode {
                name: NodeName::new("a".to_string()).expect("name"),
                node_ip: "127.1.0.1".parse().expect("ip"),
                pod_cidrs: vec!["10.100.1.0/24".parse().expect("cidr")],
                underlay_ifindex: 1,
            },
            cluster_pod_cidrs: vec!["10.100.0.0/16".parse().expect("cidr")],
            peers: vec![Peer {
                spec: PeerSpec {
                    name: NodeName::new("b".to_string()).expect("name"),
                    node_ip: "127.1.0.2".parse().expect("ip"),
                    pod_cidrs: vec!["10.100.2.0/24".parse().expect("cidr")],
                },
                keys: keyed.then(|| PeerKeys::from_pairs(&pair, None)),
            }],
            settings: SaSettings::default(),
        }
    }

    #[tokio::test]
    async fn a_recording_keeps_what_it_applied_and_says_it_encrypts_nothing() {
        let dir = std::env::temp_dir().join(format!("cl-recording-{}", std::process::id()));
        let backend = Backend::connect(DatapathMode::Recording, "a", &dir).expect("recording");
        assert!(backend.probe(Suite::AesGcm128).await.is_ok());
        backend
            .underlay_ifindex("127.1.0.1".parse().expect("ip"))
            .await
            .expect("ifindex");
        let desired = desired_state(&input(true)).expect("desired");
        let observed = backend.observe(&[]).await.expect("observe");
        backend
            .apply(&plan(&desired, &observed.datapath))
            .await
            .expect("apply");
        let after = backend.observe(&[]).await.expect("observe");
        assert_eq!(after.datapath, desired);
        assert!(plan(&desired, &after.datapath).is_empty());
        assert!(backend.events().expect("events").is_none());

        let text = std::fs::read_to_string(dir.join("datapath-recording.json")).expect("file");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["datapath"], RECORDING_LABEL);
        assert_eq!(doc["nodeIp"], "127.1.0.1");
        assert_eq!(doc["peers"][0]["nodeIp"], "127.1.0.2");
        assert_eq!(doc["peers"][0]["outboundSpis"][0], "0x00002001");

        // a plan made against a stale picture is refused, as the kernel would refuse it
        let stale = plan(&desired, &cipherlane_datapath::DatapathState::default());
        let err = backend.apply(&stale).await.expect_err("adding twice");
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        // and a key is installed once: after a "flush", the same SAs are refused again
        let flush = cipherlane_datapath::Plan {
            steps: desired
                .states
                .keys()
                .map(|k| Step::DeleteState(*k))
                .collect(),
        };
        backend.apply(&flush).await.expect("delete");
        let again = plan(
            &desired,
            &backend.observe(&[]).await.expect("observe").datapath,
        );
        let err = backend.apply(&again).await.expect_err("reinstalling a key");
        assert!(format!("{err:#}").contains("a second time"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Whether net.ipv4.ip_forward blocks pod traffic: `current` is the value read from /proc/sys
/// (None: unreadable), `write_error` the error of writing "1" (None: not tried or it worked).
pub fn forwarding_problem(current: Option<&str>, write_error: Option<String>) -> Option<String> {
    if current.map(str::trim) == Some("1") {
        return None;
    }
    let error = write_error?;
    Some(format!(
        "net.ipv4.ip_forward is {} and the agent cannot set it ({error}); pods could not reach other \
         nodes: set net.ipv4.ip_forward=1 on the node (sysctl) or run the agent with \
         agent.privileged=true; staying not ready",
        current.map(str::trim).unwrap_or("unreadable")
    ))
}

#[cfg(test)]
mod forwarding_tests {
    use super::forwarding_problem;

    #[test]
    fn forwarding_already_on_needs_no_write() {
        assert_eq!(forwarding_problem(Some("1\n"), None), None);
        assert_eq!(
            forwarding_problem(Some("1"), Some("read-only".into())),
            None
        );
    }

    #[test]
    fn forwarding_off_and_read_only_is_a_clear_problem() {
        let p = forwarding_problem(
            Some("0\n"),
            Some("Read-only file system (os error 30)".into()),
        )
        .expect("a problem");
        assert!(
            p.starts_with("net.ipv4.ip_forward is 0 and the agent cannot set it (Read-only"),
            "{p}"
        );
        assert!(p.contains("sysctl"), "{p}");
    }

    #[test]
    fn forwarding_off_but_written_is_fine() {
        assert_eq!(forwarding_problem(Some("0"), None), None);
        assert!(forwarding_problem(None, Some("EACCES".into()))
            .expect("a problem")
            .contains("is unreadable"));
    }
}
