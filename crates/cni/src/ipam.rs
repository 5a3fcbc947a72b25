//! Address allocation from the node's pod CIDR, as pure decisions over the set of addresses in
//! use. The binary's store keeps one file per address (named by the address, holding the
//! attachment) under a lock; this module decides which address is next, what a record file
//! says, and which records a GC releases. No I/O here.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// One attachment of a pod to the network: the spec's `(CNI_CONTAINERID, CNI_IFNAME)` tuple.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

impl Attachment {
    /// The host-side veth name of this attachment: `cl` + 11 hex digits of a hash of the tuple
    /// (13 bytes, under the kernel's 15). Deterministic, so DEL and GC find the interface without
    /// any other state, even after a crash.
    pub fn host_veth_name(&self) -> String {
        // FNV-1a 64: not for security, only a stable spread of names.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self
            .container_id
            .bytes()
            .chain(std::iter::once(0))
            .chain(self.ifname.bytes())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{HOST_VETH_PREFIX}{:011x}", hash >> 20)
    }

    /// The contents of this attachment's record file.
    pub fn to_record(&self) -> String {
        format!("{}\n{}\n", self.container_id, self.ifname)
    }

    /// Parses a record file; `None` if it is not one (a torn or foreign file).
    pub fn from_record(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let container_id = lines.next()?.trim().to_string();
        let ifname = lines.next()?.trim().to_string();
        if container_id.is_empty() || ifname.is_empty() || lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(Attachment {
            container_id,
            ifname,
        })
    }
}

/// The file name of a lease in the IPAM folder: `<ip>~<attachment tag>`, the tag being the
/// attachment's host veth name. Allocation needs only the folder listing (no file reads), and
/// DEL finds an attachment's leases by name; the file's contents (the full attachment) are read
/// only by GC and CHECK.
pub fn lease_file_name(ip: Ipv4Addr, attachment: &Attachment) -> String {
    format!("{ip}~{}", attachment.host_veth_name())
}

/// Parses a lease file name into the address and the attachment tag.
pub fn parse_lease_file_name(name: &str) -> Option<(Ipv4Addr, &str)> {
    let (ip, tag) = name.split_once('~')?;
    Some((ip.parse().ok()?, tag))
}

/// Prefix of every host-side veth this plugin creates; GC deletes unknown ones.
pub const HOST_VETH_PREFIX: &str = "cl";

/// Whether a host link name has the shape of this plugin's host veths (`cl` + 11 hex digits),
/// so GC may delete it when no listed attachment owns it.
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == HOST_VETH_PREFIX.len() + 11
        && name.starts_with(HOST_VETH_PREFIX)
        && name[HOST_VETH_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit())
}

/// The link-local gateway every pod routes through (answered by proxy ARP on the host veth).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// One address and the attachment holding it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub attachment: Attachment,
}

/// Why an allocation is impossible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("pod CIDR {0} is too small: it needs at least 2 usable addresses (/30 or larger)")]
    CidrTooSmall(Ipv4Net),
    #[error("no free address in pod CIDR {cidr}: all {in_use} usable addresses are allocated; delete pods or give the node a larger pod CIDR")]
    Exhausted { cidr: Ipv4Net, in_use: usize },
}

/// The usable addresses of a pod CIDR: every host address except the network and broadcast
/// addresses.
pub fn usable_range(cidr: Ipv4Net) -> Result<(u32, u32), IpamError> {
    if cidr.prefix_len() > 30 {
        return Err(IpamError::CidrTooSmall(cidr));
    }
    let first = u32::from(cidr.network()) + 1;
    let last = u32::from(cidr.broadcast()) - 1;
    Ok((first, last))
}

/// The next free address after `last_allocated` (round robin, so a released address is not
/// handed out again at once), wrapping around the CIDR.
pub fn next_free(
    cidr: Ipv4Net,
    in_use: &BTreeSet<Ipv4Addr>,
    last_allocated: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    let (first, last) = usable_range(cidr)?;
    let size = last - first + 1;
    let start = match last_allocated.map(u32::from) {
        Some(prev) if (first..=last).contains(&prev) => {
            if prev == last {
                first
            } else {
                prev + 1
            }
        }
        _ => first,
    };
    for step in 0..size {
        let candidate = first + (start - first + step) % size;
        let ip = Ipv4Addr::from(candidate);
        if !in_use.contains(&ip) {
            return Ok(ip);
        }
    }
    Err(IpamError::Exhausted {
        cidr,
        in_use: in_use.len(),
    })
}

/// The leases a GC releases: those whose attachment the runtime no longer lists.
pub fn stale_leases<'a>(leases: &'a [Lease], valid: &BTreeSet<Attachment>) -> Vec<&'a Lease> {
    leases
        .iter()
        .filter(|l| !valid.contains(&l.attachment))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn att(c: &str) -> Attachment {
        Attachment {
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn the_first_allocation_is_the_first_host_address() {
        let ip = next_free(cidr("10.244.1.0/24"), &BTreeSet::new(), None).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 244, 1, 1));
    }

    #[test]
    fn allocation_continues_after_the_last_one_and_skips_used_addresses() {
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 0, 0, 6)].into();
        let ip = next_free(cidr("10.0.0.0/24"), &used, Some(Ipv4Addr::new(10, 0, 0, 5))).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 7));
    }

    #[test]
    fn allocation_wraps_around_and_never_returns_network_or_broadcast() {
        let ip = next_free(
            cidr("10.0.0.0/30"),
            &BTreeSet::new(),
            Some(Ipv4Addr::new(10, 0, 0, 2)),
        )
        .unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 1));
        let mut seen = BTreeSet::new();
        let mut last = None;
        for _ in 0..254 {
            let ip = next_free(cidr("10.0.1.0/24"), &seen, last).unwrap();
            assert!(seen.insert(ip), "duplicate {ip}");
            last = Some(ip);
        }
        assert!(!seen.contains(&Ipv4Addr::new(10, 0, 1, 0)));
        assert!(!seen.contains(&Ipv4Addr::new(10, 0, 1, 255)));
    }

    #[test]
    fn a_full_cidr_reports_exhaustion_with_its_size() {
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)].into();
        let err = next_free(cidr("10.0.0.0/30"), &used, None).unwrap_err();
        assert_eq!(
            err,
            IpamError::Exhausted {
                cidr: cidr("10.0.0.0/30"),
                in_use: 2
            }
        );
        assert!(next_free(cidr("10.0.0.0/31"), &BTreeSet::new(), None).is_err());
    }

    #[test]
    fn gc_releases_exactly_the_leases_not_listed() {
        let leases = vec![
            Lease {
                ip: Ipv4Addr::new(10, 0, 0, 1),
                attachment: att("keep"),
            },
            Lease {
                ip: Ipv4Addr::new(10, 0, 0, 2),
                attachment: att("gone"),
            },
        ];
        let valid: BTreeSet<_> = [att("keep")].into();
        let stale = stale_leases(&leases, &valid);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].attachment, att("gone"));
    }

    #[test]
    fn records_round_trip_and_torn_records_are_rejected() {
        let a = att("c1");
        assert_eq!(Attachment::from_record(&a.to_record()), Some(a));
        assert_eq!(Attachment::from_record("c1"), None);
        assert_eq!(Attachment::from_record(""), None);
    }

    #[test]
    fn lease_file_names_carry_the_address_and_the_attachment_tag() {
        let a = att("c1");
        let name = lease_file_name(Ipv4Addr::new(10, 0, 0, 9), &a);
        let (ip, tag) = parse_lease_file_name(&name).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(tag, a.host_veth_name());
        assert_eq!(parse_lease_file_name("lock"), None);
        assert_eq!(parse_lease_file_name(".10.0.0.9~x.1.tmp"), None);
    }

    #[test]
    fn only_names_shaped_like_host_veths_are_claimed_by_gc() {
        assert!(is_host_veth_name(&att("c1").host_veth_name()));
        for other in [
            "cl",
            "clone",
            "eth0",
            "cl0123456789g",
            "cl0123456789ab",
            "xl0123456789a",
        ] {
            assert!(!is_host_veth_name(other), "{other}");
        }
    }

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = att("c1").host_veth_name();
        assert_eq!(a, att("c1").host_veth_name());
        assert_eq!(a.len(), 13);
        assert!(a.starts_with(HOST_VETH_PREFIX));
        assert_ne!(a, att("c2").host_veth_name());
        let other_if = Attachment {
            container_id: "c1".into(),
            ifname: "net1".into(),
        };
        assert_ne!(a, other_if.host_veth_name());
    }
}
