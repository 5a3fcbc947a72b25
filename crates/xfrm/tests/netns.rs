//! Integration tests of the netlink adapter against this host's real kernel, each in a fresh
//! network namespace. This kernel has XFRM netlink but no ESP: policies and routes can be
//! programmed, SAs cannot (that is also the no-ESP detection path). SAs are exercised in the VM
//! cases (tests/vm/cases/datapath-*.sh).

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use cipherlane_core::{Epoch, NodeName, PeerSpec, SaDirection, SaKey, SaPair, Spi, Suite};
use cipherlane_datapath::*;
use cipherlane_xfrm::{diagnose_missing_support, read_kernel_config, Kernel};
use ipnet::IpNet;

const IGNORE: &str = "integration: needs root and the lab (tests/run-tier.sh integration)";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with a veth underlay holding the node IP 198.18.0.1/24, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        assert!(
            sh(&["id", "-u"]).trim() == "0",
            "this integration test needs root (network namespaces); run it through tests/run-tier.sh integration"
        );
        let name = format!(
            "cl-xfrm-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        for cmd in [
            "ip link set lo up",
            "ip link add under0 type veth peer name under1",
            "ip addr add 198.18.0.1/24 dev under0",
            "ip link set under1 up",
            "ip link set under0 up",
        ] {
            let mut args = vec!["ip", "netns", "exec", &ns.0];
            args.extend(cmd.split(' '));
            sh(&args);
        }
        ns
    }

    fn exec(&self, cmd: &str) -> String {
        let mut args = vec!["ip", "netns", "exec", &self.0];
        args.extend(cmd.split(' '));
        sh(&args)
    }

    /// Runs `f` with a Kernel whose sockets live in this namespace.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Kernel) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the test namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let kernel = Kernel::connect().expect("netlink sockets");
                f(kernel).await
            })
        })
        .join()
        .expect("test thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}
fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}
fn keys(spi_in: u32, spi_out: u32) -> PeerKeys {
    let d = |spi| SaDirection {
        spi: Spi::new(spi).expect("spi"),
        key: SaKey::new(Suite::AesGcm128, vec![7; 20]).expect("key"),
    };
    PeerKeys::from_pairs(
        &SaPair {
            epoch: Epoch(1),
            suite: Suite::AesGcm128,
            inbound: d(spi_in),
            outbound: d(spi_out),
        },
        None,
    )
}
fn peer(name: &str, node_ip: IpAddr, cidr: IpNet, k: Option<PeerKeys>) -> Peer {
    Peer {
        spec: PeerSpec {
            name: NodeName::new(name).expect("name"),
            node_ip,
            pod_cidrs: vec![cidr],
        },
        keys: k,
    }
}
fn input(ifindex: u32, peers: Vec<Peer>) -> NodeInput {
    NodeInput {
        local: LocalNode {
            name: NodeName::new("a").expect("name"),
            node_ip: ip("198.18.0.1"),
            pod_cidrs: vec![net("10.244.1.0/24")],
            underlay_ifindex: ifindex,
        },
        cluster_pod_cidrs: vec![net("10.244.0.0/16")],
        peers,
        settings: SaSettings::default(),
    }
}
fn peer_b() -> Peer {
    peer(
        "b",
        ip("198.18.0.2"),
        net("10.244.2.0/24"),
        Some(keys(0x1002, 0x1001)),
    )
}

/// The plan without SA steps: this host kernel cannot hold ESP SAs.
fn without_states(p: Plan) -> Plan {
    Plan {
        steps: p
            .steps
            .into_iter()
            .filter(|s| {
                !matches!(
                    s,
                    Step::AddState(_) | Step::DeleteState(_) | Step::UpdateStateLimits(_)
                )
            })
            .collect(),
    }
}

async fn converge(k: &Kernel, desired: &DatapathState) -> Plan {
    let observed = k.observe(&[ip("198.18.0.1")]).await.expect("observe");
    let p = without_states(plan(desired, &observed.datapath));
    k.apply(&p).await.expect("apply");
    p
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn in_a_namespace_the_policies_and_routes_match_the_desired_state_and_applying_twice_changes_nothing(
) {
    let _ = IGNORE;
    let ns = Netns::new();
    let (first, second, observed, desired) = ns.run(|k| {
        Box::pin(async move {
            let ifindex = k
                .underlay_ifindex(ip("198.18.0.1"))
                .await
                .expect("underlay");
            let desired = desired_state(&input(ifindex, vec![peer_b()])).expect("layout");
            let first = converge(&k, &desired).await;
            let second = converge(&k, &desired).await;
            let observed = k.observe(&[ip("198.18.0.1")]).await.expect("observe");
            (first, second, observed, desired)
        })
    });
    assert!(!first.is_empty());
    assert!(second.is_empty(), "second apply changed {:?}", second.steps);
    assert_eq!(observed.datapath.policies, desired.policies);
    assert_eq!(observed.datapath.routes, desired.routes);

    // Cross-check with iproute2's view of the same kernel.
    let policies = ns.exec("ip xfrm policy list");
    assert!(
        policies.contains("src 0.0.0.0/0 dst 10.244.0.0/16"),
        "{policies}"
    );
    assert!(policies.contains("action block"), "{policies}");
    assert!(policies.contains("level use"), "{policies}");
    assert_eq!(
        policies.matches("dir ").count(),
        desired.policies.len(),
        "{policies}"
    );
    let routes = ns.exec("ip route show proto 193");
    assert!(
        routes.contains("10.244.2.0/24 via 198.18.0.2 dev under0 src 198.18.0.1 onlink"),
        "{routes}"
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn a_thousand_peer_add_remove_cycles_leak_no_policy_and_no_route() {
    let ns = Netns::new();
    let before_policies = ns.exec("ip xfrm policy list").matches("dir ").count();
    let (base_len, observed, base) = ns.run(|k| {
        Box::pin(async move {
            let ifindex = k
                .underlay_ifindex(ip("198.18.0.1"))
                .await
                .expect("underlay");
            let base = desired_state(&input(ifindex, vec![peer_b()])).expect("layout");
            converge(&k, &base).await;
            let base_len = base.policies.len();
            for i in 0..1000u32 {
                let c = peer(
                    &format!("n{i}"),
                    IpAddr::from([198, 19, (i / 250) as u8, (i % 250) as u8 + 1]),
                    IpNet::new(IpAddr::from([10, 244, 10 + (i % 200) as u8, 0]), 24).expect("cidr"),
                    Some(keys(0x10000 + i, 0x20000 + i)),
                );
                let with = desired_state(&input(ifindex, vec![peer_b(), c])).expect("layout");
                let p = converge(&k, &with).await;
                assert_eq!(p.summary(), (6, 0, 0), "cycle {i} add");
                let p = converge(&k, &base).await;
                assert_eq!(p.summary(), (0, 0, 6), "cycle {i} remove");
            }
            let observed = k.observe(&[ip("198.18.0.1")]).await.expect("observe");
            (base_len, observed, base)
        })
    });
    assert_eq!(observed.datapath.policies, base.policies);
    assert_eq!(observed.datapath.routes, base.routes);
    let after = ns.exec("ip xfrm policy list").matches("dir ").count();
    assert_eq!(after, before_policies + base_len);
    let routes = ns.exec("ip route show").lines().count();
    assert_eq!(
        routes, 3,
        "the connected /24, 10.244.2.0/24 and the local pod CIDR's blackhole only"
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn uninstall_removes_only_what_cipherlane_installed() {
    let ns = Netns::new();
    // Someone else's IPsec and routes, including one at DESIGN.md's bare priority numbers.
    ns.exec("ip xfrm policy add src 10.9.0.0/16 dst 10.8.0.0/16 dir out priority 100 tmpl src 198.18.0.1 dst 198.18.0.7 proto esp reqid 1 mode tunnel");
    ns.exec("ip xfrm policy add src 0.0.0.0/0 dst 10.7.0.0/16 dir out priority 1000 action block");
    ns.exec("ip route add 10.6.0.0/24 via 198.18.0.9 dev under0");
    let foreign_policies = ns.exec("ip xfrm policy list");
    let (report, again, observed) = ns.run(|k| {
        Box::pin(async move {
            let ifindex = k
                .underlay_ifindex(ip("198.18.0.1"))
                .await
                .expect("underlay");
            let desired = desired_state(&input(ifindex, vec![peer_b()])).expect("layout");
            converge(&k, &desired).await;
            let report = k.uninstall().await.expect("uninstall");
            let again = k.uninstall().await.expect("second uninstall");
            let observed = k.observe(&[ip("198.18.0.1")]).await.expect("observe");
            (report, again, observed)
        })
    });
    assert_eq!(report.policies, 10);
    assert_eq!(
        report.routes, 2,
        "the peer's pod CIDR and the local blackhole"
    );
    assert_eq!(
        again,
        Default::default(),
        "a second uninstall finds nothing"
    );
    assert!(observed.datapath.policies.is_empty());
    assert!(observed.datapath.routes.is_empty());
    assert_eq!(ns.exec("ip xfrm policy list"), foreign_policies);
    assert!(ns
        .exec("ip route show")
        .contains("10.6.0.0/24 via 198.18.0.9"));
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn a_kernel_without_esp_is_named_in_one_line_and_nothing_is_left_installed() {
    let ns = Netns::new();
    let result = ns.run(|k| Box::pin(async move { k.probe_esp(Suite::AesGcm128, false).await }));
    let config = read_kernel_config();
    let esp_built = config.as_deref().map(|c| {
        c.lines()
            .any(|l| l == "CONFIG_INET_ESP=y" || l == "CONFIG_INET_ESP=m")
    });
    match (result, esp_built) {
        (Err(failure), _) => {
            let line =
                diagnose_missing_support(failure, config.as_deref(), Suite::AesGcm128, false)
                    .to_string();
            eprintln!("{line}");
            assert!(!line.contains('\n'));
            assert!(
                line.contains("CONFIG_INET_ESP") || line.contains("CONFIG_CRYPTO_GCM"),
                "{line}"
            );
            if esp_built == Some(false) {
                assert!(line.contains("CONFIG_INET_ESP"), "{line}");
            }
        }
        (Ok(()), Some(false)) => panic!("the ESP probe succeeded on a kernel built without ESP"),
        (Ok(()), _) => {}
    }
    assert_eq!(
        ns.exec("ip xfrm state list"),
        "",
        "the probe leaves no SA behind"
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn hash_thresholds_are_set_to_fit_the_peer_pod_cidrs() {
    let ns = Netns::new();
    let got = ns.run(|k| {
        Box::pin(async move {
            let t = hash_thresholds(&input(1, vec![peer_b()]), false);
            k.set_hash_thresholds(t, None).await.expect("set");
            k.hash_thresholds().await.expect("read").0
        })
    });
    assert_eq!(got, Some((0, 24)));
    let count = ns.exec("ip -s -s xfrm policy count");
    assert!(
        count.contains("IPv4 thresholds: local 0 remote 24"),
        "{count}"
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn deleted_and_flushed_policies_are_notified_and_foreign_ones_are_not() {
    let ns = Netns::new();
    let name = ns.0.clone();
    let events = ns.run(move |k| {
        Box::pin(async move {
            let ifindex = k
                .underlay_ifindex(ip("198.18.0.1"))
                .await
                .expect("underlay");
            let desired = desired_state(&input(ifindex, vec![peer_b()])).expect("layout");
            converge(&k, &desired).await;
            let mut events = k.events().expect("subscribe");
            let run = |cmd: &str| {
                let mut args = vec!["netns", "exec", name.as_str()];
                args.extend(cmd.split(' '));
                let ok = Command::new("ip").args(&args).status().expect("ip");
                assert!(ok.success(), "{cmd}");
            };
            let mut seen = Vec::new();
            let wait = std::time::Duration::from_secs(2);
            // someone else's policy, added and deleted: not ours, not passed on
            run("ip xfrm policy add src 10.9.0.0/16 dst 10.8.0.0/16 dir out priority 7 action block");
            run("ip xfrm policy delete src 10.9.0.0/16 dst 10.8.0.0/16 dir out");
            // one of ours deleted by hand, then everything flushed
            run("ip xfrm policy delete src 0.0.0.0/0 dst 10.244.0.0/16 dir out");
            seen.push(tokio::time::timeout(wait, events.next()).await.ok().flatten());
            run("ip xfrm policy flush");
            seen.push(tokio::time::timeout(wait, events.next()).await.ok().flatten());
            seen
        })
    });
    assert_eq!(
        events,
        vec![
            Some(cipherlane_xfrm::XfrmEvent::PolicyDeleted),
            Some(cipherlane_xfrm::XfrmEvent::PoliciesFlushed)
        ]
    );
}

#[test]
#[ignore = "integration: needs root and the lab (tests/run-tier.sh integration)"]
fn the_fence_table_is_installed_whole_read_back_as_written_and_removed() {
    use cipherlane_xfrm::nft;
    let ns = Netns::new();
    let spec = FenceSpec {
        cluster_pod_cidrs: vec![net("10.244.0.0/16"), net("fd00:244::/48")],
        local_pod_cidrs: vec![net("10.244.1.0/24"), net("fd00:244:0:1::/64")],
        peer_node_ips: vec![ip("198.18.0.2"), ip("198.18.0.3"), ip("2001:db8::2")],
    };
    let s = spec.clone();
    let (count, again) = ns.run(move |_k| {
        Box::pin(async move {
            nft::install(&s).expect("install");
            let count = nft::rule_count().expect("read back");
            nft::install(&s).expect("install again (replaces)");
            (count, nft::rule_count().expect("read back"))
        })
    });
    assert_eq!(count, Some(nft::expected_rules(&spec)));
    assert_eq!(again, count, "installing twice leaves one copy");
    let listed = ns.exec("nft list table inet cipherlane");
    for want in [
        "type filter hook postrouting priority srcnat + 10; policy accept;",
        "ip daddr 10.244.0.0/16 ip daddr != 10.244.1.0/24 rt ipsec missing counter packets 0 bytes 0 drop",
        "ip saddr 10.244.1.0/24 ip daddr @peer_nodes4 rt ipsec missing counter packets 0 bytes 0 drop",
        "ip6 daddr fd00:244::/48 ip6 daddr != fd00:244:0:1::/64 rt ipsec missing counter packets 0 bytes 0 drop",
        "type filter hook prerouting priority raw; policy accept;",
        "ip saddr 10.244.0.0/16 ip saddr != 10.244.1.0/24 meta ipsec missing counter packets 0 bytes 0 drop",
        "ip6 saddr fd00:244::/48 ip6 saddr != fd00:244:0:1::/64 meta ipsec missing counter packets 0 bytes 0 drop",
        "elements = { 198.18.0.2, 198.18.0.3 }",
        "elements = { 2001:db8::2 }",
    ] {
        assert!(listed.contains(want), "missing {want:?} in:\n{listed}");
    }
    // someone deletes a rule: the read-back says so
    let handle = ns
        .exec("nft -a list chain inet cipherlane in")
        .lines()
        .filter(|l| l.contains(" drop "))
        .find_map(|l| l.split("# handle ").nth(1).map(|h| h.trim().to_string()))
        .expect("a rule handle");
    ns.exec(&format!(
        "nft delete rule inet cipherlane in handle {handle}"
    ));
    let (tampered, removed, gone, removed_again) = ns.run(|_k| {
        Box::pin(async move {
            (
                nft::rule_count().expect("read back"),
                nft::remove().expect("remove"),
                nft::rule_count().expect("read back"),
                nft::remove().expect("remove again"),
            )
        })
    });
    assert_eq!(tampered, Some(nft::expected_rules(&spec) - 1));
    assert!(removed);
    assert_eq!(gone, None);
    assert!(!removed_again, "a second remove finds nothing");
    assert_eq!(ns.exec("nft list ruleset").trim(), "");
}
