//! Kernel support for ESP: turning a failed probe SA (and, when readable, the kernel's build
//! configuration) into one line that names the missing kernel options.

use std::fmt;
use std::io::Read;

use cipherlane_core::Suite;

/// How the probe SA failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeFailure {
    /// `EPROTONOSUPPORT`: no ESP protocol handler for the family.
    NoEsp(String),
    /// `ENOSYS`/`ENOENT`: the AEAD algorithm is not available.
    NoAlgorithm(String),
    /// `EPERM`: not allowed to program XFRM (CAP_NET_ADMIN missing).
    Permission(String),
    /// Anything else: errno and message.
    Other(i32, String),
}

impl ProbeFailure {
    pub fn from_errno(errno: i32, message: String) -> ProbeFailure {
        match errno {
            93 => ProbeFailure::NoEsp(message),
            38 | 2 => ProbeFailure::NoAlgorithm(message),
            1 => ProbeFailure::Permission(message),
            _ => ProbeFailure::Other(errno, message),
        }
    }

    fn message(&self) -> &str {
        match self {
            ProbeFailure::NoEsp(m)
            | ProbeFailure::NoAlgorithm(m)
            | ProbeFailure::Permission(m)
            | ProbeFailure::Other(_, m) => m,
        }
    }
}

/// Which kernel support is missing, printable as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSupport {
    /// Kernel options (e.g. `CONFIG_INET_ESP`) that are missing; empty when unknown.
    pub options: Vec<&'static str>,
    pub suite: Suite,
    pub probe: ProbeFailure,
}

impl fmt::Display for MissingSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ProbeFailure::Permission(m) = &self.probe {
            return write!(
                f,
                "cannot program kernel IPsec: {m}; the agent needs CAP_NET_ADMIN; staying not ready, nothing installed"
            );
        }
        let what = if self.options.is_empty() {
            "a kernel option (unknown which)".to_string()
        } else {
            self.options.join(", ")
        };
        write!(
            f,
            "kernel lacks IPsec ESP support for {}: missing {what} (probe SA failed: {}); staying not ready, nothing installed",
            self.suite,
            self.probe.message()
        )
    }
}

fn option_state(config: &str, option: &str) -> Option<bool> {
    for line in config.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix(option).and_then(|r| r.strip_prefix('=')) {
            return Some(v == "y" || v == "m");
        }
        if line == format!("# {option} is not set") {
            return Some(false);
        }
    }
    None
}

/// Names the missing kernel options. With the kernel's build configuration, every needed option
/// that is not built in or as a module is listed; without it, the probe's errno decides.
pub fn diagnose_missing_support(
    probe: ProbeFailure,
    kernel_config: Option<&str>,
    suite: Suite,
    v6: bool,
) -> MissingSupport {
    let esp = if v6 {
        "CONFIG_INET6_ESP"
    } else {
        "CONFIG_INET_ESP"
    };
    let alg = match suite {
        Suite::AesGcm128 | Suite::AesGcm256 => "CONFIG_CRYPTO_GCM",
        Suite::Chacha20Poly1305 => "CONFIG_CRYPTO_CHACHA20POLY1305",
    };
    let needed = [esp, alg, "CONFIG_CRYPTO_SEQIV"];
    let mut options: Vec<&'static str> = Vec::new();
    if let Some(cfg) = kernel_config {
        options = needed
            .into_iter()
            .filter(|o| option_state(cfg, o) == Some(false))
            .collect();
    }
    if options.is_empty() {
        match &probe {
            ProbeFailure::NoEsp(_) => options.push(esp),
            ProbeFailure::NoAlgorithm(_) => options.push(alg),
            _ => {}
        }
    }
    MissingSupport {
        options,
        suite,
        probe,
    }
}

/// The running kernel's build configuration, from `/proc/config.gz` or
/// `/boot/config-$(uname -r)`, if either is readable.
pub fn read_kernel_config() -> Option<String> {
    if let Ok(bytes) = std::fs::read("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ESP_CONFIG: &str = "CONFIG_XFRM=y\nCONFIG_XFRM_USER=y\n# CONFIG_INET_ESP is not set\n# CONFIG_CRYPTO_GCM is not set\nCONFIG_CRYPTO_SEQIV=y\n";

    #[test]
    fn a_kernel_without_esp_is_named_in_one_line_from_its_config() {
        let m = diagnose_missing_support(
            ProbeFailure::from_errno(38, "Function not implemented".into()),
            Some(NO_ESP_CONFIG),
            Suite::AesGcm128,
            false,
        );
        assert_eq!(m.options, vec!["CONFIG_INET_ESP", "CONFIG_CRYPTO_GCM"]);
        let line = m.to_string();
        assert!(!line.contains('\n'));
        assert!(line.contains("CONFIG_INET_ESP"), "{line}");
        assert!(line.contains("not ready"), "{line}");
    }

    #[test]
    fn without_a_config_the_errno_names_the_option() {
        let m = diagnose_missing_support(
            ProbeFailure::from_errno(93, "Protocol not supported".into()),
            None,
            Suite::AesGcm128,
            false,
        );
        assert_eq!(m.options, vec!["CONFIG_INET_ESP"]);
        let m = diagnose_missing_support(
            ProbeFailure::from_errno(38, "x".into()),
            None,
            Suite::Chacha20Poly1305,
            true,
        );
        assert_eq!(m.options, vec!["CONFIG_CRYPTO_CHACHA20POLY1305"]);
    }

    #[test]
    fn modules_count_as_present() {
        let cfg = "CONFIG_INET_ESP=m\nCONFIG_CRYPTO_GCM=m\nCONFIG_CRYPTO_SEQIV=m\n";
        let m = diagnose_missing_support(
            ProbeFailure::from_errno(93, "x".into()),
            Some(cfg),
            Suite::AesGcm128,
            false,
        );
        assert_eq!(
            m.options,
            vec!["CONFIG_INET_ESP"],
            "falls back to the errno"
        );
    }
}
