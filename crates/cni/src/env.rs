//! The `CNI_*` environment of one invocation, validated per command. Errors are CNI error 4
//! and name the variable.

use crate::error::{CniError, ErrorCode};
use crate::ipam::Attachment;

/// The operation the runtime asks for (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// A validated invocation environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// Set for ADD, DEL and CHECK.
    pub attachment: Option<Attachment>,
    /// The pod's netns path: required for ADD and CHECK, optional for DEL.
    pub netns: Option<String>,
    /// `namespace/name` of the Kubernetes pod, from `CNI_ARGS` (`K8S_POD_NAMESPACE`,
    /// `K8S_POD_NAME`), for logs only.
    pub pod: Option<String>,
}

/// The `namespace/name` of the pod named in `CNI_ARGS`, if both keys are there.
pub fn pod_from_cni_args(args: &str) -> Option<String> {
    let get = |key: &str| {
        args.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == key && !v.is_empty()).then(|| v.to_string())
        })
    };
    Some(format!(
        "{}/{}",
        get("K8S_POD_NAMESPACE")?,
        get("K8S_POD_NAME")?
    ))
}

fn bad(var: &str, what: String) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, format!("{var}: {what}"))
}

/// Whether `id` is a valid container ID: an alphanumeric first character, then alphanumerics,
/// `_`, `.` or `-`.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `name` is a valid Linux interface name (1-15 bytes, no `/`, `:` or whitespace).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

impl Invocation {
    /// Reads and validates the environment through `var` (for example `|k| std::env::var(k).ok()`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => {
                return Err(bad(
                    "CNI_COMMAND",
                    format!("{other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
                ))
            }
            None => return Err(bad("CNI_COMMAND", "is not set".into())),
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        if !per_attachment {
            return Ok(Invocation {
                command,
                attachment: None,
                netns: None,
                pod: None,
            });
        }
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let container_id = nonempty("CNI_CONTAINERID").ok_or_else(|| {
            bad(
                "CNI_CONTAINERID",
                format!("is required for {}", command.as_str()),
            )
        })?;
        if !valid_container_id(&container_id) {
            return Err(bad(
                "CNI_CONTAINERID",
                format!("{container_id:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"),
            ));
        }
        let ifname = nonempty("CNI_IFNAME").ok_or_else(|| {
            bad(
                "CNI_IFNAME",
                format!("is required for {}", command.as_str()),
            )
        })?;
        if !valid_ifname(&ifname) {
            return Err(bad(
                "CNI_IFNAME",
                format!(
                    "{ifname:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"
                ),
            ));
        }
        let netns = nonempty("CNI_NETNS");
        if netns.is_none() && command != Command::Del {
            return Err(bad(
                "CNI_NETNS",
                format!("is required for {}", command.as_str()),
            ));
        }
        Ok(Invocation {
            command,
            attachment: Some(Attachment {
                container_id,
                ifname,
            }),
            netns,
            pod: var("CNI_ARGS").as_deref().and_then(pod_from_cni_args),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Invocation, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Invocation::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn a_complete_add_environment_is_accepted() {
        let inv = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/p"),
        ])
        .unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.attachment.unwrap().ifname, "eth0");
    }

    #[test]
    fn del_without_a_netns_is_accepted() {
        let inv = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(inv.netns, None);
    }

    #[test]
    fn each_missing_or_bad_variable_is_error_4_naming_it() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "CNI_COMMAND"),
            (vec![("CNI_COMMAND", "FROB")], "CNI_COMMAND"),
            (
                vec![
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_NETNS", "/x"),
                ],
                "CNI_CONTAINERID",
            ),
            (
                vec![
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "-bad"),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_NETNS", "/x"),
                ],
                "CNI_CONTAINERID",
            ),
            (
                vec![
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_NETNS", "/x"),
                ],
                "CNI_IFNAME",
            ),
            (
                vec![
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "a-very-long-interface"),
                    ("CNI_NETNS", "/x"),
                ],
                "CNI_IFNAME",
            ),
            (
                vec![
                    ("CNI_COMMAND", "CHECK"),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                ],
                "CNI_NETNS",
            ),
        ];
        for (pairs, var) in cases {
            let err = env(&pairs).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{pairs:?}");
            assert!(err.details.starts_with(var), "{pairs:?}: {}", err.details);
        }
    }

    #[test]
    fn the_kubernetes_pod_is_read_from_cni_args() {
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc";
        assert_eq!(pod_from_cni_args(args).as_deref(), Some("default/web-0"));
        assert_eq!(pod_from_cni_args("K8S_POD_NAME=web-0"), None);
    }

    #[test]
    fn version_status_and_gc_need_no_attachment_variables() {
        for cmd in ["VERSION", "STATUS", "GC"] {
            assert!(env(&[("CNI_COMMAND", cmd)]).unwrap().attachment.is_none());
        }
    }
}
