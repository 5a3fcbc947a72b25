//! The kernel handle: netlink connections (XFRM and route) in the caller's network namespace,
//! reading our objects, applying a plan step by step, hash thresholds, ESP probe, uninstall.

use std::net::{IpAddr, Ipv4Addr};

use cipherlane_datapath::{
    is_our_reqid, Observed, Plan, Policy, PolicyKey, Priority, Route, State, StateKey, Step,
    ROUTE_PROTOCOL,
};
use futures::TryStreamExt;
use netlink_packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use netlink_packet_xfrm::{
    constants::{IPPROTO_ESP, XFRM_MODE_TUNNEL, XFRM_STATE_ESN},
    policy::SpdInfoAttrs,
    ReplayEsn, XfrmAttrs,
};
use rtnetlink::RouteMessageBuilder;

use crate::convert::{
    action_code, dir_code, infinite_lifetime, is_our_route, policy_from_kernel, route_from_kernel,
    sa_lifetime, state_from_kernel, user_template,
};
use crate::support::ProbeFailure;
use crate::XfrmError;

/// What `uninstall` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UninstallReport {
    pub policies: usize,
    pub states: usize,
    pub routes: usize,
}

/// Netlink connections to the kernel of the namespace this was created in.
#[derive(Clone)]
pub struct Kernel {
    xfrm: xfrmnetlink::Handle,
    rt: rtnetlink::Handle,
}

fn xfrm_err(op: impl Into<String>, e: xfrmnetlink::Error) -> XfrmError {
    let op = op.into();
    match e {
        xfrmnetlink::Error::NetlinkError(m) => {
            let errno = m.code.map(|c| -c.get()).unwrap_or(0);
            XfrmError::Netlink {
                op,
                message: std::io::Error::from_raw_os_error(errno).to_string(),
                errno,
            }
        }
        other => XfrmError::Unexpected {
            op,
            detail: other.to_string(),
        },
    }
}

fn rt_err(op: impl Into<String>, e: rtnetlink::Error) -> XfrmError {
    let op = op.into();
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let errno = m.code.map(|c| -c.get()).unwrap_or(0);
            XfrmError::Netlink {
                op,
                message: std::io::Error::from_raw_os_error(errno).to_string(),
                errno,
            }
        }
        other => XfrmError::Unexpected {
            op,
            detail: other.to_string(),
        },
    }
}

fn bad_route(op: &str, e: impl std::fmt::Display) -> XfrmError {
    XfrmError::Unexpected {
        op: op.to_string(),
        detail: e.to_string(),
    }
}

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;

impl Kernel {
    /// Opens the netlink connections. Must run inside a tokio runtime (the connections are
    /// spawned on it); the sockets belong to the calling thread's network namespace.
    pub fn connect() -> Result<Kernel, XfrmError> {
        let (conn, xfrm, _) =
            xfrmnetlink::new_connection().map_err(|source| XfrmError::Socket {
                what: "NETLINK_XFRM",
                source,
            })?;
        tokio::spawn(conn);
        let (conn, rt, _) = rtnetlink::new_connection().map_err(|source| XfrmError::Socket {
            what: "NETLINK_ROUTE",
            source,
        })?;
        tokio::spawn(conn);
        Ok(Kernel { xfrm, rt })
    }

    /// Every address configured in this namespace.
    pub async fn local_addresses(&self) -> Result<Vec<(u32, IpAddr)>, XfrmError> {
        use netlink_packet_route::address::AddressAttribute;
        let msgs: Vec<_> = self
            .rt
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| rt_err("listing addresses", e))?;
        Ok(msgs
            .into_iter()
            .flat_map(|m| {
                let index = m.header.index;
                m.attributes.into_iter().filter_map(move |a| match a {
                    AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => {
                        Some((index, ip))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// The interface index holding `node_ip`: the underlay device routes leave through.
    pub async fn underlay_ifindex(&self, node_ip: IpAddr) -> Result<u32, XfrmError> {
        self.local_addresses()
            .await?
            .into_iter()
            .find(|(_, ip)| *ip == node_ip)
            .map(|(i, _)| i)
            .ok_or(XfrmError::NoUnderlay(node_ip))
    }

    async fn dump_policies(
        &self,
    ) -> Result<Vec<netlink_packet_xfrm::policy::ModifyMessage>, XfrmError> {
        self.xfrm
            .policy()
            .get_dump()
            .execute()
            .try_collect()
            .await
            .map_err(|e| xfrm_err("dumping XFRM policies", e))
    }

    async fn dump_states(
        &self,
    ) -> Result<Vec<netlink_packet_xfrm::state::ModifyMessage>, XfrmError> {
        self.xfrm
            .state()
            .get_dump()
            .execute()
            .try_collect()
            .await
            .map_err(|e| xfrm_err("dumping XFRM states", e))
    }

    async fn dump_routes(&self) -> Result<Vec<RouteMessage>, XfrmError> {
        let mut out = Vec::new();
        for msg in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let got: Vec<RouteMessage> = self
                .rt
                .route()
                .get(msg)
                .execute()
                .try_collect()
                .await
                .map_err(|e| rt_err("dumping routes", e))?;
            out.extend(got);
        }
        Ok(out)
    }

    /// Reads Cipherlane's objects: policies in our priority band, SAs in our reqid range (with
    /// counters, oldest first) and routes with our protocol number. `local_ips` tell inbound
    /// SAs (destined to this node) from outbound ones.
    pub async fn observe(&self, local_ips: &[IpAddr]) -> Result<Observed, XfrmError> {
        let mut observed = Observed::default();
        for msg in self.dump_policies().await? {
            if let Some(p) = policy_from_kernel(&msg) {
                observed.datapath.policies.insert(p.key, p);
            }
        }
        // The kernel dumps the newest SA first; reverse, then sort by add time (stable).
        let mut states = self.dump_states().await?;
        states.reverse();
        for msg in &states {
            if let Some((state, counters)) = state_from_kernel(msg, local_ips) {
                observed.add_state(state, counters);
            }
        }
        observed.sort_states_by_age();
        for msg in self.dump_routes().await? {
            if let Some(r) = route_from_kernel(&msg) {
                observed.datapath.routes.insert(r.dst, r);
            }
        }
        Ok(observed)
    }

    /// Applies a plan in order, stopping at the first failure (later steps may depend on it:
    /// an outbound SA must not be used before the inbound one exists).
    pub async fn apply(&self, plan: &Plan) -> Result<(), XfrmError> {
        for step in &plan.steps {
            self.apply_step(step).await?;
        }
        Ok(())
    }

    /// Applies one step.
    pub async fn apply_step(&self, step: &Step) -> Result<(), XfrmError> {
        match step {
            Step::AddState(s) => self.put_state(s, false).await,
            Step::UpdateStateLimits(s) => self.put_state(s, true).await,
            Step::DeleteState(k) => self.delete_state(k).await,
            Step::AddPolicy(p) => self.put_policy(p, false).await,
            Step::UpdatePolicy(p) => self.put_policy(p, true).await,
            Step::DeletePolicy(k) => self.delete_policy(k).await,
            Step::AddRoute(r) => self.put_route(r, false).await,
            Step::ReplaceRoute(r) => self.put_route(r, true).await,
            Step::DeleteRoute(d) => {
                let msg = RouteMessageBuilder::<IpAddr>::new()
                    .destination_prefix(d.addr(), d.prefix_len())
                    .map_err(|e| XfrmError::Unexpected {
                        op: format!("deleting route {d}"),
                        detail: e.to_string(),
                    })?
                    .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                    .build();
                self.delete_route_msg(msg, &format!("deleting route {d}"))
                    .await
            }
        }
    }

    async fn put_state(&self, s: &State, update: bool) -> Result<(), XfrmError> {
        let handle = self.xfrm.state();
        let req = if update {
            handle.update(s.src, s.key.dst)
        } else {
            handle.add(s.src, s.key.dst)
        };
        let op = format!(
            "{} SA {} -> {} spi {:#x} ({})",
            if update { "updating" } else { "adding" },
            s.src,
            s.key.dst,
            s.key.spi,
            s.suite()
        );
        let mut req = req
            .protocol(IPPROTO_ESP)
            .spi(s.key.spi)
            .mode(XFRM_MODE_TUNNEL)
            .reqid(s.reqid)
            .flags(if s.esn { XFRM_STATE_ESN } else { 0 })
            .encryption_aead(
                s.suite().kernel_alg(),
                &s.aead.bytes().to_vec(),
                (s.suite().icv_len() * 8) as u32,
            )
            .map_err(|e| xfrm_err(op.clone(), e))?;
        let msg = req.message_mut();
        msg.user_sa_info.lifetime_cfg = sa_lifetime(&s.limits);
        // A new SA instance: sequence numbers from 1, an empty replay window. That is right only for
        // a key the kernel never had; the caller's `KeyLedger` refuses any other (DESIGN.md §3).
        msg.nlas.push(XfrmAttrs::ReplayStateEsn(ReplayEsn {
            bmp_len: s.replay_window.div_ceil(32),
            replay_window: s.replay_window,
            ..Default::default()
        }));
        req.execute().await.map_err(|e| xfrm_err(op, e))
    }

    async fn delete_state(&self, k: &StateKey) -> Result<(), XfrmError> {
        let op = format!("deleting SA to {} spi {:#x}", k.dst, k.spi);
        // The source address is not part of an SA's identity for deletion.
        let unspecified = match k.dst {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        match self
            .xfrm
            .state()
            .delete(unspecified, k.dst)
            .protocol(IPPROTO_ESP)
            .spi(k.spi)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match xfrm_err(op, e) {
                // already gone (a hard expiry raced us): the goal is reached
                XfrmError::Netlink { errno, .. } if errno == ESRCH || errno == ENOENT => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn put_policy(&self, p: &Policy, update: bool) -> Result<(), XfrmError> {
        let handle = self.xfrm.policy();
        let (src, dst) = (p.key.src, p.key.dst);
        let req = if update {
            handle.update(src.addr(), src.prefix_len(), dst.addr(), dst.prefix_len())
        } else {
            handle.add(src.addr(), src.prefix_len(), dst.addr(), dst.prefix_len())
        };
        let mut req = req
            .direction(dir_code(p.key.dir))
            .priority(p.priority)
            .action(action_code(p.action));
        if let Some(t) = &p.template {
            req = req.add_template(user_template(t));
        }
        req.message_mut().user_policy_info.lifetime_cfg = infinite_lifetime();
        let op = format!(
            "{} policy {:?} {} -> {} priority {}",
            if update { "updating" } else { "adding" },
            p.key.dir,
            src,
            dst,
            p.priority
        );
        req.execute().await.map_err(|e| xfrm_err(op, e))
    }

    async fn delete_policy(&self, k: &PolicyKey) -> Result<(), XfrmError> {
        let op = format!("deleting policy {:?} {} -> {}", k.dir, k.src, k.dst);
        match self
            .xfrm
            .policy()
            .delete(
                k.src.addr(),
                k.src.prefix_len(),
                k.dst.addr(),
                k.dst.prefix_len(),
            )
            .direction(dir_code(k.dir))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match xfrm_err(op, e) {
                XfrmError::Netlink { errno, .. } if errno == ENOENT => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn put_route(&self, r: &Route, replace: bool) -> Result<(), XfrmError> {
        let verb = if replace { "replacing" } else { "adding" };
        let msg = if r.is_blackhole() {
            let op = format!("{verb} blackhole route {}", r.dst);
            RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(r.dst.addr(), r.dst.prefix_len())
                .map_err(|e| bad_route(&op, e))?
                .kind(netlink_packet_route::route::RouteType::BlackHole)
                .scope(RouteScope::Universe)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                .build()
        } else {
            let op = format!(
                "{verb} route {} via {} onlink dev #{} src {}",
                r.dst, r.gateway, r.oif, r.src
            );
            RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(r.dst.addr(), r.dst.prefix_len())
                .map_err(|e| bad_route(&op, e))?
                .gateway(r.gateway)
                .map_err(|e| bad_route(&op, e))?
                .pref_source(r.src)
                .map_err(|e| bad_route(&op, e))?
                .output_interface(r.oif)
                .onlink()
                .scope(RouteScope::Universe)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                .build()
        };
        let op = format!("{verb} route {}", r.dst);
        let req = self.rt.route().add(msg);
        let req = if replace { req.replace() } else { req };
        req.execute().await.map_err(|e| rt_err(op, e))
    }

    async fn delete_route_msg(&self, msg: RouteMessage, op: &str) -> Result<(), XfrmError> {
        match self.rt.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => match rt_err(op, e) {
                XfrmError::Netlink { errno, .. } if errno == ESRCH || errno == ENOENT => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Sets the policy hash thresholds (`ip xfrm policy set hthresh4 L R hthresh6 L R`).
    pub async fn set_hash_thresholds(
        &self,
        v4: Option<(u8, u8)>,
        v6: Option<(u8, u8)>,
    ) -> Result<(), XfrmError> {
        if v4.is_none() && v6.is_none() {
            return Ok(());
        }
        let mut req = self.xfrm.policy().set_spdinfo();
        if let Some((l, r)) = v4 {
            req = req.hthresh4(l, r);
        }
        if let Some((l, r)) = v6 {
            req = req.hthresh6(l, r);
        }
        req.execute()
            .await
            .map_err(|e| xfrm_err("setting XFRM policy hash thresholds", e))
    }

    /// The current policy hash thresholds, `(v4, v6)` as `(lbits, rbits)`.
    pub async fn hash_thresholds(&self) -> Result<(Option<(u8, u8)>, Option<(u8, u8)>), XfrmError> {
        let info = self
            .xfrm
            .policy()
            .get_spdinfo()
            .execute()
            .await
            .map_err(|e| xfrm_err("reading XFRM policy hash thresholds", e))?;
        let mut out = (None, None);
        for nla in info.nlas {
            match nla {
                SpdInfoAttrs::SpdIpv4HThresh(t) => out.0 = Some((t.lbits, t.rbits)),
                SpdInfoAttrs::SpdIpv6HThresh(t) => out.1 = Some((t.lbits, t.rbits)),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Adds and removes a throwaway ESP SA (documentation addresses, our reserved probe reqid,
    /// no policy refers to it, so no traffic can use it) to learn whether the kernel can do
    /// ESP with `suite`.
    pub async fn probe_esp(
        &self,
        suite: cipherlane_core::Suite,
        v6: bool,
    ) -> Result<(), ProbeFailure> {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                "2001:db8::c1a1"
                    .parse()
                    .map_err(|_| ProbeFailure::Other(0, "address".into()))?,
                "2001:db8::c1a2"
                    .parse()
                    .map_err(|_| ProbeFailure::Other(0, "address".into()))?,
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 161)),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 162)),
            )
        };
        let key = cipherlane_core::SaKey::new(suite, vec![0x5a; suite.keymat_len()])
            .map_err(|e| ProbeFailure::Other(0, e.to_string()))?;
        let probe = State {
            key: StateKey {
                dst,
                spi: PROBE_SPI,
            },
            src,
            reqid: PROBE_REQID,
            flow: cipherlane_datapath::Flow::Outbound,
            peer: dst,
            aead: key,
            esn: true,
            replay_window: 128,
            limits: Default::default(),
        };
        // A leftover probe from a crash would make the add fail with EEXIST.
        let _ = self.delete_state(&probe.key).await;
        match self.put_state(&probe, false).await {
            Ok(()) => {
                let _ = self.delete_state(&probe.key).await;
                Ok(())
            }
            Err(XfrmError::Netlink { errno, message, .. }) => {
                Err(ProbeFailure::from_errno(errno, message))
            }
            Err(other) => Err(ProbeFailure::Other(0, other.to_string())),
        }
    }

    /// Removes every object Cipherlane installed (our priority band, our reqid range, our route
    /// protocol) and nothing else. Safe to run twice.
    pub async fn uninstall(&self) -> Result<UninstallReport, XfrmError> {
        let mut report = UninstallReport::default();
        // Routes and per-peer policies first, the fail-closed guards last, then the SAs.
        let mut policies: Vec<Policy> = self
            .dump_policies()
            .await?
            .iter()
            .filter_map(policy_from_kernel)
            .collect();
        policies.sort_by_key(|p| p.priority);
        for msg in self.dump_routes().await? {
            if is_our_route(&msg) {
                self.delete_route_msg(msg, "deleting route on uninstall")
                    .await?;
                report.routes += 1;
            }
        }
        for p in &policies {
            debug_assert!(Priority::from_value(p.priority).is_some());
            self.delete_policy(&p.key).await?;
            report.policies += 1;
        }
        for msg in self.dump_states().await? {
            let info = &msg.user_sa_info;
            if is_our_reqid(info.reqid) && info.id.proto == IPPROTO_ESP {
                let Some(dst) = crate::convert::ip_of(&info.id.daddr, info.family) else {
                    continue;
                };
                self.delete_state(&StateKey {
                    dst,
                    spi: info.id.spi,
                })
                .await?;
                report.states += 1;
            }
        }
        Ok(report)
    }

    /// A stream of this namespace's XFRM notifications about our objects (see [`crate::XfrmEvents`]).
    pub fn events(&self) -> Result<crate::XfrmEvents, XfrmError> {
        crate::events::subscribe()
    }
}

/// The probe SA's reqid: inside our range (so uninstall would clean a leftover), never used by
/// the layout.
pub const PROBE_REQID: u32 = 0x0C1A_FFFF;
const PROBE_SPI: u32 = 0x0C1A_FFFF;
