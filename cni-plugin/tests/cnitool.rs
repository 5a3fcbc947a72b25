//! The plugin driven by the real cnitool (libcni, as containerd uses it) and, where the CNI error
//! code matters, executed directly with the runtime's environment and stdin (cnitool prints only
//! an error's message). Each test builds its own node namespace; see `common`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{must, pod_ip, result_of, wait_for, Node};
use serde_json::Value;

const IGNORE: &str = "integration: needs root and the lab (tests/run-tier.sh integration)";

fn env_add<'a>(container: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", container),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn code(v: &Value) -> u64 {
    v["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("not a CNI error: {v}"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn a_pod_goes_through_add_check_status_and_del_with_cnitool() {
    let _ = IGNORE;
    let node = Node::new("lifecycle", "10.244.1.0/24", "1.1.0");
    let pod = node.pod("p1");

    let result = result_of(&node.cnitool("add", &pod, &[]));
    let ip = pod_ip(&result);
    assert!(ip.starts_with("10.244.1."), "{result}");
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["mtu"], 1420);

    // The pod side: /32 address, MTU from the agent, routes via the link-local gateway.
    let addr = String::from_utf8_lossy(
        &node
            .in_pod(&pod, &["ip", "-o", "addr", "show", "eth0"])
            .stdout,
    )
    .into_owned();
    assert!(addr.contains(&format!("{ip}/32")), "{addr}");
    let link = String::from_utf8_lossy(&node.in_pod(&pod, &["ip", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(link.contains("mtu 1420"), "{link}");
    let routes = String::from_utf8_lossy(&node.in_pod(&pod, &["ip", "route"]).stdout).into_owned();
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(routes.contains("169.254.1.1 dev eth0"), "{routes}");
    // The host side: /32 route and proxy ARP on the host veth.
    let host_veth = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let host_routes = must(&["ip", "-n", &node.node_ns, "route"]);
    assert!(
        host_routes.contains(&format!("{ip} dev {host_veth}")),
        "{host_routes}"
    );
    let proxy_arp = must(&[
        "ip",
        "netns",
        "exec",
        &node.node_ns,
        "cat",
        &format!("/proc/sys/net/ipv4/conf/{host_veth}/proxy_arp"),
    ]);
    assert_eq!(proxy_arp.trim(), "1");
    // Traffic: the pod reaches the node's underlay address through the point-to-point link.
    let ping = node.in_pod(&pod, &["ping", "-c", "1", "-W", "2", "198.18.0.1"]);
    assert!(
        ping.status.success(),
        "pod cannot reach the node: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // A second pod on the same node: pod to pod through the node (host veth forwarding).
    let pod2 = node.pod("p2");
    let ip2 = pod_ip(&result_of(&node.cnitool("add", &pod2, &[])));
    assert_ne!(ip, ip2);
    let ping = node.in_pod(&pod, &["ping", "-c", "1", "-W", "2", &ip2]);
    assert!(
        ping.status.success(),
        "pod cannot reach a pod on its node: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert!(node.cnitool("del", &pod2, &[]).status.success());

    let check = node.cnitool("check", &pod, &[]);
    assert!(check.status.success(), "CHECK failed: {}", stderr(&check));
    let status = node.cnitool("status", &pod, &[]);
    assert!(
        status.status.success(),
        "STATUS failed: {}",
        stderr(&status)
    );
    assert_eq!(node.leases().len(), 1);

    let del = node.cnitool("del", &pod, &[]);
    assert!(del.status.success(), "DEL failed: {}", stderr(&del));
    assert!(node.leases().is_empty());
    assert!(node.host_veths().is_empty());
    let gone = node.in_pod(&pod, &["ip", "link", "show", "eth0"]);
    assert!(!gone.status.success(), "eth0 still exists after DEL");
    let again = node.cnitool("del", &pod, &[]);
    assert!(
        again.status.success(),
        "a repeated DEL failed: {}",
        stderr(&again)
    );

    let log = std::fs::read_to_string(node.log_file()).unwrap();
    assert!(
        log.contains("ADD") && log.contains("DEL") && log.contains(&ip),
        "{log}"
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn results_are_shaped_for_each_supported_cni_version() {
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let node = Node::new("versions", "10.244.2.0/24", version);
        let pod = node.pod("p");
        let result = result_of(&node.cnitool("add", &pod, &[]));
        assert_eq!(result["cniVersion"], version);
        if version == "0.4.0" {
            assert_eq!(result["ips"][0]["version"], "4", "{result}");
        } else {
            assert!(result["ips"][0].get("version").is_none(), "{result}");
        }
        let check = node.cnitool("check", &pod, &[]);
        assert!(
            check.status.success(),
            "CHECK at {version} failed: {}",
            stderr(&check)
        );
        assert!(node.cnitool("del", &pod, &[]).status.success());
        assert!(node.leases().is_empty());
    }
    let node = Node::new("versions", "10.244.2.0/24", "1.1.0");
    let (ok, v) = node.plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert!(ok);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn every_error_path_returns_its_cni_code_and_names_the_bad_input() {
    let node = Node::new("errors", "10.244.3.0/30", "1.1.0");
    let conf = node.plugin_conf("1.1.0", "");
    let pod = node.pod("p");
    let netns = Node::netns_path(&pod);

    // 4: environment.
    let (ok, v) = node.plugin(&[], &conf);
    assert!(!ok);
    assert_eq!(code(&v), 4);
    assert!(v["msg"].as_str().unwrap().contains("CNI_COMMAND"));
    let (_, v) = node.plugin(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &netns),
        ],
        &conf,
    );
    assert_eq!(code(&v), 4);
    assert!(v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
    let (_, v) = node.plugin(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "this-name-is-too-long"),
            ("CNI_NETNS", &netns),
        ],
        &conf,
    );
    assert_eq!(code(&v), 4);
    assert!(v["msg"].as_str().unwrap().contains("CNI_IFNAME"));
    // 6: stdin not JSON.
    let (_, v) = node.plugin(&env_add("c", &netns), "{nope");
    assert_eq!(code(&v), 6);
    // 1: unsupported version, echoed.
    let (_, v) = node.plugin(
        &env_add("c", &netns),
        &conf.replace("\"1.1.0\"", "\"0.3.1\""),
    );
    assert_eq!(code(&v), 1);
    assert!(v["msg"].as_str().unwrap().contains("0.3.1"));
    // 7: a bad key, named.
    let (_, v) = node.plugin(
        &env_add("c", &netns),
        &node.plugin_conf("1.1.0", r#","mtu":"big""#),
    );
    assert_eq!(code(&v), 7);
    assert!(v["msg"].as_str().unwrap().contains("\"mtu\""));
    // 3: the pod's netns does not exist.
    let (_, v) = node.plugin(&env_add("c", "/run/netns/does-not-exist"), &conf);
    assert_eq!(code(&v), 3);
    assert!(v["msg"]
        .as_str()
        .unwrap()
        .contains("/run/netns/does-not-exist"));
    // 50: the agent is not ready (and STATUS says so too).
    node.set_agent_ready(false, "waiting for the fail-closed policy");
    let (_, v) = node.plugin(&env_add("c", &netns), &conf);
    assert_eq!(code(&v), 50);
    assert!(v["msg"]
        .as_str()
        .unwrap()
        .contains("waiting for the fail-closed policy"));
    let (_, v) = node.plugin(&[("CNI_COMMAND", "STATUS")], &conf);
    assert_eq!(code(&v), 50);
    std::fs::remove_file(node.state_file()).unwrap();
    let (_, v) = node.plugin(&env_add("c", &netns), &conf);
    assert_eq!(code(&v), 50);
    assert!(v["msg"].as_str().unwrap().contains("does not exist"));
    node.set_agent_ready(true, "");

    // 102: the interface already exists in the pod; the failed ADD leaves nothing behind.
    let (ok, first) = node.plugin(&env_add("c1", &netns), &conf);
    assert!(ok, "{first}");
    let (ok, v) = node.plugin(&env_add("c2", &netns), &conf);
    assert!(!ok);
    assert_eq!(code(&v), 102);
    assert!(v["msg"].as_str().unwrap().contains("eth0"));
    assert_eq!(node.leases().len(), 1, "the refused ADD kept a lease");
    assert_eq!(node.host_veths().len(), 1, "the refused ADD left a veth");

    // 101: the /30 has two usable addresses; the third pod finds none.
    let pod2 = node.pod("p2");
    let pod3 = node.pod("p3");
    let (ok, v) = node.plugin(&env_add("c3", &Node::netns_path(&pod2)), &conf);
    assert!(ok, "{v}");
    let (_, v) = node.plugin(&env_add("c4", &Node::netns_path(&pod3)), &conf);
    assert_eq!(code(&v), 101);
    assert!(v["msg"].as_str().unwrap().contains("10.244.3.0/30"));
    let (_, v) = node.plugin(&[("CNI_COMMAND", "STATUS")], &conf);
    assert_eq!(code(&v), 50, "STATUS must report the exhausted CIDR");

    // 11: the IPAM lock is held by someone else past lockTimeoutMs.
    let lock = std::fs::File::open(node.lease_dir().join("lock")).unwrap();
    lock.lock().unwrap();
    let (_, v) = node.plugin(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c3"),
            ("CNI_IFNAME", "eth0"),
        ],
        &node.plugin_conf("1.1.0", r#","lockTimeoutMs":200"#),
    );
    assert_eq!(code(&v), 11);
    drop(lock);

    // 7: CHECK without prevResult; 103: CHECK of a pod whose address was removed.
    let check_env = [
        ("CNI_COMMAND", "CHECK"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", netns.as_str()),
    ];
    let (_, v) = node.plugin(&check_env, &conf);
    assert_eq!(code(&v), 7);
    assert!(v["msg"].as_str().unwrap().contains("prevResult"));
    let mut with_prev: Value = serde_json::from_str(&conf).unwrap();
    with_prev["prevResult"] = first.clone();
    let (ok, v) = node.plugin(&check_env, &with_prev.to_string());
    assert!(ok, "CHECK of a healthy pod failed: {v}");
    let ip = pod_ip(&first);
    must(&[
        "ip",
        "netns",
        "exec",
        &pod,
        "ip",
        "addr",
        "del",
        &format!("{ip}/32"),
        "dev",
        "eth0",
    ]);
    let (_, v) = node.plugin(&check_env, &with_prev.to_string());
    assert_eq!(code(&v), 103);
    assert!(v["msg"].as_str().unwrap().contains(&ip), "{v}");

    // A failure after the veth exists rolls back the veth and the lease.
    for c in ["c1", "c3"] {
        let (ok, v) = node.plugin(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", c),
                ("CNI_IFNAME", "eth0"),
            ],
            &conf,
        );
        assert!(ok, "{v}");
    }
    assert!(node.leases().is_empty());
    for point in ["after-veth", "after-routes"] {
        let mut env = env_add("c5", &netns);
        env.push(("CIPHERLANE_CNI_TEST_FAIL_AT", point));
        let (ok, v) = node.plugin(&env, &conf);
        assert!(!ok);
        assert_eq!(code(&v), 100);
        assert!(
            node.leases().is_empty(),
            "failed ADD at {point} kept a lease"
        );
        assert!(
            node.host_veths().is_empty(),
            "failed ADD at {point} left a host veth"
        );
        let eth0 = node.in_pod(&pod, &["ip", "link", "show", "eth0"]);
        assert!(
            !eth0.status.success(),
            "failed ADD at {point} left eth0 in the pod"
        );
    }

    // Through cnitool, the message reaches the runtime's user.
    node.set_agent_ready(false, "no SAs yet");
    let out = node.cnitool("add", &pod, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no SAs yet"), "{}", stderr(&out));
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn fifty_concurrent_adds_never_share_an_address() {
    let node = Node::new("concurrent", "10.244.4.0/24", "1.1.0");
    let pods: Vec<String> = (0..50).map(|i| node.pod(&format!("c{i}"))).collect();
    let children: Vec<_> = pods
        .iter()
        .map(|p| node.cnitool_spawn("add", p, &[]))
        .collect();
    let mut ips = std::collections::BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let ip = pod_ip(&result_of(&out));
        assert!(ips.insert(ip.clone()), "address {ip} handed out twice");
    }
    assert_eq!(ips.len(), 50);
    assert_eq!(node.leases().len(), 50);
    assert_eq!(node.host_veths().len(), 50);
    let children: Vec<_> = pods
        .iter()
        .map(|p| node.cnitool_spawn("del", p, &[]))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(node.leases().is_empty());
    assert!(node.host_veths().is_empty());
}

/// Starts an ADD through cnitool that stops at `point`, and kills the plugin there.
fn kill_add_at(node: &Node, pod: &str, point: &str) {
    let marker = node.dir.join(format!("hang-{pod}"));
    let marker_s = marker.display().to_string();
    let child = node.cnitool_spawn(
        "add",
        pod,
        &[
            ("CIPHERLANE_CNI_TEST_HANG_AT", point),
            ("CIPHERLANE_CNI_TEST_HANG_MARKER", &marker_s),
        ],
    );
    wait_for(
        &format!("the plugin to reach {point}"),
        Duration::from_secs(30),
        || marker.exists(),
    );
    let pid = std::fs::read_to_string(&marker).unwrap();
    must(&["kill", "-9", pid.trim()]);
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "cnitool reported success for a killed ADD"
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn a_plugin_killed_mid_add_leaves_state_that_del_cleans_up() {
    let node = Node::new("killdel", "10.244.5.0/24", "1.1.0");
    for point in ["after-ipam", "after-veth"] {
        let pod = node.pod(point);
        kill_add_at(&node, &pod, point);
        assert_eq!(
            node.leases().len(),
            1,
            "killed at {point}: the lease should be on disk"
        );
        if point == "after-veth" {
            assert_eq!(node.host_veths().len(), 1);
        }
        let del = node.cnitool("del", &pod, &[]);
        assert!(del.status.success(), "{}", stderr(&del));
        assert!(
            node.leases().is_empty(),
            "DEL left the lease of an ADD killed at {point}"
        );
        assert!(
            node.host_veths().is_empty(),
            "DEL left the veth of an ADD killed at {point}"
        );
        // The pod can be added again afterwards.
        let result = result_of(&node.cnitool("add", &pod, &[]));
        assert!(pod_ip(&result).starts_with("10.244.5."));
        assert!(node.cnitool("del", &pod, &[]).status.success());
    }
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn a_plugin_killed_mid_add_leaves_state_that_gc_cleans_up() {
    let node = Node::new("killgc", "10.244.6.0/24", "1.1.0");
    let live = node.pod("live");
    let live_result = result_of(&node.cnitool("add", &live, &[]));
    let a = node.pod("a");
    let b = node.pod("b");
    kill_add_at(&node, &a, "after-ipam");
    kill_add_at(&node, &b, "after-veth");
    assert_eq!(node.leases().len(), 3);
    assert_eq!(node.host_veths().len(), 2);

    // GC with the live pod listed (as a runtime does) keeps it and releases the debris.
    let live_id = node
        .leases()
        .into_iter()
        .find(|(ip, _)| *ip == pod_ip(&live_result))
        .map(|(_, id)| id)
        .unwrap();
    let gc_conf = node.plugin_conf(
        "1.1.0",
        &format!(r#","cni.dev/valid-attachments":[{{"containerID":"{live_id}","ifname":"eth0"}}]"#),
    );
    let (ok, v) = node.plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &gc_conf,
    );
    assert!(ok, "{v}");
    assert_eq!(node.leases().len(), 1);
    assert_eq!(node.leases()[0].1, live_id);
    assert_eq!(node.host_veths().len(), 1);
    assert!(node.cnitool("check", &live, &[]).status.success());

    // cnitool gc lists nothing: everything goes.
    let gc = node.cnitool("gc", &live, &[]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(node.leases().is_empty());
    assert!(node.host_veths().is_empty());
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn a_pod_on_a_node_whose_agent_is_not_ready_is_refused() {
    let node = Node::new("notready", "10.244.7.0/24", "1.1.0");
    node.set_agent_ready(false, "kernel lacks CONFIG_INET_ESP");
    let pod = node.pod("p");
    let out = node.cnitool("add", &pod, &[]);
    assert!(
        !out.status.success(),
        "a pod was wired on a node that cannot encrypt"
    );
    assert!(stderr(&out).contains("CONFIG_INET_ESP"), "{}", stderr(&out));
    let status = node.cnitool("status", &pod, &[]);
    assert!(!status.status.success());
    assert!(node.leases().is_empty());
    assert!(node.host_veths().is_empty());
    assert!(!node
        .in_pod(&pod, &["ip", "link", "show", "eth0"])
        .status
        .success());

    node.set_agent_ready(true, "");
    assert!(node.cnitool("status", &pod, &[]).status.success());
    result_of(&node.cnitool("add", &pod, &[]));
    assert!(node.cnitool("check", &pod, &[]).status.success());
    // The agent stops encrypting: CHECK reports it, DEL still works.
    node.set_agent_ready(false, "identity key revoked");
    let check = node.cnitool("check", &pod, &[]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("identity key revoked"),
        "{}",
        stderr(&check)
    );
    assert!(node.cnitool("del", &pod, &[]).status.success());
    assert!(node.leases().is_empty());
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn check_fails_when_a_route_or_the_host_veth_is_gone() {
    let node = Node::new("check", "10.244.8.0/24", "1.1.0");
    let pod = node.pod("p");
    let result = result_of(&node.cnitool("add", &pod, &[]));
    assert!(node.cnitool("check", &pod, &[]).status.success());
    must(&["ip", "netns", "exec", &pod, "ip", "route", "del", "default"]);
    let check = node.cnitool("check", &pod, &[]);
    assert!(!check.status.success());
    assert!(stderr(&check).contains("0.0.0.0/0"), "{}", stderr(&check));
    must(&[
        "ip",
        "netns",
        "exec",
        &pod,
        "ip",
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    assert!(node.cnitool("check", &pod, &[]).status.success());
    let host_veth = result["interfaces"][0]["name"].as_str().unwrap();
    let ip = pod_ip(&result);
    must(&[
        "ip",
        "-n",
        &node.node_ns,
        "route",
        "del",
        &format!("{ip}/32"),
    ]);
    let check = node.cnitool("check", &pod, &[]);
    assert!(!check.status.success());
    assert!(stderr(&check).contains(host_veth), "{}", stderr(&check));
    assert!(node.cnitool("del", &pod, &[]).status.success());
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn del_succeeds_when_the_pod_netns_is_already_gone() {
    let node = Node::new("nsgone", "10.244.9.0/24", "1.1.0");
    let pod = node.pod("p");
    result_of(&node.cnitool("add", &pod, &[]));
    node.remove_pod_ns(&pod);
    let del = node.cnitool("del", &pod, &[]);
    assert!(del.status.success(), "{}", stderr(&del));
    assert!(node.leases().is_empty());
    assert!(node.host_veths().is_empty());
    assert!(node.cnitool("del", &pod, &[]).status.success());
    // Without CNI_NETNS at all, as a runtime may send after the sandbox is gone.
    let (ok, v) = node.plugin(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "never-added"),
            ("CNI_IFNAME", "eth0"),
        ],
        &node.plugin_conf("1.1.0", ""),
    );
    assert!(ok, "{v}");
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn logs_go_to_stderr_and_to_the_log_file() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let node = Node::new("logs", "10.244.10.0/24", "1.1.0");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.node_ns, common::PLUGIN])
        .env_clear()
        .envs([
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "logged-1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(node.plugin_conf("1.1.0", "").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DEL container=logged-1 ifname=eth0 pod=default/web-0"),
        "{stderr}"
    );
    let file = std::fs::read_to_string(node.log_file()).unwrap();
    assert!(
        file.contains("DEL container=logged-1 ifname=eth0 pod=default/web-0"),
        "{file}"
    );
}
