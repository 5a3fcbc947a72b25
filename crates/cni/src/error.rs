//! CNI error results: the spec's well-known codes, Cipherlane's own codes (100+), and the JSON
//! object a plugin prints on stdout when an operation fails.
//!
//! Owns only the vocabulary; printing and exit codes are the binary's job.

/// An error code from the CNI spec (0-99) or Cipherlane's plugin range (100+).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the requested `cniVersion` is not one this plugin speaks.
    IncompatibleVersion,
    /// 2: a field of the network configuration is not supported.
    UnsupportedField,
    /// 3: the container (its network namespace) is unknown or gone.
    ContainerUnknown,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: reading the configuration or a state file failed.
    IoFailure,
    /// 6: stdin (or a state file) is not the JSON it must be.
    DecodeFailure,
    /// 7: the network configuration is well-formed JSON but a value is invalid.
    InvalidConfig,
    /// 11: a transient condition (a held lock); the runtime should retry later.
    TryAgainLater,
    /// 50: the plugin cannot serve ADD now (the node's agent is not ready to encrypt).
    NotAvailable,
    /// 51: not available, and existing pods may have limited connectivity.
    LimitedConnectivity,
    /// 100: the kernel refused a network change (netlink or sysctl).
    Kernel,
    /// 101: no free address is left in the node's pod CIDR.
    AddressesExhausted,
    /// 102: the interface the runtime asked for already exists in the pod.
    InterfaceExists,
    /// 103: CHECK found the pod's networking different from what ADD set up.
    CheckMismatch,
}

impl ErrorCode {
    /// The numeric code printed in the error JSON.
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::ContainerUnknown => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodeFailure => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Kernel => 100,
            ErrorCode::AddressesExhausted => 101,
            ErrorCode::InterfaceExists => 102,
            ErrorCode::CheckMismatch => 103,
        }
    }

    /// The short `msg` the spec suggests for the code.
    pub fn summary(self) -> &'static str {
        match self {
            ErrorCode::IncompatibleVersion => "Incompatible CNI version",
            ErrorCode::UnsupportedField => "Unsupported field in network configuration",
            ErrorCode::ContainerUnknown => "Container unknown or does not exist",
            ErrorCode::InvalidEnvironment => "Invalid necessary environment variables",
            ErrorCode::IoFailure => "I/O failure",
            ErrorCode::DecodeFailure => "Failed to decode content",
            ErrorCode::InvalidConfig => "Invalid network config",
            ErrorCode::TryAgainLater => "Try again later",
            ErrorCode::NotAvailable => "Plugin not available",
            ErrorCode::LimitedConnectivity => "Plugin not available, limited connectivity",
            ErrorCode::Kernel => "Kernel refused a network change",
            ErrorCode::AddressesExhausted => "No free address in the pod CIDR",
            ErrorCode::InterfaceExists => "Interface already exists",
            ErrorCode::CheckMismatch => "Pod networking differs from the ADD result",
        }
    }
}

/// A failed CNI operation: a code plus a message naming the bad key or value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} (code {}): {details}", code.summary(), code.as_u32())]
pub struct CniError {
    pub code: ErrorCode,
    /// What failed, with which input, and what to do.
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, details: impl Into<String>) -> Self {
        CniError {
            code,
            details: details.into(),
        }
    }

    /// The error JSON object for stdout. `msg` carries the summary and the details in one line
    /// (`Plugin not available: cipherlane-agent on node "a" is not ready ...`) and `details` is
    /// left out: libcni shows `msg; details`, so repeating the details would print them twice,
    /// and some runtimes show only `msg`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code.as_u32(),
            "msg": format!("{}: {}", self.code.summary(), self.details),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_carries_the_spec_code_and_the_details() {
        let err = CniError::new(ErrorCode::NotAvailable, "agent not ready: no SAs yet");
        let json = err.to_json("1.1.0");
        assert_eq!(json["code"], 50);
        assert_eq!(json["cniVersion"], "1.1.0");
        assert!(
            json.get("details").is_none(),
            "details would be printed twice by libcni"
        );
        assert!(json["msg"]
            .as_str()
            .is_some_and(|m| m.contains("agent not ready")));
    }

    #[test]
    fn well_known_codes_match_the_spec_table() {
        let codes: Vec<u32> = [
            ErrorCode::IncompatibleVersion,
            ErrorCode::UnsupportedField,
            ErrorCode::ContainerUnknown,
            ErrorCode::InvalidEnvironment,
            ErrorCode::IoFailure,
            ErrorCode::DecodeFailure,
            ErrorCode::InvalidConfig,
            ErrorCode::TryAgainLater,
            ErrorCode::NotAvailable,
            ErrorCode::LimitedConnectivity,
        ]
        .iter()
        .map(|c| c.as_u32())
        .collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7, 11, 50, 51]);
    }
}
