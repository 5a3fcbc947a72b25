//! The IPAM store: one file per allocated address under `<ipamDir>/<network>/`, named by the
//! address and holding the attachment, written crash-safely (temporary file, then rename) while
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

impl LockedStore<'_> {
    fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// Every lease in the store. Removes temporaries left by a crash (safe: the lock is held).
    pub fn leases(&self) -> Result<Vec<Lease>, CniError> {
        let dir = self.dir();
        let entries = fs::read_dir(dir).map_err(|e| io_failure("read folder", dir, e))?;
        let mut leases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_failure("read folder", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if atomic_file::is_temporary(&name) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Ok(ip) = name.parse::<Ipv4Addr>() else {
                continue;
            };
            let text = match fs::read_to_string(entry.path()) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_failure("read lease", &entry.path(), e)),
            };
            match Attachment::from_record(&text) {
                Some(attachment) => leases.push(Lease { ip, attachment }),
                // Cannot happen with atomic writes; a hand-edited file. Keep the address
                // reserved (fail safe) under a placeholder owner that GC will release.
                None => leases.push(Lease {
                    ip,
                    attachment: Attachment {
                        container_id: format!("unreadable-record-{ip}"),
                        ifname: String::new(),
                    },
                }),
            }
        }
        leases.sort();
        Ok(leases)
    }

    /// The address of `attachment`, allocating the next free one from `cidr` if it has none.
    /// Returns the address and whether it was newly allocated.
    pub fn allocate(
        &self,
        cidr: Ipv4Net,
        attachment: &Attachment,
    ) -> Result<(Ipv4Addr, bool), CniError> {
        let leases = self.leases()?;
        if let Some(existing) = leases
            .iter()
            .find(|l| &l.attachment == attachment && cidr.contains(&l.ip))
        {
            return Ok((existing.ip, false));
        }
        let in_use: BTreeSet<Ipv4Addr> = leases.iter().map(|l| l.ip).collect();
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
        let path = self.dir().join(ip.to_string());
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
        Ok((ip, true))
    }

    /// Releases every lease of `attachment`; returns the released addresses.
    pub fn release(&self, attachment: &Attachment) -> Result<Vec<Ipv4Addr>, CniError> {
        let leases = self.leases()?;
        let mine: Vec<Lease> = leases
            .into_iter()
            .filter(|l| &l.attachment == attachment)
            .collect();
        self.remove(&mine)
    }

    /// Removes the given leases' files.
    pub fn remove(&self, leases: &[Lease]) -> Result<Vec<Ipv4Addr>, CniError> {
        let mut released = Vec::new();
        for lease in leases {
            let path = self.dir().join(lease.ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => released.push(lease.ip),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_failure("remove lease", &path, e)),
            }
        }
        Ok(released)
    }
}
