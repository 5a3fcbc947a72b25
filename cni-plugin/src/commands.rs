//! The CNI operations: ADD, DEL, CHECK, STATUS and GC, each composed from the agent-state gate,
//! the IPAM store and the netlink adapter.
//!
//! Pod wiring is point-to-point, as Calico does it: a veth pair, the pod side named CNI_IFNAME
//! with the pod's address as a /32, an on-link route to the link-local gateway 169.254.1.1 and a
//! default route through it; the host side has no address, answers ARP for the gateway by proxy
//! ARP, and carries a /32 route to the pod.

use std::fs::File;
use std::net::Ipv4Addr;
use std::time::Duration;

use cipherlane_cni::agent_state::{read_agent_state, ReadyNode};
use cipherlane_cni::ipam::{self, Attachment, POD_GATEWAY};
use cipherlane_cni::result::{AddResult, Interface, IpConfig, Route};
use cipherlane_cni::{CniError, ErrorCode, NetConf};
use ipnet::{IpNet, Ipv4Net};

use crate::fault;
use crate::ipam_store::IpamStore;
use crate::log::Log;
use crate::netlink::{is_gone, Netlink, NetlinkError, EEXIST};

fn kernel(e: NetlinkError) -> CniError {
    CniError::new(ErrorCode::Kernel, e.to_string())
}

fn store(conf: &NetConf) -> IpamStore {
    IpamStore::new(
        &conf.ipam_dir,
        &conf.name,
        Duration::from_millis(conf.lock_timeout_ms),
    )
}

/// The agent gate: pods may be wired only while the node encrypts (CNI error 50 otherwise).
pub fn agent_gate(conf: &NetConf) -> Result<ReadyNode, CniError> {
    let state = read_agent_state(&conf.agent_state_file)
        .map_err(|e| CniError::new(ErrorCode::NotAvailable, e.to_string()))?;
    state
        .readiness()
        .map_err(|reason| CniError::new(ErrorCode::NotAvailable, reason))
}

/// Opens the pod's namespace; a missing one is CNI error 3 naming the path.
fn open_netns(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::new(
            ErrorCode::ContainerUnknown,
            format!("CNI_NETNS {path:?} cannot be opened: {e}"),
        )
    })
}

fn write_sysctl(path: &str, value: &str) -> Result<(), CniError> {
    std::fs::write(path, value).map_err(|e| {
        CniError::new(
            ErrorCode::Kernel,
            format!("set sysctl {path} = {value}: {e}"),
        )
    })
}

/// The sysctls of a host-side veth: proxy ARP answers the pod's ARP for 169.254.1.1 (without
/// delay), and forwarding lets the node route the pod's packets.
fn host_veth_sysctls(name: &str) -> Result<(), CniError> {
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/proxy_arp"), "1")?;
    write_sysctl(&format!("/proc/sys/net/ipv4/neigh/{name}/proxy_delay"), "0")?;
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "1")
}

/// ADD: wires the pod and returns its result. Leaves nothing behind on failure.
pub async fn add(
    conf: &NetConf,
    attachment: &Attachment,
    netns: &str,
    log: &mut Log,
) -> Result<AddResult, CniError> {
    let node = agent_gate(conf)?;
    let mtu = conf.mtu.unwrap_or(node.pod_mtu);
    log.debug(&format!(
        "agent ready: pod CIDR {}, MTU {mtu}",
        node.pod_cidr_v4
    ));
    let ns = open_netns(netns)?;
    let host = Netlink::current().map_err(kernel)?;
    let pod = Netlink::in_namespace(&ns, netns).map_err(kernel)?;
    if pod
        .link(&attachment.ifname)
        .await
        .map_err(kernel)?
        .is_some()
    {
        return Err(CniError::new(
            ErrorCode::InterfaceExists,
            format!(
                "CNI_IFNAME {:?} already exists in netns {netns}; DEL the attachment first or use another name",
                attachment.ifname
            ),
        ));
    }
    let store = store(conf);
    let ip = store.lock()?.allocate(node.pod_cidr_v4, attachment)?;
    log.info(&format!("allocated {ip} from {}", node.pod_cidr_v4));
    fault::hang_point("after-ipam");
    match wire(&host, &pod, &ns, attachment, netns, ip, mtu).await {
        Ok(result) => Ok(result),
        Err(e) => {
            log.error(&format!("ADD failed, rolling back: {e}"));
            let host_veth = attachment.host_veth_name();
            if let Err(re) = host.delete_link(&host_veth).await {
                log.error(&format!("rollback: deleting {host_veth}: {re}"));
            }
            if let Err(re) = pod.delete_link(&attachment.ifname).await {
                log.error(&format!(
                    "rollback: deleting {} in pod: {re}",
                    attachment.ifname
                ));
            }
            match store.lock().and_then(|s| s.release(attachment)) {
                Ok(ips) => log.info(&format!("rollback: released {ips:?}")),
                Err(re) => log.error(&format!("rollback: releasing address: {re}")),
            }
            Err(e)
        }
    }
}

async fn wire(
    host: &Netlink,
    pod: &Netlink,
    ns: &File,
    attachment: &Attachment,
    netns: &str,
    ip: Ipv4Addr,
    mtu: u32,
) -> Result<AddResult, CniError> {
    let host_veth = attachment.host_veth_name();
    let exists = |e: NetlinkError| {
        if e.errno == Some(EEXIST) {
            CniError::new(
                ErrorCode::InterfaceExists,
                format!(
                    "CNI_IFNAME {:?} (or host veth {host_veth}) already exists: {e}",
                    attachment.ifname
                ),
            )
        } else {
            kernel(e)
        }
    };
    match host
        .add_veth_into(&host_veth, &attachment.ifname, ns, mtu)
        .await
    {
        Ok(()) => {}
        // The pod side was checked absent, so the host veth of this attachment exists without
        // its pod side: debris of a killed ADD. Replace it.
        Err(e) if e.errno == Some(EEXIST) => {
            host.delete_link(&host_veth).await.map_err(kernel)?;
            host.add_veth_into(&host_veth, &attachment.ifname, ns, mtu)
                .await
                .map_err(exists)?;
        }
        Err(e) => return Err(exists(e)),
    }
    fault::hang_point("after-veth");
    fault::fail_point("after-veth")?;
    let vanished =
        |what: String| CniError::new(ErrorCode::Kernel, format!("{what} vanished after creation"));
    let (host_link, pod_link) =
        futures::try_join!(host.link(&host_veth), pod.link(&attachment.ifname)).map_err(kernel)?;
    let host_link = host_link.ok_or_else(|| vanished(format!("host veth {host_veth}")))?;
    let pod_link =
        pod_link.ok_or_else(|| vanished(format!("pod interface {}", attachment.ifname)))?;
    host_veth_sysctls(&host_veth)?;
    // Independent requests in flight together. Routes need their device up, and the default
    // route needs the on-link route to its gateway.
    futures::try_join!(
        pod.set_up(pod_link.index, &attachment.ifname),
        pod.add_address(pod_link.index, ip, 32),
        host.add_route(ip, 32, host_link.index, None),
    )
    .map_err(kernel)?;
    pod.add_route(POD_GATEWAY, 32, pod_link.index, None)
        .await
        .map_err(kernel)?;
    pod.add_route(Ipv4Addr::UNSPECIFIED, 0, pod_link.index, Some(POD_GATEWAY))
        .await
        .map_err(kernel)?;
    fault::fail_point("after-routes")?;

    Ok(AddResult {
        interfaces: vec![
            Interface {
                name: host_veth,
                mac: host_link.mac,
                mtu: Some(mtu),
                sandbox: String::new(),
            },
            Interface {
                name: attachment.ifname.clone(),
                mac: pod_link.mac,
                mtu: Some(mtu),
                sandbox: netns.to_string(),
            },
        ],
        ips: vec![IpConfig {
            address: IpNet::V4(Ipv4Net::new(ip, 32).unwrap_or_default()),
            gateway: Some(POD_GATEWAY.into()),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: IpNet::V4(Ipv4Net::default()),
            gw: Some(POD_GATEWAY.into()),
        }],
    })
}

/// DEL: removes whatever of the attachment still exists; succeeds when it is all gone already,
/// including when the pod's namespace no longer exists.
pub async fn del(
    conf: &NetConf,
    attachment: &Attachment,
    netns: Option<&str>,
    log: &mut Log,
) -> Result<(), CniError> {
    let host = Netlink::current().map_err(kernel)?;
    let host_veth = attachment.host_veth_name();
    // Deleting one end of a veth deletes both, so the pod side needs a look only when the host
    // side was already gone. (The kernel's unregistration of a veth, 10-20 ms, dominates DEL.)
    let deleted_pair = host.delete_link(&host_veth).await.map_err(kernel)?;
    if deleted_pair {
        log.info(&format!("deleted host veth {host_veth} and its pod side"));
    }
    if let (false, Some(path)) = (deleted_pair, netns) {
        match File::open(path) {
            Ok(ns) => match Netlink::in_namespace(&ns, path) {
                Ok(pod) => match pod.link(&attachment.ifname).await {
                    Ok(Some(link)) if link.is_veth => {
                        pod.delete_link(&attachment.ifname).await.map_err(kernel)?;
                        log.info(&format!("deleted {} in {path}", attachment.ifname));
                    }
                    Ok(_) => {}
                    Err(e) if is_gone(&e) => {}
                    Err(e) => return Err(kernel(e)),
                },
                // Not a namespace any more (an unmounted bind mount): nothing to clean inside.
                Err(e) => log.info(&format!(
                    "netns {path} not usable, nothing to clean in it: {e}"
                )),
            },
            Err(e) => log.info(&format!(
                "netns {path} is gone ({e}); cleaning host side only"
            )),
        }
    }
    let released = store(conf).lock()?.release(attachment)?;
    if !released.is_empty() {
        log.info(&format!("released {released:?}"));
    }
    Ok(())
}

fn mismatch(what: String) -> CniError {
    CniError::new(ErrorCode::CheckMismatch, what)
}

/// CHECK: the pod's interface, addresses and routes match `prevResult`, the host side is in
/// place, the address is still leased to this attachment, and the node still encrypts.
pub async fn check(conf: &NetConf, attachment: &Attachment, netns: &str) -> Result<(), CniError> {
    agent_gate(conf)?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "key \"prevResult\": is required for CHECK (the result of the ADD)",
        )
    })?;
    let ns = open_netns(netns)?;
    let host = Netlink::current().map_err(kernel)?;
    let pod = Netlink::in_namespace(&ns, netns).map_err(kernel)?;
    let ifname = &attachment.ifname;
    let link = pod
        .link(ifname)
        .await
        .map_err(kernel)?
        .ok_or_else(|| mismatch(format!("interface {ifname:?} is missing in netns {netns}")))?;
    if !link.up {
        return Err(mismatch(format!(
            "interface {ifname:?} in netns {netns} is down"
        )));
    }
    if let Some(want) = prev
        .interfaces
        .iter()
        .find(|i| &i.name == ifname && !i.sandbox.is_empty())
    {
        if let Some(mtu) = want.mtu {
            if link.mtu != mtu {
                return Err(mismatch(format!(
                    "interface {ifname:?} has MTU {}, prevResult says {mtu}",
                    link.mtu
                )));
            }
        }
        if !want.mac.is_empty() && !want.mac.eq_ignore_ascii_case(&link.mac) {
            return Err(mismatch(format!(
                "interface {ifname:?} has MAC {}, prevResult says {}",
                link.mac, want.mac
            )));
        }
    }
    let addrs = pod.addresses(link.index).await.map_err(kernel)?;
    let mut pod_ips = Vec::new();
    for ip in &prev.ips {
        let on_pod_side = match ip.interface {
            Some(i) => prev
                .interfaces
                .get(i)
                .is_some_and(|iface| &iface.name == ifname),
            None => true,
        };
        let (IpNet::V4(net), true) = (ip.address, on_pod_side) else {
            continue;
        };
        if !addrs.contains(&(net.addr(), net.prefix_len())) {
            return Err(mismatch(format!(
                "address {net} is missing on {ifname:?} in netns {netns}"
            )));
        }
        pod_ips.push(net.addr());
    }
    if pod_ips.is_empty() {
        return Err(mismatch(format!(
            "prevResult lists no IPv4 address for {ifname:?}"
        )));
    }
    let routes = pod.routes().await.map_err(kernel)?;
    let has = |dst: Ipv4Addr, len: u8, gw: Option<Ipv4Addr>| {
        routes.iter().any(|r| {
            r.dst == dst && r.prefix_len == len && r.gateway == gw && r.oif == Some(link.index)
        })
    };
    if !has(POD_GATEWAY, 32, None) {
        return Err(mismatch(format!(
            "on-link route to gateway {POD_GATEWAY} via {ifname:?} is missing in netns {netns}"
        )));
    }
    for r in &prev.routes {
        let IpNet::V4(dst) = r.dst else { continue };
        let gw = match r.gw {
            Some(std::net::IpAddr::V4(g)) => Some(g),
            _ => Some(POD_GATEWAY),
        };
        if !has(dst.network(), dst.prefix_len(), gw) {
            return Err(mismatch(format!(
                "route {dst} via {gw:?} is missing in netns {netns}"
            )));
        }
    }
    let host_veth = attachment.host_veth_name();
    let hl = host
        .link(&host_veth)
        .await
        .map_err(kernel)?
        .ok_or_else(|| mismatch(format!("host veth {host_veth} is missing")))?;
    if !hl.up {
        return Err(mismatch(format!("host veth {host_veth} is down")));
    }
    let proxy_arp =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{host_veth}/proxy_arp"))
            .unwrap_or_default();
    if proxy_arp.trim() != "1" {
        return Err(mismatch(format!(
            "proxy_arp is off on host veth {host_veth}"
        )));
    }
    let host_routes = host.routes().await.map_err(kernel)?;
    let leases = store(conf).lock()?.leases()?;
    for ip in pod_ips {
        if !host_routes
            .iter()
            .any(|r| r.dst == ip && r.prefix_len == 32 && r.oif == Some(hl.index))
        {
            return Err(mismatch(format!(
                "host route {ip}/32 dev {host_veth} is missing"
            )));
        }
        if !leases
            .iter()
            .any(|l| l.ip == ip && &l.attachment == attachment)
        {
            return Err(mismatch(format!(
                "address {ip} is not leased to container {} ifname {} in {}",
                attachment.container_id,
                ifname,
                conf.ipam_dir.display()
            )));
        }
    }
    Ok(())
}

/// STATUS: ready while the agent is ready and the pod CIDR has a free address.
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let node = agent_gate(conf)?;
    let store = store(conf);
    let in_cidr = store.lock()?.count_in(node.pod_cidr_v4)?;
    let (first, last) = ipam::usable_range(node.pod_cidr_v4)
        .map_err(|e| CniError::new(ErrorCode::NotAvailable, e.to_string()))?;
    if in_cidr as u64 >= u64::from(last - first + 1) {
        return Err(CniError::new(
            ErrorCode::NotAvailable,
            format!(
                "pod CIDR {} has no free address ({in_cidr} allocated)",
                node.pod_cidr_v4
            ),
        ));
    }
    Ok(())
}

/// GC: releases every lease whose attachment the runtime does not list, and deletes host veths
/// of this plugin that belong to no listed attachment. Continues past errors and reports them.
pub async fn gc(conf: &NetConf, log: &mut Log) -> Result<(), CniError> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let mut errors = Vec::new();
    match store(conf).lock() {
        Ok(locked) => match locked.release_all_but(&valid) {
            Ok(released) if !released.is_empty() => log.info(&format!("GC released {released:?}")),
            Ok(_) => {}
            Err(e) => errors.push(e.details),
        },
        Err(e) => errors.push(e.details),
    }
    let keep: std::collections::BTreeSet<String> =
        valid.iter().map(Attachment::host_veth_name).collect();
    match Netlink::current() {
        Ok(host) => match host.links().await {
            Ok(links) => {
                for link in links {
                    if link.is_veth
                        && ipam::is_host_veth_name(&link.name)
                        && !keep.contains(&link.name)
                    {
                        match host.delete_link(&link.name).await {
                            Ok(_) => log.info(&format!("GC deleted host veth {}", link.name)),
                            Err(e) if is_gone(&e) => {}
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        },
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::Kernel,
            format!("GC finished with errors: {}", errors.join("; ")),
        ))
    }
}
