//! The CNI spec versions this plugin speaks, and which result shape each one gets.

use crate::error::{CniError, ErrorCode};

/// Versions listed under VERSION, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The newest version; what the agent writes into the conflist.
pub const LATEST: &str = "1.1.0";

/// A supported spec version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecVersion {
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl SpecVersion {
    /// Parses a `cniVersion` value; unknown versions are CNI error 1 naming the value.
    pub fn parse(value: &str) -> Result<Self, CniError> {
        match value {
            "0.4.0" => Ok(SpecVersion::V0_4_0),
            "1.0.0" => Ok(SpecVersion::V1_0_0),
            "1.1.0" => Ok(SpecVersion::V1_1_0),
            other => Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "key \"cniVersion\": {other:?} is not supported; supported versions are {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }
}

/// The VERSION result: the caller's version echoed, plus every version supported.
pub fn version_result(cni_version: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_version_parses_and_round_trips() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(SpecVersion::parse(v).map(|s| s.as_str()), Ok(v));
        }
    }

    #[test]
    fn an_unknown_version_is_error_1_naming_the_value() {
        let err = SpecVersion::parse("0.3.1").unwrap_err();
        assert_eq!(err.code.as_u32(), 1);
        assert!(err.details.contains("\"0.3.1\""));
        assert!(err.details.contains("cniVersion"));
    }

    #[test]
    fn version_result_lists_all_three_versions() {
        let v = version_result("1.1.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
        );
    }
}
