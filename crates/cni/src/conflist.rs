//! The network configuration list the agent writes into the runtime's CNI config folder once
//! the node is ready (`/etc/cni/net.d/05-cipherlane.conflist`). The runtime only starts pods on
//! a node once a conflist exists, so writing it last is the first gate; the plugin's own check
//! of the agent state is the second.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::atomic_file;
use crate::config::{DEFAULT_AGENT_STATE_FILE, DEFAULT_IPAM_DIR, DEFAULT_LOG_FILE};
use crate::version::LATEST;

/// File name of the conflist (the agent's and the chart's default); `05-` sorts it before most other networks.
pub const CONFLIST_FILE_NAME: &str = "05-cipherlane.conflist";

/// What the agent puts into the conflist.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflistSpec {
    /// Network name (IPAM state is kept per name).
    pub network_name: String,
    pub agent_state_file: PathBuf,
    pub ipam_dir: PathBuf,
    /// `None`: the plugin logs to stderr only.
    pub log_file: Option<PathBuf>,
    /// Further plugins chained after cipherlane (for example `portmap`), as JSON objects.
    pub chained_plugins: Vec<Value>,
}

impl Default for ConflistSpec {
    fn default() -> Self {
        ConflistSpec {
            network_name: "cipherlane".into(),
            agent_state_file: DEFAULT_AGENT_STATE_FILE.into(),
            ipam_dir: DEFAULT_IPAM_DIR.into(),
            log_file: Some(DEFAULT_LOG_FILE.into()),
            chained_plugins: Vec::new(),
        }
    }
}

impl ConflistSpec {
    /// The conflist JSON.
    pub fn render(&self) -> String {
        let mut plugin = Map::new();
        plugin.insert("type".into(), json!("cipherlane"));
        plugin.insert(
            "agentStateFile".into(),
            json!(self.agent_state_file.display().to_string()),
        );
        plugin.insert("ipamDir".into(), json!(self.ipam_dir.display().to_string()));
        plugin.insert(
            "logFile".into(),
            json!(self
                .log_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()),
        );
        let mut plugins = vec![Value::Object(plugin)];
        plugins.extend(self.chained_plugins.iter().cloned());
        let list = json!({
            "cniVersion": LATEST,
            "name": self.network_name,
            "plugins": plugins,
        });
        // A json! value always serializes.
        serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
    }
}

/// Writes the conflist atomically into `dir`; returns its path.
pub fn write_conflist(dir: &Path, spec: &ConflistSpec) -> io::Result<PathBuf> {
    let path = dir.join(CONFLIST_FILE_NAME);
    atomic_file::write(
        &path,
        spec.render().as_bytes(),
        0o644,
        atomic_file::Durability::PowerLoss,
    )?;
    Ok(path)
}

/// Removes the conflist (uninstall, or the agent stepping the node out of service).
pub fn remove_conflist(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(CONFLIST_FILE_NAME)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetConf;

    #[test]
    fn the_rendered_conflist_names_the_plugin_and_the_latest_version() {
        let v: Value = serde_json::from_str(&ConflistSpec::default().render()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["name"], "cipherlane");
        assert_eq!(v["plugins"][0]["type"], "cipherlane");
        assert_eq!(v["plugins"][0]["ipamDir"], DEFAULT_IPAM_DIR);
    }

    #[test]
    fn the_plugin_entry_parses_as_a_valid_plugin_config() {
        let spec = ConflistSpec {
            log_file: None,
            chained_plugins: vec![
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ],
            ..ConflistSpec::default()
        };
        let v: Value = serde_json::from_str(&spec.render()).unwrap();
        let mut plugin = v["plugins"][0].as_object().unwrap().clone();
        plugin.insert("cniVersion".into(), v["cniVersion"].clone());
        plugin.insert("name".into(), v["name"].clone());
        let conf = NetConf::from_object(&plugin).unwrap();
        assert_eq!(conf.log_file, None);
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn write_and_remove_are_idempotent_file_operations() {
        let dir = std::env::temp_dir().join(format!("cl-conflist-{}", std::process::id()));
        let path = write_conflist(&dir, &ConflistSpec::default()).unwrap();
        assert!(path.exists());
        remove_conflist(&dir).unwrap();
        remove_conflist(&dir).unwrap();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
