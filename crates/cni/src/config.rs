//! The plugin's network configuration (stdin), parsed key by key so that every error names the
//! key and the bad value.
//!
//! Keys this plugin reads (all optional except the first three):
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `cniVersion` | spec version of the request | required |
//! | `name` | network name; IPAM state is kept per name | required |
//! | `type` | plugin binary name | required |
//! | `agentStateFile` | state file written by cipherlane-agent | `/run/cipherlane/agent-state.json` |
//! | `ipamDir` | folder of address allocations | `/var/lib/cipherlane` |
//! | `logFile` | log file (empty string: stderr only) | `/var/log/cipherlane/cni.log` |
//! | `logLevel` | `error`, `info` or `debug` | `info` |
//! | `mtu` | pod MTU override (else the agent's) | none |
//! | `lockTimeoutMs` | how long to wait for the IPAM lock before error 11 | `10000` |
//! | `prevResult` | previous result (CHECK, DEL) | none |
//! | `cni.dev/valid-attachments` | attachments GC must keep | none |
//!
//! Other keys (`runtimeConfig`, `args`, `capabilities`, `dns`, ...) are accepted and ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::ipam::Attachment;
use crate::result::AddResult;
use crate::version::SpecVersion;

pub const DEFAULT_AGENT_STATE_FILE: &str = "/run/cipherlane/agent-state.json";
pub const DEFAULT_IPAM_DIR: &str = "/var/lib/cipherlane";
pub const DEFAULT_LOG_FILE: &str = "/var/log/cipherlane/cni.log";
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 10_000;

/// How much the plugin logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Info,
    Debug,
}

/// A parsed request configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: SpecVersion,
    pub name: String,
    pub plugin_type: String,
    pub agent_state_file: PathBuf,
    pub ipam_dir: PathBuf,
    /// `None` when logging to stderr only.
    pub log_file: Option<PathBuf>,
    pub log_level: LogLevel,
    pub mtu: Option<u32>,
    pub lock_timeout_ms: u64,
    pub prev_result: Option<AddResult>,
    /// For GC: the attachments to keep. `None` when the runtime sent no list (cnitool does that
    /// after DELeting every cached attachment), which GC treats as "keep nothing".
    pub valid_attachments: Option<BTreeSet<Attachment>>,
}

/// Parses stdin bytes into a JSON object: not JSON at all is CNI error 6.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            ErrorCode::DecodeFailure,
            format!("network configuration on stdin is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(CniError::new(
            ErrorCode::DecodeFailure,
            format!(
                "network configuration on stdin must be a JSON object, got {}",
                kind(&other)
            ),
        )),
    }
}

/// The `cniVersion` of a request, without validating the rest (VERSION needs only this).
pub fn requested_version(obj: &Map<String, Value>) -> Option<&str> {
    obj.get("cniVersion").and_then(Value::as_str)
}

impl NetConf {
    /// Parses and validates a request configuration.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let obj = parse_object(bytes)?;
        Self::from_object(&obj)
    }

    pub fn from_object(obj: &Map<String, Value>) -> Result<Self, CniError> {
        let version = required_string(obj, "cniVersion")?;
        let cni_version = SpecVersion::parse(&version)?;
        let name = required_string(obj, "name")?;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(invalid(
                "name",
                &format!("{name:?} must be a non-empty network name without '/'"),
            ));
        }
        let plugin_type = required_string(obj, "type")?;
        let agent_state_file = absolute_path(obj, "agentStateFile")?
            .unwrap_or_else(|| DEFAULT_AGENT_STATE_FILE.into());
        let ipam_dir = absolute_path(obj, "ipamDir")?.unwrap_or_else(|| DEFAULT_IPAM_DIR.into());
        let log_file = match optional_string(obj, "logFile")? {
            None => Some(PathBuf::from(DEFAULT_LOG_FILE)),
            Some(s) if s.is_empty() => None,
            Some(_) => absolute_path(obj, "logFile")?,
        };
        let log_level = match optional_string(obj, "logLevel")?.as_deref() {
            None | Some("info") => LogLevel::Info,
            Some("error") => LogLevel::Error,
            Some("debug") => LogLevel::Debug,
            Some(other) => {
                return Err(invalid(
                    "logLevel",
                    &format!("{other:?} is not one of error, info, debug"),
                ))
            }
        };
        let mtu = optional_u64(obj, "mtu")?
            .map(|m| {
                if (576..=65_535).contains(&m) {
                    Ok(m as u32)
                } else {
                    Err(invalid("mtu", &format!("{m} is outside 576..=65535")))
                }
            })
            .transpose()?;
        let lock_timeout_ms = match optional_u64(obj, "lockTimeoutMs")? {
            None => DEFAULT_LOCK_TIMEOUT_MS,
            Some(ms) if (1..=600_000).contains(&ms) => ms,
            Some(ms) => {
                return Err(invalid(
                    "lockTimeoutMs",
                    &format!("{ms} is outside 1..=600000"),
                ))
            }
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(AddResult::from_prev_result(v)?),
        };
        let valid_attachments = match obj
            .get("cni.dev/valid-attachments")
            .map(|v| ("cni.dev/valid-attachments", v))
            .or_else(|| {
                obj.get("cni.dev/attachments")
                    .map(|v| ("cni.dev/attachments", v))
            }) {
            None | Some((_, Value::Null)) => None,
            Some((key, v)) => Some(parse_attachments(key, v)?),
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            agent_state_file,
            ipam_dir,
            log_file,
            log_level,
            mtu,
            lock_timeout_ms,
            prev_result,
            valid_attachments,
        })
    }
}

fn parse_attachments(key: &str, value: &Value) -> Result<BTreeSet<Attachment>, CniError> {
    let items = value
        .as_array()
        .ok_or_else(|| invalid(key, "must be an array of {containerID, ifname}"))?;
    let mut set = BTreeSet::new();
    for (n, item) in items.iter().enumerate() {
        let o = item
            .as_object()
            .ok_or_else(|| invalid(&format!("{key}[{n}]"), "must be an object"))?;
        let field = |f: &str| {
            o.get(f)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| invalid(&format!("{key}[{n}].{f}"), "must be a string"))
        };
        set.insert(Attachment {
            container_id: field("containerID")?,
            ifname: field("ifname")?,
        });
    }
    Ok(set)
}

fn invalid(key: &str, what: &str) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, format!("key \"{key}\": {what}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(
            key,
            &format!("must be a string, got {}", kind(other)),
        )),
    }
}

fn required_string(obj: &Map<String, Value>, key: &str) -> Result<String, CniError> {
    optional_string(obj, key)?.ok_or_else(|| invalid(key, "is required"))
}

fn optional_u64(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(key, &format!("must be a non-negative integer, got {v}"))),
    }
}

fn absolute_path(obj: &Map<String, Value>, key: &str) -> Result<Option<PathBuf>, CniError> {
    match optional_string(obj, key)? {
        None => Ok(None),
        Some(s) if s.starts_with('/') => Ok(Some(PathBuf::from(s))),
        Some(s) => Err(invalid(key, &format!("{s:?} must be an absolute path"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NetConf, CniError> {
        NetConf::parse(json.as_bytes())
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let c = parse(r#"{"cniVersion":"1.1.0","name":"cipherlane","type":"cipherlane"}"#).unwrap();
        assert_eq!(c.cni_version, SpecVersion::V1_1_0);
        assert_eq!(c.agent_state_file, PathBuf::from(DEFAULT_AGENT_STATE_FILE));
        assert_eq!(c.ipam_dir, PathBuf::from(DEFAULT_IPAM_DIR));
        assert_eq!(c.log_file, Some(PathBuf::from(DEFAULT_LOG_FILE)));
        assert_eq!(c.lock_timeout_ms, DEFAULT_LOCK_TIMEOUT_MS);
        assert_eq!(c.valid_attachments, None);
    }

    #[test]
    fn stdin_that_is_not_json_is_a_decode_failure() {
        assert_eq!(
            parse("{not json").unwrap_err().code,
            ErrorCode::DecodeFailure
        );
        assert_eq!(parse("[1,2]").unwrap_err().code, ErrorCode::DecodeFailure);
    }

    #[test]
    fn each_invalid_key_is_error_7_naming_the_key() {
        let cases = [
            (r#"{"cniVersion":"1.1.0","type":"cipherlane"}"#, "\"name\""),
            (r#"{"cniVersion":"1.1.0","name":"n"}"#, "\"type\""),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","ipamDir":"rel/dir"}"#,
                "\"ipamDir\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","agentStateFile":5}"#,
                "\"agentStateFile\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","mtu":100}"#,
                "\"mtu\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","mtu":"x"}"#,
                "\"mtu\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","logLevel":"loud"}"#,
                "\"logLevel\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","lockTimeoutMs":0}"#,
                "\"lockTimeoutMs\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"a/b","type":"t"}"#,
                "\"name\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"x"}]}"#,
                "cni.dev/valid-attachments[0].ifname",
            ),
        ];
        for (json, key) in cases {
            let err = parse(json).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{json}");
            assert!(err.details.contains(key), "{json}: {}", err.details);
        }
    }

    #[test]
    fn an_unsupported_cni_version_is_error_1() {
        let err = parse(r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::IncompatibleVersion);
    }

    #[test]
    fn valid_attachments_are_read_from_either_spelling() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let json = format!(
                r#"{{"cniVersion":"1.1.0","name":"n","type":"t","{key}":[{{"containerID":"c1","ifname":"eth0"}}]}}"#
            );
            let c = parse(&json).unwrap();
            let set = c.valid_attachments.unwrap();
            assert!(set.contains(&Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }));
        }
    }

    #[test]
    fn an_empty_log_file_means_stderr_only() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"t","logFile":""}"#).unwrap();
        assert_eq!(c.log_file, None);
    }
}
