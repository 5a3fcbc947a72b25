//! `cipherlane-agent run`: the node agent's tasks and how they share state.
//!
//! ```text
//!  watch_cluster ──PeerView──> Shared.view ──> directory (kex), initiator loop, reconcile
//!  KexService / KexClient ──SaInstaller──> Keyring ──> reconcile ──> Backend (kernel netlink,
//!                                                                    or a recording: simulation)
//!  XFRM notifications ──> rekey (soft expiry) reconcile ──> readiness (agent-state.json, conflist)
//!    and reconcile (SA/policy deleted or flushed: lost SAs burn their keys, policies come back)
//!  status loop ──> CipherlaneNode status     http ──> /healthz /readyz /metrics
//! ```
//!
//! Ordering rules that keep traffic flowing:
//! - the kernel is not touched until the first complete view of the cluster has been read, so a
//!   restarted agent (or one whose API server is down) leaves working SAs alone;
//! - on start the kernel's SAs for known peers are adopted as established pairs (no SA churn);
//! - an SA the key exchange asks for is in the kernel before the installer returns (the protocol
//!   answers a peer only after its inbound SA exists);
//! - removing SAs happens only in reconcile, after their grace period or when a peer is gone;
//! - a key is installed once: an SA the kernel had and lost while still wanted is never added again
//!   (the `KeyLedger` refuses it); its pair's keys are burned and the pair re-keys at once.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cipherlane_agent_k8s::{PeerState, PeerSummary, PeerView, StatusWriter};
use cipherlane_cni::agent_state::{write_agent_state, AgentState};
use cipherlane_cni::conflist::ConflistSpec;
use cipherlane_core::{Epoch, NodeName, SaDirection, SaPair, Suite};
use cipherlane_datapath::{
    adopt_keys, desired_state, hash_thresholds, parse_xfrm_stat, plan, pod_mtu_for_all,
    render_metrics, FenceSpec, KeyLedger, LocalNode, MetricsInput, NodeInput, Observed,
    OuterFamily, Peer, SaLimits, SaSettings, State,
};
use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::{Api, Client};
use cipherlane_k8s_api::CipherlaneNodeSpec;
use cipherlane_kex::{
    initiates, Endpoint, InstallError, KexConfig, PairPolicy as KexPairPolicy, PeerDirectory,
    PeerEntry, RetrySchedule, SaInstaller, SystemClock,
};
use cipherlane_kex_grpc::{parse_public_key_base64, ClientConfig, KexClient, NodeIdentity};
use cipherlane_policy::Timestamp;
use cipherlane_xfrm::XfrmEvent;
use ipnet::IpNet;
use tokio::sync::{watch, Notify};

use crate::backend::{Backend, HashThresholds};
use crate::config::RunArgs;
use crate::http::{self, Handler, Response};
use crate::keyring::Keyring;
use crate::rekey::{due, RekeyInput};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Short critical sections with no partial updates: a poisoned lock still holds usable data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this node is, once read from the API server.
#[derive(Clone, Debug)]
struct Local {
    name: NodeName,
    node_ip: IpAddr,
    pod_cidrs: Vec<IpNet>,
    underlay_ifindex: u32,
    underlay_mtu: u32,
}

/// Where reconcile takes its picture of the kernel from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observe {
    /// A fresh read (dumps of SAs, policies, routes).
    Kernel,
    /// What the last reconcile read and applied (a key-exchange step's targeted change).
    Cached,
}

/// State shared by the agent's tasks.
struct Shared {
    args: RunArgs,
    local: Local,
    datapath: Backend,
    keyring: Mutex<Keyring>,
    view: RwLock<PeerView>,
    /// Serialises every change to the kernel.
    apply: tokio::sync::Mutex<()>,
    /// Group commit of keyring changes: each change the key exchange makes gets a number (`changes`);
    /// `applied` is the highest number a finished reconcile had read. A handshake waiting for its
    /// SA is done as soon as any reconcile that started after its change succeeds, so fifty
    /// concurrent handshakes cost a few reconciles, not a hundred and fifty.
    changes: AtomicU64,
    applied: AtomicU64,
    ready: AtomicBool,
    not_ready_reason: Mutex<String>,
    observed: Mutex<Option<Observed>>,
    hash_thresholds: Mutex<Option<HashThresholds>>,
    /// The nftables fence as last installed.
    fence: Mutex<FenceSpec>,
    failing: Mutex<BTreeSet<NodeName>>,
    /// Peers whose SA soft-expired, and when.
    expired: Mutex<std::collections::BTreeMap<NodeName, Instant>>,
    in_flight: Mutex<BTreeSet<NodeName>>,
    /// Since when each peer has been known without an SA pair.
    unkeyed_since: Mutex<std::collections::BTreeMap<NodeName, Instant>>,
    last_rotation: Mutex<Option<Timestamp>>,
    /// Which (SPI, key) the kernel has had: a key is installed once.
    ledger: Mutex<KeyLedger>,
    /// SAs found lost from the kernel (their keys burned), for /metrics.
    lost_sas: AtomicU64,
    /// Wakes reconcile.
    wake: Notify,
    /// Wakes the initiator loop (a pair's keys were burned: re-key now, not at the next round).
    kick: Notify,
    endpoint: RwLock<Option<Arc<Endpoint>>>,
}

impl Shared {
    fn view(&self) -> PeerView {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn grace_for(&self, peer: &NodeName) -> Duration {
        self.view()
            .peers
            .iter()
            .find(|p| &p.spec.name == peer)
            .map_or(self.args.grace_period, |p| p.pair.grace_period)
    }

    fn limits(&self, view: &PeerView) -> SaLimits {
        // One node-wide setting: the tightest volume limit of any pair's policy. The soft limit
        // (rekey) is at 80% of the policy's figure, the hard limit (the kernel drops the SA) at 100%.
        let bytes = view.peers.iter().filter_map(|p| p.pair.max_bytes).min();
        let packets = view.peers.iter().filter_map(|p| p.pair.max_packets).min();
        SaLimits {
            soft_bytes: bytes.map(|b| b / 5 * 4),
            hard_bytes: bytes,
            soft_packets: packets.map(|p| p / 5 * 4),
            hard_packets: packets,
        }
    }

    /// Numbers a keyring change (call after making it).
    fn note_change(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Brings the kernel to the desired state for the current view and keyring, from a fresh
    /// read of the kernel (resync timer, kernel notifications, view changes).
    async fn reconcile(&self) -> anyhow::Result<()> {
        let _guard = self.apply.lock().await;
        self.reconcile_locked(Observe::Kernel).await
    }

    /// Makes sure that keyring change `change` is in the kernel: returns at once when a reconcile
    /// that read the keyring after it has already succeeded.
    async fn reconcile_covering(&self, change: u64) -> anyhow::Result<()> {
        let _guard = self.apply.lock().await;
        if self.applied.load(Ordering::SeqCst) >= change {
            return Ok(());
        }
        // a key-exchange step changes a few SAs: plan against the cached picture of the kernel
        // (DESIGN.md §8); if the kernel refuses (the cache was stale), read it and try again
        match self.reconcile_locked(Observe::Cached).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::info!(
                    error = format!("{e:#}"),
                    "targeted change failed; reading the kernel and retrying"
                );
                self.reconcile_locked(Observe::Kernel).await
            }
        }
    }

    async fn reconcile_locked(&self, how: Observe) -> anyhow::Result<()> {
        let started = Instant::now();
        // every change numbered up to here is already in the keyring we are about to read
        let covers = self.changes.load(Ordering::SeqCst);
        let view = self.view();
        if !view.synced {
            return Ok(()); // never act on a partial picture of the cluster
        }
        let mut released = Vec::new();
        let input = self.node_input(&view, &mut released);
        let mut desired = desired_state(&input).context("computing the desired datapath")?;
        // keep policy lookups hashed for the peers' pod CIDR prefix lengths (many peers)
        let thresholds = (
            hash_thresholds(&input, false),
            hash_thresholds(&input, true),
        );
        if *lock(&self.hash_thresholds) != Some(thresholds) {
            self.datapath
                .set_hash_thresholds(thresholds.0, thresholds.1)
                .await
                .context("setting the XFRM policy hash thresholds")?;
            tracing::info!(v4 = ?thresholds.0, v6 = ?thresholds.1, "XFRM policy hash thresholds set");
            *lock(&self.hash_thresholds) = Some(thresholds);
        }
        self.keep_fence(&view, how)?;
        let cached = match how {
            Observe::Cached => lock(&self.observed).clone(),
            Observe::Kernel => None,
        };
        let observed = match cached {
            Some(o) => o,
            None => self
                .datapath
                .observe(&[self.local.node_ip])
                .await
                .context("reading the kernel's XFRM state")?,
        };
        // SAs the kernel had and no longer holds are never added again: burn, re-key, recompute
        let lost = lock(&self.ledger).burn_lost(&desired, &observed.datapath);
        if !lost.is_empty() {
            self.burn(&view, &lost);
            let input = self.node_input(&view, &mut released);
            desired = desired_state(&input).context("computing the desired datapath")?;
            for s in &lost {
                desired.states.remove(&s.key); // burned keys are never wanted again
                desired.state_order.retain(|k| *k != s.key);
            }
        }
        let plan = plan(&desired, &observed.datapath);
        {
            let mut ledger = lock(&self.ledger);
            ledger.note_present(&desired, &observed.datapath);
            ledger
                .admit(&plan)
                .context("checking the plan against the key ledger")?;
        }
        if !plan.is_empty() {
            let result = self.datapath.apply(&plan).await;
            let (adds, updates, deletes) = plan.summary();
            tracing::info!(
                adds,
                updates,
                deletes,
                cached = matches!(how, Observe::Cached),
                ms = started.elapsed().as_millis() as u64,
                "applied datapath changes"
            );
            if let Err(e) = result {
                *lock(&self.observed) = None; // the kernel holds part of the plan: read it next time
                return Err(e).context("programming the kernel's XFRM state");
            }
        }
        lock(&self.ledger).retain(&desired);
        let mut after = observed;
        if after.datapath.apply(&plan).is_err() {
            *lock(&self.observed) = None;
        } else {
            *lock(&self.observed) = Some(after);
        }
        self.applied.fetch_max(covers, Ordering::SeqCst);
        // SPIs of deleted inbound SAs may be chosen again (the kernel no longer holds them)
        if let Some(ep) = self
            .endpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            for spi in released {
                ep.release_spi(spi);
            }
        }
        Ok(())
    }

    /// Keeps the nftables fence in place for the current peers: rewritten when the peers' node IPs
    /// changed, or (on a fresh read) when a rule is missing; an unchanged fence costs one read.
    fn keep_fence(&self, view: &PeerView, how: Observe) -> anyhow::Result<()> {
        let mut want = lock(&self.fence).clone();
        want.peer_node_ips = view.peers.iter().map(|p| p.spec.node_ip).collect();
        want.peer_node_ips.sort();
        want.peer_node_ips.dedup();
        let changed = *lock(&self.fence) != want;
        let broken = how == Observe::Kernel
            && !self
                .datapath
                .fence_intact(&want)
                .context("reading the nftables fence")?;
        if changed || broken {
            if broken && !changed {
                tracing::warn!("the nftables fence (table inet cipherlane) was changed by someone else; putting it back");
            }
            self.datapath
                .install_fence(&want)
                .context("installing the nftables fence")?;
            *lock(&self.fence) = want;
        }
        Ok(())
    }

    /// The layout's input for the current view and keyring; drops retired SAs and peers that left
    /// (their inbound SPIs are added to `released`).
    fn node_input(&self, view: &PeerView, released: &mut Vec<cipherlane_core::Spi>) -> NodeInput {
        let peers: Vec<Peer> = {
            let mut ring = lock(&self.keyring);
            released.extend(ring.expire(Instant::now()));
            let known: BTreeSet<&NodeName> = view.peers.iter().map(|p| &p.spec.name).collect();
            let gone: Vec<NodeName> = ring
                .peers()
                .filter(|p| !known.contains(p))
                .cloned()
                .collect();
            for p in gone {
                tracing::info!(peer = %p, "peer removed or revoked; dropping its SAs");
                released.extend(ring.remove_peer(&p).unwrap_or_default());
            }
            view.peers
                .iter()
                .map(|p| Peer {
                    spec: p.spec.clone(),
                    keys: ring.keys(&p.spec.name),
                })
                .collect()
        };
        NodeInput {
            local: LocalNode {
                name: self.local.name.clone(),
                node_ip: self.local.node_ip,
                pod_cidrs: self.local.pod_cidrs.clone(),
                underlay_ifindex: self.local.underlay_ifindex,
            },
            cluster_pod_cidrs: self.args.cluster_pod_cidrs.clone(),
            peers,
            settings: SaSettings {
                replay_window: 1024,
                limits: self.limits(view),
                fips: self.args.fips,
            },
        }
    }

    /// SAs vanished from the kernel while wanted: their pairs' keys are burned (never installed
    /// again) and each pair re-keys now, whichever side of it this node is.
    fn burn(&self, view: &PeerView, lost: &[State]) {
        let now = Instant::now();
        self.lost_sas
            .fetch_add(lost.len() as u64, Ordering::Relaxed);
        let mut ring = lock(&self.keyring);
        for p in &view.peers {
            let spis: Vec<cipherlane_core::Spi> = lost
                .iter()
                .filter(|s| s.peer == p.spec.node_ip)
                .filter_map(|s| cipherlane_core::Spi::new(s.key.spi).ok())
                .collect();
            if spis.is_empty() {
                continue;
            }
            let shown: Vec<String> = spis.iter().map(ToString::to_string).collect();
            tracing::warn!(peer = %p.spec.name, spis = ?shown,
                "SAs vanished from the kernel (flushed or deleted outside Cipherlane, or hard-expired): \
                 their keys are burned and never installed again; re-keying the pair now");
            ring.burn(&p.spec.name, &spis, now);
        }
        drop(ring);
        self.kick.notify_one();
    }

    fn set_ready(&self, ready: bool, reason: &str) {
        let was = self.ready.swap(ready, Ordering::SeqCst);
        *lock(&self.not_ready_reason) = reason.to_string();
        if was != ready {
            if ready {
                tracing::info!("node ready: the datapath is programmed and fail-closed");
            } else {
                tracing::warn!(reason, "node not ready");
            }
        }
    }
}

/// The agent's side of the key exchange's SA seam: every call lands in the kernel before it returns.
struct Installer(Arc<Shared>);

impl Installer {
    async fn apply(&self, peer: &NodeName, change: u64) -> Result<(), InstallError> {
        self.0
            .reconcile_covering(change)
            .await
            .map_err(|e| InstallError {
                peer: peer.clone(),
                reason: format!("{e:#}"),
            })
    }
}

impl SaInstaller for Installer {
    async fn install_inbound(
        &self,
        peer: &NodeName,
        epoch: Epoch,
        sa: &SaDirection,
    ) -> Result<(), InstallError> {
        lock(&self.0.keyring).install_inbound(peer, epoch, sa);
        let change = self.0.note_change();
        self.apply(peer, change).await
    }

    async fn switch_outbound(
        &self,
        peer: &NodeName,
        epoch: Epoch,
        sa: &SaDirection,
    ) -> Result<(), InstallError> {
        lock(&self.0.keyring).switch_outbound(peer, epoch, sa);
        let change = self.0.note_change();
        self.apply(peer, change).await
    }

    async fn established(&self, peer: &NodeName, pair: &SaPair) -> Result<(), InstallError> {
        let grace = self.0.grace_for(peer);
        lock(&self.0.keyring).established(peer, pair, Instant::now(), grace);
        lock(&self.0.expired).remove(peer);
        lock(&self.0.failing).remove(peer);
        *lock(&self.0.last_rotation) = Some(Timestamp::now());
        let change = self.0.note_change();
        tracing::info!(%peer, epoch = %pair.epoch, suite = %pair.suite,
            inbound_spi = %pair.inbound.spi, outbound_spi = %pair.outbound.spi, "SA pair established");
        self.apply(peer, change).await?;
        self.0.wake.notify_one(); // the old SAs' retirement timer
        Ok(())
    }
}

/// The key exchange's view of peers, read from the cluster view.
struct Directory(Arc<Shared>);

impl PeerDirectory for Directory {
    fn lookup(&self, peer: &NodeName) -> Option<PeerEntry> {
        let view = self.0.view();
        if view.revoked.contains(peer.as_str()) {
            // revoked peers are absent from `peers`; say so explicitly for a precise rejection
            return Some(PeerEntry {
                identity_key: [0; 32],
                revoked: true,
                policy: KexPairPolicy::only(Epoch(0), self.0.args.suite),
                groups: None,
            });
        }
        let p = view.peers.iter().find(|p| &p.spec.name == peer)?;
        let identity_key = parse_public_key_base64(&p.identity_key).ok()?;
        let allowed: Vec<Suite> = if self.0.args.fips {
            vec![p.pair.suite]
                .into_iter()
                .filter(|s| s.fips_approved())
                .collect()
        } else {
            vec![p.pair.suite]
        };
        Some(PeerEntry {
            identity_key,
            revoked: view.local_revoked,
            policy: KexPairPolicy {
                epoch: p.pair.epoch,
                suite: p.pair.suite,
                allowed,
                key_exchange: Default::default(),
            },
            // Until agents publish their groups, every peer is keyed as before (version 1).
            groups: None,
        })
    }
}

/// Serves /healthz, /readyz and /metrics.
struct Probes(Arc<Shared>);

impl Handler for Probes {
    fn get(&self, path: &str) -> Response {
        match path {
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" => {
                if self.0.ready.load(Ordering::SeqCst) {
                    Response::text(200, "ready\n")
                } else {
                    Response::text(
                        503,
                        format!("not ready: {}\n", lock(&self.0.not_ready_reason)),
                    )
                }
            }
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: self.0.metrics(),
            },
            _ => Response::text(404, "not found\n"),
        }
    }
}

impl Shared {
    fn metrics(&self) -> String {
        let stat = std::fs::read_to_string("/proc/net/xfrm_stat").unwrap_or_default();
        let counters = parse_xfrm_stat(&stat).unwrap_or_default();
        let view = self.view();
        let specs: Vec<_> = view.peers.iter().map(|p| p.spec.clone()).collect();
        let observed = lock(&self.observed).clone().unwrap_or_default();
        let now_unix = Timestamp::now().as_second().max(0) as u64;
        let mut out = render_metrics(&MetricsInput {
            xfrm_stat: &counters,
            observed: &observed,
            peers: &specs,
            now_unix,
        });
        let ready = u8::from(self.ready.load(Ordering::SeqCst));
        let established = {
            let ring = lock(&self.keyring);
            view.peers
                .iter()
                .filter(|p| ring.current(&p.spec.name).is_some())
                .count()
        };
        out.push_str(&format!(
            "# HELP cipherlane_agent_ready 1 when the node encrypts and CNI ADD is allowed.\n\
             # TYPE cipherlane_agent_ready gauge\ncipherlane_agent_ready {ready}\n\
             # HELP cipherlane_peers Peers known from the API server.\n# TYPE cipherlane_peers gauge\n\
             cipherlane_peers {}\n\
             # HELP cipherlane_peers_established Peers with an established SA pair.\n\
             # TYPE cipherlane_peers_established gauge\ncipherlane_peers_established {established}\n\
             # HELP cipherlane_peers_failing Peers whose handshakes are failing.\n\
             # TYPE cipherlane_peers_failing gauge\ncipherlane_peers_failing {}\n\
             # HELP cipherlane_sas_lost_total SAs that vanished from the kernel while wanted (their keys burned, their pairs re-keyed).\n\
             # TYPE cipherlane_sas_lost_total counter\ncipherlane_sas_lost_total {}\n\
             # HELP cipherlane_datapath_recording 1 when the datapath is a recording (simulation: nothing is encrypted).\n\
             # TYPE cipherlane_datapath_recording gauge\ncipherlane_datapath_recording {}\n",
            view.peers.len(),
            lock(&self.failing).len(),
            self.lost_sas.load(Ordering::Relaxed),
            u8::from(self.datapath.is_recording()),
        ));
        if let Some(ep) = self
            .endpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let m = ep.metrics();
            out.push_str(&format!(
                "# HELP cipherlane_handshakes_total Handshakes by outcome and role.\n\
                 # TYPE cipherlane_handshakes_total counter\n\
                 cipherlane_handshakes_total{{role=\"initiator\",outcome=\"started\"}} {}\n\
                 cipherlane_handshakes_total{{role=\"initiator\",outcome=\"established\"}} {}\n\
                 cipherlane_handshakes_total{{role=\"responder\",outcome=\"established\"}} {}\n\
                 # HELP cipherlane_handshake_rejections_total Refused handshake messages by reason.\n\
                 # TYPE cipherlane_handshake_rejections_total counter\n",
                m.initiated(),
                m.established_as_initiator(),
                m.established_as_responder()
            ));
            for (reason, n) in m.rejection_counts() {
                out.push_str(&format!(
                    "cipherlane_handshake_rejections_total{{reason=\"{reason}\"}} {n}\n"
                ));
            }
        }
        out
    }
}

async fn local_node(
    client: &Client,
    args: &RunArgs,
    name: &NodeName,
) -> anyhow::Result<(IpAddr, Vec<IpNet>)> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut delay = Duration::from_millis(500);
    loop {
        match nodes.get(name.as_str()).await {
            Ok(node) => {
                let spec = node.spec.unwrap_or_default();
                let mut cidrs: Vec<String> = spec.pod_cidrs.unwrap_or_default();
                if cidrs.is_empty() {
                    cidrs.extend(spec.pod_cidr);
                }
                let pod_cidrs: Vec<IpNet> = cidrs
                    .iter()
                    .map(|c| {
                        c.parse()
                            .with_context(|| format!("Node {name} has a bad pod CIDR {c:?}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let internal = node
                    .status
                    .and_then(|s| s.addresses)
                    .and_then(|a| a.into_iter().find(|a| a.type_ == "InternalIP"))
                    .and_then(|a| a.address.parse::<IpAddr>().ok());
                let ip = args.node_ip.or(internal);
                match (ip, pod_cidrs.is_empty()) {
                    (Some(ip), false) => return Ok((ip, pod_cidrs)),
                    (None, _) => {
                        tracing::warn!(node = %name, "Node has no InternalIP yet and --node-ip is not set; waiting")
                    }
                    (_, true) => {
                        tracing::warn!(node = %name, "Node has no spec.podCIDRs yet (node IPAM); waiting")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot read this node's Node object yet; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

fn interface_mtu(ifindex: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/sys/class/net").ok()?.flatten() {
        let p = entry.path();
        let idx = std::fs::read_to_string(p.join("ifindex")).ok()?;
        if idx.trim().parse::<u32>().ok() == Some(ifindex) {
            return std::fs::read_to_string(p.join("mtu"))
                .ok()?
                .trim()
                .parse()
                .ok();
        }
    }
    None
}

pub(crate) fn write_file_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn agent_state_path(args: &RunArgs) -> std::path::PathBuf {
    args.paths.state_dir.join("agent-state.json")
}

/// Says "not ready" to the CNI plugin and the probes, then serves the probes until stopped.
async fn stay_not_ready(args: &RunArgs, name: &NodeName, reason: String) -> anyhow::Result<()> {
    tracing::error!("{reason}");
    if let Err(e) = write_agent_state(
        &agent_state_path(args),
        &AgentState::not_ready(name.as_str(), &reason),
    ) {
        tracing::warn!(error = %e, "cannot write the agent state file");
    }
    struct NotReady(String);
    impl Handler for NotReady {
        fn get(&self, path: &str) -> Response {
            match path {
                "/healthz" => Response::text(200, "ok\n"),
                "/readyz" => Response::text(503, format!("not ready: {}\n", self.0)),
                _ => Response::text(404, "not found\n"),
            }
        }
    }
    let listener = http::bind(args.http_addr).await?;
    tokio::select! {
        _ = http::serve(listener, Arc::new(NotReady(reason))) => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT. The datapath stays in place when it stops (fail-closed).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let name = args.validate()?;
    let datapath = Backend::connect(args.datapath, name.as_str(), &args.paths.state_dir)?;

    // 1. The kernel must do ESP with our suite, or nothing is installed at all.
    if let Err(missing) = datapath.probe(args.suite).await {
        return stay_not_ready(&args, &name, missing).await;
    }
    if let Err(reason) = datapath.enable_forwarding() {
        return stay_not_ready(&args, &name, reason).await;
    }

    // 2. Who we are: the Node object (tunnel IP, pod CIDRs) and the identity key.
    let client = Client::try_default()
        .await
        .context("connecting to the API server (in-cluster config or KUBECONFIG)")?;
    let (node_ip, pod_cidrs) = local_node(&client, &args, &name).await?;
    // The second fence first, before any XFRM change: pod traffic that would cross the underlay
    // without IPsec is dropped whatever happens to the XFRM policies later.
    let fence = FenceSpec {
        cluster_pod_cidrs: args.cluster_pod_cidrs.clone(),
        local_pod_cidrs: pod_cidrs.clone(),
        peer_node_ips: Vec::new(),
    };
    if let Err(e) = datapath.install_fence(&fence) {
        let reason = format!(
            "cannot install the nftables fence (table inet cipherlane): {e:#}; the kernel needs \
             CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET, and the agent CAP_NET_ADMIN; staying not \
             ready, no SA or policy installed"
        );
        return stay_not_ready(&args, &name, reason).await;
    }
    tracing::info!(cluster = ?fence.cluster_pod_cidrs, local = ?fence.local_pod_cidrs,
        "nftables fence installed (table inet cipherlane)");
    let underlay_ifindex = datapath.underlay_ifindex(node_ip).await?;
    let underlay_mtu = if args.mtu > 0 {
        args.mtu
    } else if datapath.is_recording() {
        1500
    } else {
        interface_mtu(underlay_ifindex).unwrap_or(1500)
    };
    let identity = NodeIdentity::load_or_create(&args.data_dir.join("identity.pk8"))
        .context("loading the node identity key")?;
    let spec = CipherlaneNodeSpec {
        identity_key: identity.public_key_base64(),
        node_ip: node_ip.to_string(),
        endpoint: SocketAddr::new(node_ip, args.kex_port).to_string(),
        pod_cidrs: pod_cidrs.iter().map(ToString::to_string).collect(),
        suites: Suite::ALL
            .iter()
            .filter(|s| !args.fips || s.fips_approved())
            .map(|s| s.name().to_string())
            .collect(),
    };
    tracing::info!(node = %name, %node_ip, pod_cidrs = ?spec.pod_cidrs, underlay_mtu, "starting");

    let shared = Arc::new(Shared {
        local: Local {
            name: name.clone(),
            node_ip,
            pod_cidrs,
            underlay_ifindex,
            underlay_mtu,
        },
        datapath,
        keyring: Mutex::new(Keyring::new()),
        view: RwLock::new(PeerView::default()),
        apply: tokio::sync::Mutex::new(()),
        changes: AtomicU64::new(0),
        applied: AtomicU64::new(0),
        ready: AtomicBool::new(false),
        not_ready_reason: Mutex::new("starting: the cluster view is not read yet".into()),
        observed: Mutex::new(None),
        hash_thresholds: Mutex::new(None),
        fence: Mutex::new(fence),
        failing: Mutex::new(BTreeSet::new()),
        expired: Mutex::new(std::collections::BTreeMap::new()),
        in_flight: Mutex::new(BTreeSet::new()),
        unkeyed_since: Mutex::new(std::collections::BTreeMap::new()),
        last_rotation: Mutex::new(None),
        ledger: Mutex::new(KeyLedger::new()),
        lost_sas: AtomicU64::new(0),
        wake: Notify::new(),
        kick: Notify::new(),
        endpoint: RwLock::new(None),
        args,
    });

    // Probes answer from the start (not ready until the datapath is programmed).
    let listener = http::bind(shared.args.http_addr).await?;
    tokio::spawn(http::serve(listener, Arc::new(Probes(shared.clone()))));

    // 3. Publish ourselves (retrying: the API server may be briefly away).
    let generation = {
        let mut delay = Duration::from_millis(500);
        loop {
            match cipherlane_agent_k8s::publish(client.clone(), name.as_str(), &spec).await {
                Ok(obj) => break obj.metadata.generation,
                Err(e) => tracing::warn!(error = %e, "cannot publish CipherlaneNode yet; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    };

    // 4. Watch the cluster; wait for the first complete view before touching the kernel.
    let (mut view_rx, watch) = cipherlane_agent_k8s::watch_cluster(client.clone(), name.as_str());
    tokio::spawn(async move {
        if let Err(e) = watch.await {
            tracing::error!(error = %e, "cluster watch ended");
        }
    });
    loop {
        if view_rx.borrow().synced {
            break;
        }
        view_rx
            .changed()
            .await
            .context("the cluster watch stopped")?;
    }
    *shared.view.write().unwrap_or_else(|p| p.into_inner()) = view_rx.borrow().clone();

    // 6. The key exchange.
    let endpoint = Arc::new(Endpoint::new(
        name.clone(),
        identity.into_keypair(),
        Arc::new(Directory(shared.clone())),
        Arc::new(SystemClock::new()),
        Arc::new(ring::rand::SystemRandom::new()),
        KexConfig::default(),
    ));
    *shared.endpoint.write().unwrap_or_else(|p| p.into_inner()) = Some(endpoint.clone());

    // 5. Adopt what the kernel already holds for known peers (a restart must not re-key); their
    //    inbound SPIs stay reserved so that no new handshake picks one of them.
    adopt(&shared, &endpoint).await;
    let installer = Arc::new(Installer(shared.clone()));
    let kex_addr = SocketAddr::new(node_ip, shared.args.kex_port);
    let kex_listener = tokio::net::TcpListener::bind(kex_addr)
        .await
        .with_context(|| format!("cannot listen for the key exchange on {kex_addr}"))?;
    tokio::spawn(cipherlane_kex_grpc::serve(
        kex_listener,
        endpoint.clone(),
        installer.clone(),
        std::future::pending(),
    ));
    let client_kex = Arc::new(KexClient::new(endpoint, installer, ClientConfig::default()));

    // 7. First reconcile, then readiness for the CNI plugin.
    first_reconcile(&shared).await;

    tokio::spawn(view_task(shared.clone(), view_rx));
    tokio::spawn(events_task(shared.clone()));
    tokio::spawn(status_task(
        shared.clone(),
        client.clone(),
        generation,
        spec,
    ));
    let reconcile = tokio::spawn(reconcile_task(shared.clone()));
    let initiate = tokio::spawn(initiator_task(shared.clone(), client_kex));

    shutdown_signal().await;
    tracing::info!("stopping; the datapath stays in place (fail-closed)");
    reconcile.abort();
    initiate.abort();
    Ok(())
}

async fn adopt(shared: &Shared, endpoint: &Endpoint) {
    let view = shared.view();
    let specs: Vec<_> = view.peers.iter().map(|p| p.spec.clone()).collect();
    match shared.datapath.observe(&[shared.local.node_ip]).await {
        Ok(observed) => {
            // adopted SAs are installed already: if they vanish before the first plan, they are lost
            lock(&shared.ledger).note_kernel(&observed.datapath);
            let adopted = adopt_keys(&observed.datapath, &specs);
            let mut ring = lock(&shared.keyring);
            for (peer, keys) in adopted {
                let Some(p) = view.peers.iter().find(|p| p.spec.name == peer) else {
                    continue;
                };
                let (Some(inb), Some(out)) = (keys.inbound.last(), keys.outbound.last()) else {
                    continue;
                };
                let pair = SaPair {
                    epoch: p.pair.epoch,
                    suite: inb.key.suite(),
                    inbound: inb.clone(),
                    outbound: out.clone(),
                };
                for sa in &keys.inbound {
                    endpoint.reserve_spi(sa.spi);
                }
                ring.adopt(&peer, &keys, p.pair.epoch);
                ring.established(&peer, &pair, Instant::now(), p.pair.grace_period);
                tracing::info!(%peer, inbound = keys.inbound.len(), outbound = keys.outbound.len(),
                    "adopted the kernel's SAs for peer");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the kernel's SAs to adopt them"),
    }
}

async fn first_reconcile(shared: &Arc<Shared>) {
    let mut delay = Duration::from_millis(200);
    loop {
        match shared.reconcile().await {
            Ok(()) => break,
            Err(e) => {
                let reason = format!("programming the datapath failed: {e:#}");
                tracing::error!("{reason}; retrying in {delay:?}");
                shared.set_ready(false, &reason);
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    publish_readiness(shared);
}

fn publish_readiness(shared: &Shared) {
    let args = &shared.args;
    let outer = OuterFamily::of(shared.local.node_ip);
    let mtu = pod_mtu_for_all(shared.local.underlay_mtu, &Suite::ALL, outer);
    let state = AgentState::ready(
        shared.local.name.as_str(),
        mtu,
        shared.local.pod_cidrs.clone(),
    );
    if let Err(e) = write_agent_state(&agent_state_path(args), &state) {
        tracing::error!(error = %e, path = %agent_state_path(args).display(), "cannot write the agent state; pods cannot start");
        shared.set_ready(false, "cannot write the agent state file");
        return;
    }
    let spec = ConflistSpec {
        network_name: args.cni_network_name.clone(),
        agent_state_file: agent_state_path(args),
        ipam_dir: args.data_dir.join("ipam"),
        log_file: Some(args.cni_log_dir.join("cni.log")),
        chained_plugins: Vec::new(),
    };
    match write_file_atomically(
        &args.paths.cni_conf_dir.join(&args.paths.cni_conf_name),
        &spec.render(),
    ) {
        Ok(()) => {
            tracing::info!(dir = %args.paths.cni_conf_dir.display(), file = %args.paths.cni_conf_name, pod_mtu = mtu, "CNI config written")
        }
        Err(e) => tracing::error!(error = %e, "cannot write the CNI config"),
    }
    shared.set_ready(true, "");
}

async fn view_task(shared: Arc<Shared>, mut rx: watch::Receiver<PeerView>) {
    while rx.changed().await.is_ok() {
        let view = rx.borrow_and_update().clone();
        *shared.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        shared.wake.notify_one();
    }
}

async fn reconcile_task(shared: Arc<Shared>) {
    loop {
        let next_expiry = lock(&shared.keyring).next_expiry();
        let sleep = next_expiry
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(shared.args.resync)
            .min(shared.args.resync);
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
        if let Err(e) = shared.reconcile().await {
            tracing::error!(error = format!("{e:#}"), "reconcile failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Handshakes this node initiates at once. Peers answer at most `max_concurrent_handshakes` (64)
/// in both roles together; starting all of a hundred peers' handshakes at once only earns
/// "overloaded" answers and retries.
const MAX_INITIATING: usize = 16;

/// A stable per-node offset in `0..len` (FNV-1a of the node name).
fn spread_offset(name: &NodeName, len: usize) -> usize {
    let hash = name
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    if len == 0 {
        0
    } else {
        (hash % len as u64) as usize
    }
}

async fn initiator_task<I: SaInstaller>(shared: Arc<Shared>, client: Arc<KexClient<I>>) {
    let schedule = RetrySchedule::default();
    loop {
        let view = shared.view();
        let now = Timestamp::now();
        {
            let ring = lock(&shared.keyring);
            let mut unkeyed = lock(&shared.unkeyed_since);
            unkeyed.retain(|p, _| {
                ring.current(p).is_none() && view.peers.iter().any(|v| &v.spec.name == p)
            });
            for p in &view.peers {
                if ring.current(&p.spec.name).is_none() {
                    unkeyed
                        .entry(p.spec.name.clone())
                        .or_insert_with(Instant::now);
                }
            }
        }
        // Each node walks its peers from its own starting point, so that a cluster coming up does
        // not send every node's first handshakes to the same few peers.
        let start = spread_offset(&shared.local.name, view.peers.len());
        for p in view.peers.iter().cycle().skip(start).take(view.peers.len()) {
            if lock(&shared.in_flight).len() >= MAX_INITIATING {
                break; // the rest wait for a free slot (next round, 500 ms)
            }
            let peer = p.spec.name.clone();
            let unkeyed_for = lock(&shared.unkeyed_since)
                .get(&peer)
                .map_or(Duration::ZERO, Instant::elapsed);
            // one lock at a time: a guard in a struct literal lives until the end of the statement
            let (current_epoch, burned) = {
                let ring = lock(&shared.keyring);
                (
                    ring.current(&peer).map(|(pair, _)| pair.epoch),
                    ring.burned_since(&peer).is_some(),
                )
            };
            let input = RekeyInput {
                unkeyed_for,
                initiator: initiates(&shared.local.name, &peer),
                wanted_epoch: p.pair.epoch,
                epoch_started: p.pair.epoch_started,
                stagger_delay: p.pair.stagger_delay,
                current_epoch,
                expired_for: lock(&shared.expired).get(&peer).map(Instant::elapsed),
                in_flight: lock(&shared.in_flight).contains(&peer),
                burned,
            };
            let Some(why) = due(&input, now) else {
                continue;
            };
            if client.endpoint().handshake_active(&peer) {
                continue; // the peer's own handshake with us is being answered
            }
            lock(&shared.in_flight).insert(peer.clone());
            let (shared, client, schedule, addr) =
                (shared.clone(), client.clone(), schedule, p.endpoint.clone());
            tokio::spawn(async move {
                tracing::info!(%peer, reason = ?why, "starting a handshake");
                match client.handshake_with_retry(&peer, &addr, &schedule).await {
                    Ok(_) => {}
                    Err(e) if e.is_collision() => {
                        tracing::info!(%peer, reason = %e, "handshake not started: the pair's other handshake goes on");
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "handshake failed");
                        lock(&shared.failing).insert(peer.clone());
                    }
                }
                lock(&shared.in_flight).remove(&peer);
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shared.kick.notified() => {}
        }
    }
}

/// The kernel's XFRM notifications: a soft expiry asks for a re-key; any removal (an SA or policy
/// deleted or flushed, a hard expiry) wakes reconcile at once, which compares the kernel with what it
/// wants (lost SAs burn their keys and re-key; missing policies are put back within milliseconds,
/// not at the resync timer). If the subscription ends (socket overrun), it is renewed and reconcile
/// runs, since notifications may have been missed.
async fn events_task(shared: Arc<Shared>) {
    loop {
        let mut events = match shared.datapath.events() {
            Ok(Some(ev)) => ev,
            Ok(None) => return, // a recording: nothing else touches it
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to XFRM notifications; repairs wait for the resync timer");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        shared.wake.notify_one();
        while let Some(ev) = events.next().await {
            match &ev {
                XfrmEvent::Expiry(e) if !e.hard => {
                    let view = shared.view();
                    let Some(peer) = view
                        .peers
                        .iter()
                        .find(|p| p.spec.node_ip == e.dst || p.spec.node_ip == e.src)
                    else {
                        continue;
                    };
                    tracing::info!(peer = %peer.spec.name, spi = e.spi, "SA lifetime reached; re-keying");
                    lock(&shared.expired)
                        .entry(peer.spec.name.clone())
                        .or_insert_with(Instant::now);
                    shared.wake.notify_one();
                }
                XfrmEvent::SasFlushed | XfrmEvent::PoliciesFlushed => {
                    tracing::warn!(event = ?ev, "the kernel's XFRM table was flushed; repairing");
                    shared.wake.notify_one();
                }
                other => {
                    tracing::debug!(event = ?other, "XFRM removal notified; reconciling");
                    shared.wake.notify_one();
                }
            }
        }
        tracing::warn!("the XFRM notification socket closed; subscribing again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_task(
    shared: Arc<Shared>,
    client: Client,
    generation: Option<i64>,
    spec: CipherlaneNodeSpec,
) {
    let mut writer = StatusWriter::new(
        client.clone(),
        shared.local.name.as_str(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    writer.observe_generation(generation);
    loop {
        let view = shared.view();
        let mut summary = PeerSummary::new();
        {
            let ring = lock(&shared.keyring);
            let failing = lock(&shared.failing);
            for p in &view.peers {
                let state = match ring.current(&p.spec.name) {
                    Some((pair, at)) => PeerState::Established {
                        epoch: pair.epoch.0,
                        key_age: at.elapsed(),
                    },
                    None if failing.contains(&p.spec.name) => PeerState::Failing,
                    None => PeerState::Pending,
                };
                summary.add(
                    p.spec.name.as_str(),
                    p.pair.policy.as_deref().unwrap_or(""),
                    state,
                );
            }
        }
        let ready = shared.ready.load(Ordering::SeqCst);
        let last = *lock(&shared.last_rotation);
        match writer.report(summary, ready, last).await {
            Ok(_) => {}
            Err(cipherlane_agent_k8s::Error::Status {
                source: cipherlane_k8s_api::kube::Error::Api(ae),
                ..
            }) if ae.code == 404 => {
                // someone deleted our CipherlaneNode (or a GC raced a re-added Node): publish again,
                // or the peers would never see this node
                tracing::warn!("our CipherlaneNode is gone; publishing it again");
                match cipherlane_agent_k8s::publish(
                    client.clone(),
                    shared.local.name.as_str(),
                    &spec,
                )
                .await
                {
                    Ok(obj) => writer.observe_generation(obj.metadata.generation),
                    Err(e) => tracing::warn!(error = %e, "cannot publish CipherlaneNode; retrying"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot write CipherlaneNode status; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
