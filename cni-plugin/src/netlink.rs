//! The kernel adapter: rtnetlink requests in the node's namespace and in a pod's namespace.
//!
//! A netlink socket stays bound to the network namespace it was created in, so a pod-side
//! handle is made by a short-lived thread that enters the pod's namespace, opens the socket and
//! exits; the process itself never leaves the node's namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// A netlink failure, with the operation that failed.
#[derive(Debug)]
pub struct NetlinkError {
    pub op: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl std::fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.message)
    }
}

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
pub const EEXIST: i32 = 17;

fn nl_err(op: impl Into<String>, e: rtnetlink::Error) -> NetlinkError {
    let errno = match &e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    };
    let message = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    NetlinkError {
        op: op.into(),
        errno,
        message,
    }
}

fn io_err(op: impl Into<String>, e: std::io::Error) -> NetlinkError {
    NetlinkError {
        op: op.into(),
        errno: e.raw_os_error(),
        message: e.to_string(),
    }
}

/// What the plugin needs to know about a link.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub is_veth: bool,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: String::new(),
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            is_veth: false,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => {
                    link.mac = a
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::LinkInfo(infos) => {
                    link.is_veth = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)))
                }
                _ => {}
            }
        }
        link
    }
}

/// A route as the plugin checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

impl RouteEntry {
    fn from_message(m: &RouteMessage) -> Option<Self> {
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut gateway = None;
        let mut oif = None;
        for attr in &m.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        (m.header.table == 254 || m.attributes.contains(&RouteAttribute::Table(254))).then_some(
            RouteEntry {
                dst,
                prefix_len: m.header.destination_prefix_length,
                gateway,
                oif,
            },
        )
    }
}

/// rtnetlink in one network namespace.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A handle in the calling process's namespace (the node's). Needs a tokio runtime.
    pub fn current() -> Result<Self, NetlinkError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| io_err("open a netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A handle in the namespace `ns` (an open `/run/netns/...` or `/proc/PID/ns/net`).
    ///
    /// The calling thread enters `ns`, opens the socket and returns to its own namespace at
    /// once (cheaper than a helper thread, which matters for ADD latency on a busy node). The
    /// plugin is single-threaded while it does this.
    pub fn in_namespace(ns: &File, netns_path: &str) -> Result<Self, NetlinkError> {
        let op = format!("open a netlink socket in netns {netns_path}");
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| io_err("open the node's netns (/proc/thread-self/ns/net)", e))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| NetlinkError {
            op: op.clone(),
            errno: Some(e as i32),
            message: format!("setns: {e}"),
        })?;
        let made = rtnetlink::new_connection();
        if let Err(e) = nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET) {
            // Returning to a namespace we hold open, with the privilege we just used, does not
            // fail in practice; if it ever does, stop before anything (a sysctl write, a
            // rollback) acts on the pod's namespace by mistake. A DEL or GC cleans up after.
            panic!("cannot return to the node's network namespace: {e}; stopping");
        }
        let (conn, handle, _) = made.map_err(|e| io_err(op, e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(m)) if matches!(-m.raw_code(), ENODEV | ENOENT) => {
                Ok(None)
            }
            Err(e) => Err(nl_err(format!("look up link {name}"), e)),
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("list links", e))?;
        Ok(links.iter().map(Link::from_message).collect())
    }

    /// Deletes a link by name; `Ok(false)` if it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(m)) if matches!(-m.raw_code(), ENODEV | ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(nl_err(format!("delete link {name}"), e)),
        }
    }

    /// Creates a veth pair: `host_name` here (up), `pod_name` directly inside the namespace
    /// `pod_ns` (down: the kernel cannot open a veth end before the pair is linked, ENOTCONN),
    /// both with `mtu`, in one request.
    pub async fn add_veth_into(
        &self,
        host_name: &str,
        pod_name: &str,
        pod_ns: &File,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(pod_name.to_string())
            .mtu(mtu)
            .setns_by_fd(pod_ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(host_name, pod_name)
            .mtu(mtu)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err(format!("create veth {host_name} <-> {pod_name}"), e))
    }

    /// Sets a link up.
    pub async fn set_up(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(format!("set link {name} up"), e))
    }

    /// Adds `ip/prefix` to a link.
    pub async fn add_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(|e| nl_err(format!("add address {ip}/{prefix}"), e))
    }

    /// The IPv4 addresses (with prefixes) on a link.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("list addresses", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds a route to `dst/prefix` out of `oif`, through `gateway` if given, else on-link
    /// (scope link).
    pub async fn add_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        oif: u32,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), NetlinkError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(oif);
        b = match gateway {
            Some(gw) => b.gateway(gw),
            None => b.scope(RouteScope::Link),
        };
        let what = match gateway {
            Some(gw) => format!("add route {dst}/{prefix} via {gw}"),
            None => format!("add route {dst}/{prefix} scope link"),
        };
        match self.handle.route().add(b.build()).execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == EEXIST => Ok(()),
            other => other.map_err(|e| nl_err(what, e)),
        }
    }

    /// The IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<RouteEntry>, NetlinkError> {
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("list routes", e))?;
        Ok(msgs.iter().filter_map(RouteEntry::from_message).collect())
    }
}

/// Whether a netlink error means "already gone".
pub fn is_gone(e: &NetlinkError) -> bool {
    matches!(e.errno, Some(ENODEV | ENOENT | ESRCH))
}
