//! Crash-safe whole-file writes: the one piece of I/O in this crate, shared by the agent state
//! writer, the conflist writer and the plugin's IPAM store. A reader (or a process restarted
//! after a crash) sees the old contents or the new ones, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Suffix of temporary files; a crash may leave one behind, which [`is_temporary`] recognises.
pub const TEMP_SUFFIX: &str = ".tmp";

/// How far a write must survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the writing process (rename is atomic; the page cache is shared).
    /// After a power loss the file may be missing or empty, so readers must treat an empty or
    /// unreadable file conservatively.
    ProcessCrash,
    /// Also survives a power loss: fsync of the file before the rename and of the folder after.
    PowerLoss,
}

/// Writes `contents` to `path` via a temporary file in the same folder and a rename (with
/// fsyncs for [`Durability::PowerLoss`]). Creates the folder if it is missing.
pub fn write(path: &Path, contents: &[u8], mode: u32, durability: Durability) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent folder", path.display())))?;
    fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}{TEMP_SUFFIX}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        if durability == Durability::PowerLoss {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durability == Durability::PowerLoss {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether a file name is a temporary left by [`write`].
pub fn is_temporary(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.ends_with(TEMP_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("cl-atomic-{}", std::process::id()));
        let path = dir.join("f.json");
        write(&path, b"one", 0o600, Durability::PowerLoss).unwrap();
        write(&path, b"two", 0o600, Durability::ProcessCrash).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["f.json".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_are_recognised() {
        assert!(is_temporary(".10.0.0.1.1234.tmp"));
        assert!(!is_temporary("10.0.0.1"));
    }
}
