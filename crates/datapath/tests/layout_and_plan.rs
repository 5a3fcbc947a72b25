//! Unit tests of the desired layout, the make-before-break plan, adoption, MTU, xfrm_stat and
//! metrics. No kernel involved.

use std::net::IpAddr;

use cipherlane_core::{Epoch, NodeName, PeerSpec, SaDirection, SaKey, SaPair, Spi, Suite};
use cipherlane_datapath::*;
use ipnet::IpNet;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}
fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}
fn name(s: &str) -> NodeName {
    NodeName::new(s).expect("test name")
}
fn sa(spi: u32, byte: u8) -> SaDirection {
    SaDirection {
        spi: Spi::new(spi).expect("test spi"),
        key: SaKey::new(Suite::AesGcm128, vec![byte; 20]).expect("test key"),
    }
}
fn pair(epoch: u64, spi_in: u32, spi_out: u32, byte: u8) -> SaPair {
    SaPair {
        epoch: Epoch(epoch),
        suite: Suite::AesGcm128,
        inbound: sa(spi_in, byte),
        outbound: sa(spi_out, byte),
    }
}
fn peer_b(keys: Option<PeerKeys>) -> Peer {
    Peer {
        spec: PeerSpec {
            name: name("b"),
            node_ip: ip("198.18.0.2"),
            pod_cidrs: vec![net("10.244.2.0/24")],
        },
        keys,
    }
}
fn node_a(peers: Vec<Peer>) -> NodeInput {
    NodeInput {
        local: LocalNode {
            name: name("a"),
            node_ip: ip("198.18.0.1"),
            pod_cidrs: vec![net("10.244.1.0/24")],
            underlay_ifindex: 7,
        },
        cluster_pod_cidrs: vec![net("10.244.0.0/16")],
        peers,
        settings: SaSettings::default(),
    }
}
fn keyed_b() -> Peer {
    peer_b(Some(PeerKeys::from_pairs(
        &pair(1, 0x1002, 0x1001, 1),
        None,
    )))
}

/// Applies a plan to an in-memory kernel, as the adapter does to the real one.
fn apply(state: &mut DatapathState, plan: &Plan) {
    state
        .apply(plan)
        .unwrap_or_else(|e| panic!("the kernel would refuse the plan: {e}"));
}

fn converge(kernel: &mut DatapathState, desired: &DatapathState) {
    let p = plan(desired, kernel);
    apply(kernel, &p);
}

fn policy_line(p: &Policy) -> String {
    let dir = match p.key.dir {
        Direction::In => "in",
        Direction::Out => "out",
        Direction::Fwd => "fwd",
    };
    let what = match (p.action, p.template) {
        (Action::Block, _) => "block".to_string(),
        (Action::Allow, None) => "allow".to_string(),
        (Action::Allow, Some(t)) => format!(
            "tmpl {}->{} reqid {:#x}{}",
            t.src,
            t.dst,
            t.reqid,
            if t.optional { " use" } else { "" }
        ),
    };
    format!(
        "{dir} {} -> {} prio {} {what}",
        p.key.src,
        p.key.dst,
        p.priority - PRIORITY_BAND
    )
}

#[test]
fn a_keyed_peer_gets_the_validated_policy_layout() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid input");
    let mut lines: Vec<String> = desired.policies.values().map(policy_line).collect();
    lines.sort();
    let mut expected = vec![
        "out 0.0.0.0/0 -> 10.244.2.0/24 prio 100 tmpl 198.18.0.1->198.18.0.2 reqid 0xc1a0001",
        "out 10.244.1.0/24 -> 198.18.0.2/32 prio 100 tmpl 198.18.0.1->198.18.0.2 reqid 0xc1a0001",
        "fwd 10.244.2.0/24 -> 10.244.1.0/24 prio 100 tmpl 198.18.0.2->198.18.0.1 reqid 0xc1a0001",
        "in 10.244.2.0/24 -> 198.18.0.1/32 prio 100 tmpl 198.18.0.2->198.18.0.1 reqid 0xc1a0001",
        "fwd 10.244.2.0/24 -> 198.18.0.1/32 prio 100 tmpl 198.18.0.2->198.18.0.1 reqid 0xc1a0001",
        "fwd 0.0.0.0/0 -> 10.244.1.0/24 prio 200 tmpl 0.0.0.0->198.18.0.1 reqid 0x0 use",
        "out 0.0.0.0/0 -> 10.244.1.0/24 prio 50 allow",
        "fwd 10.244.1.0/24 -> 10.244.1.0/24 prio 50 allow",
        "fwd 10.244.0.0/16 -> 10.244.1.0/24 prio 150 block",
        "out 0.0.0.0/0 -> 10.244.0.0/16 prio 1000 block",
    ];
    expected.sort();
    assert_eq!(lines, expected);
}

#[test]
fn a_keyed_peer_gets_esn_tunnel_states_in_both_directions_and_a_route() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid input");
    let inbound = &desired.states[&StateKey {
        dst: ip("198.18.0.1"),
        spi: 0x1002,
    }];
    assert_eq!(inbound.src, ip("198.18.0.2"));
    assert_eq!(inbound.flow, Flow::Inbound);
    let outbound = &desired.states[&StateKey {
        dst: ip("198.18.0.2"),
        spi: 0x1001,
    }];
    assert_eq!(outbound.flow, Flow::Outbound);
    for s in desired.states.values() {
        assert!(s.esn);
        assert_eq!(s.replay_window, 1024);
        assert!(is_our_reqid(s.reqid));
    }
    let route = desired.routes[&net("10.244.2.0/24")];
    assert_eq!(route.gateway, ip("198.18.0.2"));
    assert_eq!(route.src, ip("198.18.0.1"));
    assert_eq!(route.oif, 7);
}

#[test]
fn a_peer_without_keys_has_only_its_route_so_its_pods_stay_blocked() {
    let desired = desired_state(&node_a(vec![peer_b(None)])).expect("valid input");
    assert!(desired.states.is_empty());
    assert!(desired.routes.contains_key(&net("10.244.2.0/24")));
    assert!(desired
        .policies
        .values()
        .all(|p| p.priority != Priority::Peer.value()));
    assert!(desired.policies.values().any(|p| p.action == Action::Block
        && p.key.dir == Direction::Out
        && p.key.dst == net("10.244.0.0/16")));
}

#[test]
fn fips_mode_refuses_chacha20() {
    let chacha = SaDirection {
        spi: Spi::new(0x2000).expect("spi"),
        key: SaKey::new(Suite::Chacha20Poly1305, vec![1; 36]).expect("key"),
    };
    let mut input = node_a(vec![peer_b(Some(PeerKeys {
        inbound: vec![chacha.clone()],
        outbound: vec![chacha],
    }))]);
    assert!(desired_state(&input).is_ok());
    input.settings.fips = true;
    let err = desired_state(&input).expect_err("chacha is not FIPS");
    assert!(err.to_string().contains("aes-gcm-128"), "{err}");
}

#[test]
fn overlapping_pod_cidrs_and_duplicate_peers_are_refused_with_the_offender_named() {
    let mut clash = peer_b(None);
    clash.spec.pod_cidrs = vec![net("10.244.1.128/25")];
    let err = desired_state(&node_a(vec![clash])).expect_err("overlaps local");
    assert!(err.to_string().contains("10.244.1.128/25"), "{err}");

    let err = desired_state(&node_a(vec![peer_b(None), peer_b(None)])).expect_err("twice");
    assert!(matches!(err, LayoutError::DuplicatePeer { .. }));

    let mut me = peer_b(None);
    me.spec.node_ip = ip("198.18.0.1");
    assert!(matches!(
        desired_state(&node_a(vec![me])),
        Err(LayoutError::PeerIsLocal { .. })
    ));
}

#[test]
fn the_first_plan_adds_inbound_sas_then_outbound_then_policies_by_priority_then_routes() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid input");
    let plan = plan(&desired, &DatapathState::default());
    let kinds: Vec<&str> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::AddState(s) if s.flow == Flow::Inbound => "in-sa",
            Step::AddState(_) => "out-sa",
            Step::AddPolicy(_) => "policy",
            Step::AddRoute(_) => "route",
            other => panic!("unexpected step {other:?}"),
        })
        .collect();
    assert_eq!(kinds[..2], ["in-sa", "out-sa"]);
    assert_eq!(*kinds.last().expect("steps"), "route");
    let prios: Vec<u32> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::AddPolicy(p) => Some(p.priority),
            _ => None,
        })
        .collect();
    let mut sorted = prios.clone();
    sorted.sort();
    assert_eq!(prios, sorted);
}

#[test]
fn applying_a_plan_twice_changes_nothing_the_second_time() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid input");
    let mut kernel = DatapathState::default();
    converge(&mut kernel, &desired);
    assert_eq!(kernel.policies, desired.policies);
    assert_eq!(kernel.states, desired.states);
    assert_eq!(kernel.routes, desired.routes);
    assert!(plan(&desired, &kernel).is_empty());
}

#[test]
fn the_in_memory_kernel_refuses_what_the_real_one_would() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid input");
    let first = plan(&desired, &DatapathState::default());
    let mut kernel = DatapathState::default();
    kernel
        .apply(&first)
        .expect("a fresh kernel takes the first plan");
    assert_eq!(kernel, desired);
    // the same plan again: its first step adds an SA that is already there
    let before = kernel.clone();
    let err = kernel.apply(&first).expect_err("adding twice is refused");
    assert!(matches!(err, ApplyError::StateExists(_)), "{err}");
    assert_eq!(kernel, before, "a refused first step changes nothing");
    // deleting everything, then deleting again
    let teardown = plan(&DatapathState::default(), &kernel);
    kernel.apply(&teardown).expect("teardown applies");
    assert_eq!(kernel, DatapathState::default());
    let err = kernel
        .apply(&teardown)
        .expect_err("deleting what is gone is refused");
    assert!(matches!(err, ApplyError::RouteMissing(_)), "{err}");
}

#[test]
fn peer_records_show_each_peers_sas_and_what_is_encrypted_to_it() {
    let desired = desired_state(&node_a(vec![peer_b(None)])).expect("valid input");
    // an unkeyed peer has no SAs and no required policy: nothing is encrypted to it yet
    assert!(peer_records(&desired).is_empty());

    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid input");
    let records = peer_records(&desired);
    assert_eq!(records.len(), 1);
    let b = &records[0];
    assert_eq!(b.node_ip, ip("198.18.0.2"));
    assert_eq!(b.inbound_spis, vec!["0x00001002".to_string()]);
    assert_eq!(b.outbound_spis, vec!["0x00001001".to_string()]);
    let mut to = b.encrypted_to.clone();
    to.sort();
    assert_eq!(to, vec![net("10.244.2.0/24"), net("198.18.0.2/32")]);
}

#[test]
fn a_rotation_adds_the_new_inbound_sa_before_the_new_outbound_and_deletes_nothing_until_grace_ends()
{
    let old = pair(1, 0x1002, 0x1001, 1);
    let new = pair(2, 0x2002, 0x2001, 2);
    let mut kernel = DatapathState::default();
    let steady = desired_state(&node_a(vec![peer_b(Some(PeerKeys::from_pairs(
        &old, None,
    )))]))
    .expect("valid");
    converge(&mut kernel, &steady);

    let rotating = desired_state(&node_a(vec![peer_b(Some(PeerKeys::from_pairs(
        &new,
        Some(&old),
    )))]))
    .expect("valid");
    let p = plan(&rotating, &kernel);
    assert_eq!(p.steps.len(), 2, "{p:?}");
    assert!(
        matches!(&p.steps[0], Step::AddState(s) if s.key.spi == 0x2002 && s.flow == Flow::Inbound)
    );
    assert!(
        matches!(&p.steps[1], Step::AddState(s) if s.key.spi == 0x2001 && s.flow == Flow::Outbound)
    );
    apply(&mut kernel, &p);
    assert_eq!(kernel.state_order.last().map(|k| k.spi), Some(0x2001));

    let after_grace = desired_state(&node_a(vec![peer_b(Some(PeerKeys::from_pairs(
        &new, None,
    )))]))
    .expect("valid");
    let p = plan(&after_grace, &kernel);
    let deleted: Vec<u32> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::DeleteState(k) => k.spi,
            other => panic!("only deletions expected, got {other:?}"),
        })
        .collect();
    assert_eq!(
        deleted,
        vec![0x1001, 0x1002],
        "outbound goes before inbound"
    );
}

#[test]
fn a_responder_can_accept_the_new_inbound_sa_while_still_sending_on_the_old_one() {
    let old = pair(1, 0x1002, 0x1001, 1);
    let mut kernel = DatapathState::default();
    let steady = desired_state(&node_a(vec![peer_b(Some(PeerKeys::from_pairs(
        &old, None,
    )))]))
    .expect("valid");
    converge(&mut kernel, &steady);
    let mut keys = PeerKeys::from_pairs(&old, None);
    keys.inbound.push(sa(0x3002, 3));
    let half = desired_state(&node_a(vec![peer_b(Some(keys))])).expect("valid");
    let p = plan(&half, &kernel);
    assert_eq!(p.steps.len(), 1);
    assert!(
        matches!(&p.steps[0], Step::AddState(s) if s.key.spi == 0x3002 && s.flow == Flow::Inbound)
    );
}

#[test]
fn a_lost_older_outbound_sa_is_not_re_added_behind_the_newest() {
    let old = pair(1, 0x1002, 0x1001, 1);
    let new = pair(2, 0x2002, 0x2001, 2);
    let desired = desired_state(&node_a(vec![peer_b(Some(PeerKeys::from_pairs(
        &new,
        Some(&old),
    )))]))
    .expect("valid");
    let mut kernel = desired.clone();
    let old_out = StateKey {
        dst: ip("198.18.0.2"),
        spi: 0x1001,
    };
    kernel.states.remove(&old_out);
    kernel.state_order.retain(|k| *k != old_out);
    assert!(plan(&desired, &kernel).is_empty());

    // On an empty kernel both are added, the older first so that the newer wins.
    let p = plan(&desired, &DatapathState::default());
    let outs: Vec<u32> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::AddState(s) if s.flow == Flow::Outbound => Some(s.key.spi),
            _ => None,
        })
        .collect();
    assert_eq!(outs, vec![0x1001, 0x2001]);
}

#[test]
fn a_removed_peer_has_exactly_its_objects_removed_and_the_guards_stay() {
    let c = Peer {
        spec: PeerSpec {
            name: name("c"),
            node_ip: ip("198.18.0.3"),
            pod_cidrs: vec![net("10.244.3.0/24")],
        },
        keys: Some(PeerKeys::from_pairs(&pair(1, 0x1003, 0x3001, 3), None)),
    };
    let both = desired_state(&node_a(vec![keyed_b(), c])).expect("valid");
    let only_b = desired_state(&node_a(vec![keyed_b()])).expect("valid");
    let mut kernel = DatapathState::default();
    converge(&mut kernel, &both);
    let p = plan(&only_b, &kernel);
    assert!(p.steps.iter().all(|s| matches!(
        s,
        Step::DeleteState(_) | Step::DeletePolicy(_) | Step::DeleteRoute(_)
    )));
    assert_eq!(p.summary(), (0, 0, 2 + 5 + 1));
    apply(&mut kernel, &p);
    assert_eq!(kernel.policies, only_b.policies);
    assert_eq!(kernel.states, only_b.states);
}

#[test]
fn a_thousand_peer_add_remove_cycles_leave_exactly_the_starting_state() {
    let base = desired_state(&node_a(vec![keyed_b()])).expect("valid");
    let mut kernel = DatapathState::default();
    converge(&mut kernel, &base);
    for i in 0..1000u32 {
        let third = (i % 250) as u8;
        let c = Peer {
            spec: PeerSpec {
                name: name(&format!("n{i}")),
                node_ip: IpAddr::from([198, 19, (i / 250) as u8, third]),
                pod_cidrs: vec![IpNet::new(
                    IpAddr::from([10, 200 + (i / 250) as u8, third, 0]),
                    24,
                )
                .expect("cidr")],
            },
            keys: Some(PeerKeys::from_pairs(
                &pair(1, 0x10000 + i, 0x20000 + i, 5),
                None,
            )),
        };
        let with = desired_state(&node_a(vec![keyed_b(), c])).expect("valid");
        converge(&mut kernel, &with);
        converge(&mut kernel, &base);
    }
    assert_eq!(kernel.policies, base.policies);
    assert_eq!(kernel.states, base.states);
    assert_eq!(kernel.routes, base.routes);
}

#[test]
fn an_sa_with_the_same_spi_but_another_key_is_recreated_delete_first() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid");
    let mut kernel = desired.clone();
    let k = StateKey {
        dst: ip("198.18.0.1"),
        spi: 0x1002,
    };
    if let Some(s) = kernel.states.get_mut(&k) {
        s.aead = SaKey::new(Suite::AesGcm128, vec![9; 20]).expect("key");
    }
    let p = plan(&desired, &kernel);
    assert_eq!(p.steps.len(), 2);
    assert_eq!(p.steps[0], Step::DeleteState(k));
    assert!(matches!(&p.steps[1], Step::AddState(s) if s.key == k));
}

#[test]
fn new_sa_limits_update_the_sa_in_place() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid");
    let mut input = node_a(vec![keyed_b()]);
    input.settings.limits.soft_bytes = Some(1 << 30);
    let limited = desired_state(&input).expect("valid");
    let p = plan(&limited, &desired);
    assert_eq!(p.steps.len(), 2);
    assert!(p
        .steps
        .iter()
        .all(|s| matches!(s, Step::UpdateStateLimits(s) if s.limits.soft_bytes == Some(1 << 30))));
}

#[test]
fn a_changed_template_is_an_atomic_policy_update_not_a_delete() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid");
    let mut kernel = desired.clone();
    for p in kernel.policies.values_mut() {
        if let Some(t) = p.template.as_mut() {
            t.reqid = 0;
        }
    }
    let p = plan(&desired, &kernel);
    assert!(!p.is_empty());
    assert!(p.steps.iter().all(|s| matches!(s, Step::UpdatePolicy(_))));
}

#[test]
fn adopted_kernel_sas_reproduce_the_desired_state_so_a_restart_changes_nothing() {
    let old = pair(1, 0x1002, 0x1001, 1);
    let new = pair(2, 0x2002, 0x2001, 2);
    let before = desired_state(&node_a(vec![peer_b(Some(PeerKeys::from_pairs(
        &new,
        Some(&old),
    )))]))
    .expect("valid");
    let mut kernel = DatapathState::default();
    converge(&mut kernel, &before);

    let specs = vec![peer_b(None).spec];
    let adopted = adopt_keys(&kernel, &specs);
    let keys = adopted.get(&name("b")).cloned();
    assert_eq!(keys.as_ref().map(|k| k.outbound.len()), Some(2));
    let after = desired_state(&node_a(vec![peer_b(keys)])).expect("valid");
    assert!(plan(&after, &kernel).is_empty());
}

#[test]
fn hash_thresholds_hash_every_per_peer_selector() {
    let input = node_a(vec![keyed_b()]);
    assert_eq!(hash_thresholds(&input, false), Some((0, 24)));
    assert_eq!(hash_thresholds(&input, true), None);
}

#[test]
fn pod_mtu_matches_the_kernels_esp_tunnel_arithmetic() {
    assert_eq!(pod_mtu(1500, Suite::AesGcm128, OuterFamily::V4), 1446);
    assert_eq!(
        pod_mtu(1500, Suite::Chacha20Poly1305, OuterFamily::V4),
        1446
    );
    assert_eq!(pod_mtu(1500, Suite::AesGcm256, OuterFamily::V6), 1426);
    assert_eq!(pod_mtu(9001, Suite::AesGcm128, OuterFamily::V4), 8946);
    assert_eq!(tunnel_overhead(Suite::AesGcm128, OuterFamily::V4), 57);
    assert_eq!(tunnel_overhead(Suite::AesGcm128, OuterFamily::V6), 77);
    assert_eq!(pod_mtu(40, Suite::AesGcm128, OuterFamily::V4), 0);
    for u in 600..1600 {
        let m = pod_mtu(u, Suite::AesGcm128, OuterFamily::V4);
        assert!(u - m <= tunnel_overhead(Suite::AesGcm128, OuterFamily::V4));
        // the ESP packet of an m-byte inner packet fits u
        let padded = (m + 2).div_ceil(4) * 4;
        assert!(20 + 8 + 8 + padded + 16 <= u);
    }
}

#[test]
fn xfrm_stat_is_parsed_and_a_malformed_line_is_named() {
    let text = "XfrmInError             \t0\nXfrmInNoStates          \t12\n\n";
    let c = parse_xfrm_stat(text).expect("valid");
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].name, "XfrmInNoStates");
    assert_eq!(c[1].value, 12);
    let err = parse_xfrm_stat("XfrmInError x\n").expect_err("bad");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn metrics_show_kernel_counters_object_counts_and_per_peer_traffic_and_age() {
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("valid");
    let mut observed = Observed::default();
    observed.datapath.policies = desired.policies.clone();
    observed.datapath.routes = desired.routes.clone();
    for k in &desired.state_order {
        let bytes = if desired.states[k].flow == Flow::Inbound {
            100
        } else {
            300
        };
        observed.add_state(
            desired.states[k].clone(),
            StateCounters {
                bytes,
                packets: 3,
                add_time: 1_000,
            },
        );
    }
    let stat = parse_xfrm_stat("XfrmInNoStates 4\n").expect("valid");
    let specs = vec![peer_b(None).spec];
    let text = render_metrics(&MetricsInput {
        xfrm_stat: &stat,
        observed: &observed,
        peers: &specs,
        now_unix: 1_042,
    });
    for line in [
        "cipherlane_xfrm_stat{counter=\"XfrmInNoStates\"} 4",
        "cipherlane_xfrm_policies 10",
        "cipherlane_xfrm_states 2",
        "cipherlane_peer_bytes_total{peer=\"b\",direction=\"in\"} 100",
        "cipherlane_peer_bytes_total{peer=\"b\",direction=\"out\"} 300",
        "cipherlane_peer_packets_total{peer=\"b\",direction=\"out\"} 3",
        "cipherlane_peer_sa_age_seconds{peer=\"b\"} 42",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn a_state_file_becomes_the_layout_input_with_hex_keys() {
    let json = r#"{ "local": { "name": "a", "nodeIP": "198.18.0.1", "podCIDRs": ["10.244.1.0/24"] },
      "clusterPodCIDRs": ["10.244.0.0/16"],
      "peers": [ { "name": "b", "nodeIP": "198.18.0.2", "podCIDRs": ["10.244.2.0/24"],
        "keys": { "suite": "aes-gcm-128",
          "inbound": [ { "spi": 4098, "key": "00112233445566778899aabbccddeeff01020304" } ],
          "outbound": [ { "spi": 4097, "key": "0x00112233445566778899aabbccddeeff01020304" } ] } },
        { "name": "c", "nodeIP": "198.18.0.3", "podCIDRs": ["10.244.3.0/24"] } ] }"#;
    let file: StateFile = serde_json::from_str(json).expect("valid json");
    let input = file.to_input(3).expect("valid keys");
    assert_eq!(input.local.underlay_ifindex, 3);
    assert_eq!(input.peers.len(), 2);
    assert!(input.peers[1].keys.is_none());
    let desired = desired_state(&input).expect("valid");
    assert_eq!(desired.states.len(), 2);

    let bad = json.replace(
        "01020304\" } ],\n          \"outbound",
        "0102030\" } ],\n          \"outbound",
    );
    let file: StateFile = serde_json::from_str(&bad).expect("valid json");
    assert!(file.to_input(3).is_err());
}

#[test]
fn local_pod_addresses_without_a_pod_are_blackholed_never_routed_off_the_node() {
    // A decrypted packet for a deleted pod must die here, not follow the default route in clear.
    let desired = desired_state(&node_a(vec![keyed_b()])).expect("layout");
    let local = desired.routes[&net("10.244.1.0/24")];
    assert!(local.is_blackhole(), "{local:?}");
    assert!(!desired.routes[&net("10.244.2.0/24")].is_blackhole());
}
