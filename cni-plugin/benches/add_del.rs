//! ADD and DEL latency of the plugin over 200 pods, as the runtime invokes it (one exec per
//! operation with the CNI environment and stdin, inside the node's namespace), and end to end
//! through the real cnitool for comparison. Writes p50/p99/max to bench/results/cni.txt.
//!
//! Run (root, release build): `cargo bench -p cipherlane-cni-plugin --bench add_del`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{pod_ip, result_of, Node};

const PODS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{name:<28} n={:<4} p50={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: skip the 200-pod run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("add_del: skipped (run with cargo bench)");
        return;
    }
    let node = Node::new("bench", "10.250.0.0/22", "1.1.0");
    let conf = node.plugin_conf("1.1.0", "");
    let pods: Vec<String> = (0..PODS).map(|i| node.pod(&format!("b{i}"))).collect();
    // Run the plugin as a runtime does: a direct exec from a process already in the node's
    // namespace (this thread enters it; children inherit it), not through `ip netns exec`.
    let node_ns = std::fs::File::open(format!("/run/netns/{}", node.node_ns)).unwrap();
    nix::sched::setns(&node_ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    // CPU time (user + system) of the waited-for children: load-independent, unlike wall time.
    let children_cpu = || {
        let u =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
        let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
        Duration::from_micros(us(u.user_time()) + us(u.system_time()))
    };
    let exec = |env: &[(&str, &str)]| {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(common::PLUGIN)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let mut add = Vec::new();
    let mut add_cpu = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let id = format!("bench-{i}");
        let netns = Node::netns_path(pod);
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        let (t, cpu) = (Instant::now(), children_cpu());
        let (ok, v) = exec(&env);
        add.push(t.elapsed());
        add_cpu.push(children_cpu() - cpu);
        assert!(ok, "ADD failed: {v}");
    }
    let mut del = Vec::new();
    let mut del_cpu = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let id = format!("bench-{i}");
        let netns = Node::netns_path(pod);
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", netns.as_str()),
        ];
        let (t, cpu) = (Instant::now(), children_cpu());
        let (ok, v) = exec(&env);
        del.push(t.elapsed());
        del_cpu.push(children_cpu() - cpu);
        assert!(ok, "DEL failed: {v}");
    }
    assert!(node.leases().is_empty());
    // Time spent inside the plugin (after exec, before exit), from its own log lines.
    let log = std::fs::read_to_string(node.log_file()).unwrap();
    let inner = |cmd: &str| -> Vec<Duration> {
        log.lines()
            .filter(|l| l.contains(&format!(" {cmd} container=bench-")))
            .filter_map(|l| l.split("done in ").nth(1))
            .filter_map(|t| t.trim_end_matches(" µs").parse::<u64>().ok())
            .map(Duration::from_micros)
            .collect()
    };
    let (add_inner, del_inner) = (inner("ADD"), inner("DEL"));

    // The same through libcni (cnitool), which adds its own exec, VERSION probe and cache.
    let mut add_tool = Vec::new();
    let mut del_tool = Vec::new();
    for pod in &pods {
        let t = Instant::now();
        let out = node.cnitool("add", pod, &[]);
        add_tool.push(t.elapsed());
        pod_ip(&result_of(&out));
    }
    for pod in &pods {
        let t = Instant::now();
        let out = node.cnitool("del", pod, &[]);
        del_tool.push(t.elapsed());
        assert!(out.status.success());
    }

    let (uname, cpus) = (
        common::must(&["uname", "-r"]).trim().to_string(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = format!(
        "cipherlane CNI plugin: ADD/DEL latency over {PODS} pods, sequential, release build\n\
         command: cargo bench -p cipherlane-cni-plugin --bench add_del\n\
         host: kernel {uname}, {cpus} CPUs, load average at end {}\n\
         plugin exec: wall time of one exec of the plugin (fork, exec, netlink, IPAM) from a\n\
         process in the node namespace, as a runtime runs it; in-plugin: the plugin's own\n\
         measurement from its start to its result; cnitool: libcni end to end (its own exec via\n\
         `ip netns exec`, VERSION probe, result cache); CPU: user+system time of the plugin\n\
         process (getrusage of children), which does not depend on how busy the machine is\n\n\
         {}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n\ntarget: ADD p99 < 20 ms (plugin exec)\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        summary("ADD (plugin exec)", add),
        summary("DEL (plugin exec)", del),
        summary("ADD (in-plugin)", add_inner),
        summary("DEL (in-plugin)", del_inner),
        summary("ADD (plugin CPU time)", add_cpu),
        summary("DEL (plugin CPU time)", del_cpu),
        summary("ADD (cnitool/libcni)", add_tool),
        summary("DEL (cnitool/libcni)", del_tool),
    );
    print!("{report}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results/cni.txt");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &report).unwrap();
    println!("written to {}", out.display());
}
