//! Plugin logs: one line per event to stderr and, when configured, appended to a log file
//! (`logFile`, default `/var/log/cipherlane/cni.log`). Runtimes keep stderr only on failure,
//! so the file is where an operator finds the history of a pod's wiring. The file is capped at
//! 10 MiB and rotated once (`cni.log.1`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cipherlane_cni::config::LogLevel;

/// The log file's size cap; two generations are kept.
const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;

pub struct Log {
    file: Option<File>,
    level: LogLevel,
    prefix: String,
}

impl Log {
    /// A logger for one invocation; `context` (command and container ID) prefixes every line.
    pub fn new(context: String) -> Self {
        Log {
            file: None,
            level: LogLevel::Info,
            prefix: context,
        }
    }

    /// Starts appending to `path` (creating its folder). Failure to open is logged, not fatal:
    /// logging must never stop a pod from starting.
    pub fn open_file(&mut self, path: Option<&Path>, level: LogLevel) {
        self.level = level;
        let Some(path) = path else { return };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Size-capped: past MAX_LOG_BYTES the file becomes `<file>.1` (replacing the older one).
        if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
            let mut rotated = path.as_os_str().to_owned();
            rotated.push(".1");
            let _ = std::fs::rename(path, rotated);
        }
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => self.file = Some(f),
            Err(e) => self.warn(&format!("cannot open log file {}: {e}", path.display())),
        }
    }

    pub fn set_context(&mut self, context: String) {
        self.prefix = context;
    }

    fn write(&mut self, level: &str, msg: &str) {
        let line = format!(
            "{} {level} cipherlane[{}] {} {msg}\n",
            timestamp(),
            std::process::id(),
            self.prefix
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(f) = &mut self.file {
            let _ = f.write_all(line.as_bytes());
        }
    }

    pub fn error(&mut self, msg: &str) {
        self.write("ERROR", msg);
    }

    pub fn warn(&mut self, msg: &str) {
        self.write("WARN", msg);
    }

    pub fn info(&mut self, msg: &str) {
        if self.level >= LogLevel::Info {
            self.write("INFO", msg);
        }
    }

    pub fn debug(&mut self, msg: &str) {
        if self.level >= LogLevel::Debug {
            self.write("DEBUG", msg);
        }
    }
}

/// RFC 3339 UTC with milliseconds, without a date library.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}
