//! The IPAM store: one file per allocated address under `<ipamDir>/<network>/`, named
//! `<address>~<attachment tag>` (see `cipherlane_cni::ipam::lease_file_name`) and holding the
//! attachment, written crash-safely (temporary file, then rename) while
//! an exclusive `flock` on `<ipamDir>/<network>/lock` is held. A process killed at any point
//! leaves either no record or a whole one; a whole record of a failed ADD is released by the
//! runtime's DEL or by GC. Stray temporary files are removed under the lock.
//!
//! No fsync: a power loss also ends every pod on the node, so a lease lost with it cannot lead
//! to a duplicate address; a record left empty by a power loss keeps its address reserved
//! (fail safe) until GC releases it. This keeps ADD at a few milliseconds (two fsyncs cost
//! 3 ms or more on a busy disk). The round-robin hint (the last address handed out) lives in the
//! lock file itself.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use std::os::unix::fs::FileExt;

use cipherlane_cni::atomic_file::{self, Durability};
use cipherlane_cni::ipam::{self, Attachment, IpamError, Lease};
use cipherlane_cni::{CniError, ErrorCode};
use ipnet::Ipv4Net;

const LOCK_FILE: &str = "lock";

fn io_failure(what: &str, path: &Path, e: io::Error) -> CniError {
    CniError::new(
        ErrorCode::IoFailure,
        format!("IPAM store: {what} {}: {e}", path.display()),
    )
}

/// The allocation folder of one network.
pub struct IpamStore {
    dir: PathBuf,
    lock_timeout: Duration,
}

/// The store with its lock held; dropping it releases the lock.
pub struct LockedStore<'a> {
    store: &'a IpamStore,
    /// Held locked; its contents are the last address handed out.
    lock: File,
}

impl IpamStore {
    pub fn new(ipam_dir: &Path, network: &str, lock_timeout: Duration) -> Self {
        IpamStore {
            dir: ipam_dir.join(network),
            lock_timeout,
        }
    }

    /// Takes the exclusive lock, waiting up to the configured timeout (then CNI error 11).
    pub fn lock(&self) -> Result<LockedStore<'_>, CniError> {
        fs::create_dir_all(&self.dir).map_err(|e| io_failure("create folder", &self.dir, e))?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_failure("open lock file", &path, e))?;
        // Fast path: uncontended.
        match file.try_lock() {
            Ok(()) => {
                return Ok(LockedStore {
                    store: self,
                    lock: file,
                })
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_failure("lock", &path, e)),
        }
        // Contended: block in a helper thread so that a stuck holder turns into error 11. The
        // kernel drops a flock when its holder dies, so a crashed plugin never wedges the store.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = file.lock().map(|()| file);
            let _ = tx.send(result);
        });
        match rx.recv_timeout(self.lock_timeout) {
            Ok(Ok(file)) => Ok(LockedStore {
                store: self,
                lock: file,
            }),
            Ok(Err(e)) => Err(io_failure("lock", &path, e)),
            Err(_) => Err(CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "IPAM lock {} is held by another cipherlane process for more than {} ms; retry",
                    path.display(),
                    self.lock_timeout.as_millis()
                ),
            )),
        }
    }
}

/// A lease file as listed (without reading it).
struct Entry {
    ip: Ipv4Addr,
    tag: String,
    path: PathBuf,
}

impl LockedStore<'_> {
    fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// The lease files, from the folder listing only. Removes temporaries left by a crash
    /// (safe: the lock is held).
    fn entries(&self) -> Result<Vec<Entry>, CniError> {
        let dir = self.dir();
        let listing = fs::read_dir(dir).map_err(|e| io_failure("read folder", dir, e))?;
        let mut entries = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| io_failure("read folder", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if atomic_file::is_temporary(&name) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if let Some((ip, tag)) = ipam::parse_lease_file_name(&name) {
                entries.push(Entry {
                    ip,
                    tag: tag.to_string(),
                    path: entry.path(),
                });
            }
        }
        Ok(entries)
    }

    /// The attachment recorded in a lease file. A record that cannot be parsed (a power loss
    /// can leave an empty file) keeps its address reserved under a placeholder owner that no
    /// runtime lists, so GC releases it.
    fn read(&self, entry: &Entry) -> Result<Option<Lease>, CniError> {
        let text = match fs::read_to_string(&entry.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_failure("read lease", &entry.path, e)),
        };
        let attachment = Attachment::from_record(&text).unwrap_or_else(|| Attachment {
            container_id: format!("unreadable-record-{}", entry.ip),
            ifname: String::new(),
        });
        Ok(Some(Lease {
            ip: entry.ip,
            attachment,
        }))
    }

    /// Every lease with its attachment (reads every record: for CHECK and GC, not for ADD).
    pub fn leases(&self) -> Result<Vec<Lease>, CniError> {
        let mut leases = Vec::new();
        for entry in self.entries()? {
            leases.extend(self.read(&entry)?);
        }
        leases.sort();
        Ok(leases)
    }

    /// How many addresses of `cidr` are leased.
    pub fn count_in(&self, cidr: Ipv4Net) -> Result<usize, CniError> {
        Ok(self
            .entries()?
            .iter()
            .filter(|e| cidr.contains(&e.ip))
            .count())
    }

    /// Allocates the next free address of `cidr` to `attachment`. Reads only the folder
    /// listing. (A runtime DELs before it repeats an ADD; if one did not, the earlier lease of
    /// the same attachment is released by that DEL or by GC.)
    pub fn allocate(&self, cidr: Ipv4Net, attachment: &Attachment) -> Result<Ipv4Addr, CniError> {
        let in_use: BTreeSet<Ipv4Addr> = self.entries()?.iter().map(|e| e.ip).collect();
        let mut hint = [0u8; 16];
        let n = self.lock.read_at(&mut hint, 0).unwrap_or(0);
        let last = std::str::from_utf8(&hint[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let ip = ipam::next_free(cidr, &in_use, last).map_err(|e| match e {
            IpamError::Exhausted { .. } => {
                CniError::new(ErrorCode::AddressesExhausted, e.to_string())
            }
            IpamError::CidrTooSmall(_) => CniError::new(
                ErrorCode::InvalidConfig,
                format!("key \"podCidrs\" of the agent state: {e}"),
            ),
        })?;
        let path = self.dir().join(ipam::lease_file_name(ip, attachment));
        atomic_file::write(
            &path,
            attachment.to_record().as_bytes(),
            0o644,
            Durability::ProcessCrash,
        )
        .map_err(|e| io_failure("write lease", &path, e))?;
        // A hint for round robin only: a torn or lost hint is harmless.
        let text = format!("{ip:<15}\n");
        let _ = self.lock.write_at(text.as_bytes(), 0);
        Ok(ip)
    }

    /// Releases every lease of `attachment` (found by file name, confirmed by the record);
    /// returns the released addresses.
    pub fn release(&self, attachment: &Attachment) -> Result<Vec<Ipv4Addr>, CniError> {
        let tag = attachment.host_veth_name();
        let mut released = Vec::new();
        for entry in self.entries()?.into_iter().filter(|e| e.tag == tag) {
            match self.read(&entry)? {
                // Same tag, other attachment: a hash collision; not ours to release.
                Some(lease)
                    if &lease.attachment != attachment
                        && !lease
                            .attachment
                            .container_id
                            .starts_with("unreadable-record-") => {}
                _ => {
                    if self.remove(&entry)? {
                        released.push(entry.ip);
                    }
                }
            }
        }
        Ok(released)
    }

    /// GC: releases every lease whose attachment is not in `valid`; returns the addresses.
    pub fn release_all_but(&self, valid: &BTreeSet<Attachment>) -> Result<Vec<Ipv4Addr>, CniError> {
        let mut released = Vec::new();
        for entry in self.entries()? {
            let Some(lease) = self.read(&entry)? else {
                continue;
            };
            if !ipam::stale_leases(std::slice::from_ref(&lease), valid).is_empty()
                && self.remove(&entry)?
            {
                released.push(entry.ip);
            }
        }
        Ok(released)
    }

    fn remove(&self, entry: &Entry) -> Result<bool, CniError> {
        match fs::remove_file(&entry.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_failure("remove lease", &entry.path, e)),
        }
    }
}
