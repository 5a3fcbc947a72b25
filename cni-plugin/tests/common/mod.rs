//! A node on this host for the plugin's integration tests: a "node" network namespace with an
//! underlay veth to a "wire" namespace (198.18.0.0/15 addresses, a default route, as a real
//! node has), pod namespaces, a conflist folder, an agent state file and an IPAM folder, and the
//! real `cnitool` (libcni) run inside the node namespace exactly as a runtime would run the
//! plugin. Everything is removed on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_cipherlane");

static SEQ: AtomicU32 = AtomicU32::new(0);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The real cnitool: `$CNITOOL`, or the one `tests/tools/build.sh` builds (cached).
pub fn cnitool() -> PathBuf {
    if let Ok(p) = std::env::var("CNITOOL") {
        return PathBuf::from(p);
    }
    let out = Command::new(repo_root().join("tests/tools/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect(
            "integration prerequisite missing: cannot run tests/tools/build.sh to find cnitool",
        );
    assert!(
        out.status.success(),
        "integration prerequisite missing: tests/tools/build.sh failed, so there is no cnitool"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim().to_string();
    let tool = PathBuf::from(dir).join("cnitool");
    assert!(
        tool.exists(),
        "integration prerequisite missing: {} does not exist",
        tool.display()
    );
    tool
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

pub fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for a condition (a file appearing, a process reaching a point), never a fixed sleep.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub struct Node {
    pub tag: String,
    pub node_ns: String,
    wire_ns: String,
    pub dir: PathBuf,
    pub network: String,
    pods: std::sync::Mutex<Vec<String>>,
    pub cnitool: PathBuf,
    pub cidr: String,
}

impl Node {
    /// A ready node with pod CIDR `cidr`, conflist `cniVersion` `version`.
    pub fn new(test: &str, cidr: &str, version: &str) -> Node {
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_default();
        assert_eq!(
            uid, "0",
            "integration prerequisite missing: these tests need root (network namespaces)"
        );
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("clit{}x{seq}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cipherlane-cni-it/{tag}-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        let node = Node {
            node_ns: format!("{tag}-node"),
            wire_ns: format!("{tag}-wire"),
            network: format!("{tag}-{test}"),
            tag,
            dir,
            pods: Default::default(),
            cnitool: cnitool(),
            cidr: cidr.to_string(),
        };
        let n = node.node_ns.as_str();
        let w = node.wire_ns.as_str();
        must(&["ip", "netns", "add", n]);
        must(&["ip", "netns", "add", w]);
        must(&[
            "ip", "-n", n, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", w,
        ]);
        must(&["ip", "-n", n, "addr", "add", "198.18.0.1/24", "dev", "up0"]);
        must(&["ip", "-n", w, "addr", "add", "198.18.0.2/24", "dev", "up1"]);
        for (ns, dev) in [(n, "up0"), (w, "up1"), (n, "lo"), (w, "lo")] {
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        must(&[
            "ip",
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            "198.18.0.2",
        ]);
        node.write_conflist(version, "");
        node.set_agent_ready(true, "");
        node
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    pub fn lease_dir(&self) -> PathBuf {
        self.ipam_dir().join(&self.network)
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("cni.log")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("agent-state.json")
    }

    /// The plugin's config (as the runtime derives it from the conflist), plus `extra` keys.
    pub fn plugin_conf(&self, version: &str, extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"{}","type":"cipherlane","agentStateFile":"{}","ipamDir":"{}","logFile":"{}"{extra}}}"#,
            self.network,
            self.state_file().display(),
            self.ipam_dir().display(),
            self.log_file().display()
        )
    }

    /// Writes the conflist through the library API the agent uses.
    pub fn write_conflist(&self, version: &str, _extra: &str) {
        let spec = cipherlane_cni::ConflistSpec {
            network_name: self.network.clone(),
            agent_state_file: self.state_file(),
            ipam_dir: self.ipam_dir(),
            log_file: Some(self.log_file()),
            chained_plugins: vec![],
        };
        let mut v: Value = serde_json::from_str(&spec.render()).unwrap();
        v["cniVersion"] = Value::String(version.into());
        std::fs::write(
            self.dir
                .join("net.d")
                .join(cipherlane_cni::conflist::CONFLIST_FILE_NAME),
            v.to_string(),
        )
        .unwrap();
    }

    /// Writes the agent state through the library API the agent uses.
    pub fn set_agent_ready(&self, ready: bool, reason: &str) {
        let state = if ready {
            cipherlane_cni::AgentState::ready("node-a", 1420, vec![self.cidr.parse().unwrap()])
        } else {
            cipherlane_cni::AgentState::not_ready("node-a", reason)
        };
        cipherlane_cni::write_agent_state(&self.state_file(), &state).unwrap();
    }

    /// Creates a pod namespace; returns its name (path: /run/netns/NAME).
    pub fn pod(&self, name: &str) -> String {
        let ns = format!("{}-{name}", self.tag);
        must(&["ip", "netns", "add", &ns]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.pods.lock().unwrap().push(ns.clone());
        ns
    }

    pub fn netns_path(pod: &str) -> String {
        format!("/run/netns/{pod}")
    }

    /// Runs the real cnitool in the node namespace.
    pub fn cnitool(&self, cmd: &str, pod: &str, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node_ns])
            .arg(&self.cnitool)
            .args([cmd, &self.network, &Node::netns_path(pod)])
            .env("NETCONFPATH", self.dir.join("net.d"))
            .env("CNI_PATH", Path::new(PLUGIN).parent().unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    pub fn cnitool_spawn(&self, cmd: &str, pod: &str, env: &[(&str, &str)]) -> std::process::Child {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node_ns])
            .arg(&self.cnitool)
            .args([cmd, &self.network, &Node::netns_path(pod)])
            .env("NETCONFPATH", self.dir.join("net.d"))
            .env("CNI_PATH", Path::new(PLUGIN).parent().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().unwrap()
    }

    /// Runs the plugin directly in the node namespace with `env` and `stdin`, as libcni does;
    /// returns (exit success, stdout JSON or Null).
    pub fn plugin(&self, env: &[(&str, &str)], stdin: &str) -> (bool, Value) {
        use std::io::Write;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node_ns, PLUGIN])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {text}"))
        };
        (out.status.success(), json)
    }

    /// The leases on disk: (address, container id).
    pub fn leases(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.lease_dir()) else {
            return vec![];
        };
        let mut v: Vec<_> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let file = e.file_name().to_string_lossy().into_owned();
                let name = file.split_once('~')?.0.to_string();
                name.parse::<std::net::Ipv4Addr>().ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                Some((name, text.lines().next().unwrap_or("").to_string()))
            })
            .collect();
        v.sort();
        v
    }

    /// Host-side veths of the plugin in the node namespace.
    pub fn host_veths(&self) -> Vec<String> {
        let out = must(&[
            "ip",
            "-n",
            &self.node_ns,
            "-o",
            "link",
            "show",
            "type",
            "veth",
        ]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("cl"))
            .collect()
    }

    pub fn in_pod(&self, pod: &str, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", pod];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn remove_pod_ns(&self, pod: &str) {
        must(&["ip", "netns", "del", pod]);
        self.pods.lock().unwrap().retain(|p| p != pod);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for p in self.pods.lock().unwrap().drain(..) {
            let _ = sh(&["ip", "netns", "del", &p]);
        }
        let _ = sh(&["ip", "netns", "del", &self.node_ns]);
        let _ = sh(&["ip", "netns", "del", &self.wire_ns]);
        // libcni's result cache for this network (cnitool keeps it in /var/lib/cni).
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.network) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The JSON result cnitool printed.
pub fn result_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "cnitool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The pod address in a result.
pub fn pod_ip(result: &Value) -> String {
    let addr = result["ips"][0]["address"].as_str().unwrap();
    addr.split('/').next().unwrap().to_string()
}
