#!/bin/sh
# Faults, end to end, with three nodes (CASE_NODES=5: five; a, b and c take the faults, the others
# watch): for each one the wire must never carry clear text to or from a pod, and the
# recovery time is measured (printed as "RECOVERY <fault> <seconds>").
#   - the API server unreachable for a minute: the datapath keeps working; rotations resume after
#     (emulated by dropping the nodes' and operator's traffic to it: agents see exactly what an outage
#     looks like, and the one shared lab API server keeps serving other tiers);
#   - a peer unreachable during a rotation (its key-exchange port blocked), then back;
#   - a node rebooted (its namespace and kernel state recreated) rejoining;
#   - a node removed from the cluster and added back;
#   - a revoked node: its pod traffic to the others stops.
. /repo/tests/vm/lib.sh
lab_api_ready
now() { uptime_s; }
NODES=$(case_nodes); N=$(echo $NODES | wc -w)
underlay_up
nodes_up f
lab_policy faults aes-gcm-256
operator_start
for x in $NODES; do agent_start $x f-$x 198.18.0.$(node_index $x); done
for x in $NODES; do wait_for 90 agent_ready $x || { agent_log_tail $x; fail "agent $x not ready"; }; done
for x in $NODES; do eval "p$x=\$(pod_add $x p${x}1)" || fail "CNI ADD on $x"; done
check "$N nodes keyed: every pod reaches every other node's pod (90s)" wait_for 90 mesh $NODES
ip -n a xfrm state | grep -m1 -o 'aead [^ ]*' | sed 's/^/  suite in the kernel: /'
capture_start /tmp/wire.pcap
# background traffic for the whole case, with the marker: any clear text would show in the capture
ip netns exec pa1 ping -i 0.2 -W 1 -p $MARKER_HEX "$pb" > /tmp/bg.txt 2>&1 & bgp=$!

rotate() { k annotate rotationpolicy faults cipherlane.io/rotate="$1" --overwrite >/dev/null; }
epoch() { k get rotationpolicy faults -o jsonpath='{.status.epoch}'; }
converged() { all_at_epoch f "$1" $NODES; }

log "fault 1: the API server unreachable for 60s (nodes and operator cut off from 10.0.2.2)"
nft add table ip outage
nft add chain ip outage fwdc '{ type filter hook forward priority 0 ; }'
nft add chain ip outage outc '{ type filter hook output priority 0 ; }'
nft add rule ip outage fwdc ip daddr 10.0.2.2 drop
nft add rule ip outage outc ip daddr 10.0.2.2 drop
check "the nodes cannot reach the API server now" check_not_quiet ip netns exec a "$KUBECTL" --kubeconfig /out/kubeconfig --request-timeout 3s get --raw /readyz
t0=$(now)
check "with the API away, pod traffic keeps flowing (30 pings)" ip netns exec pa1 ping -c 30 -i 0.5 -W 2 "$pc"
sleep 45
nft delete table ip outage
t1=$(now)
e0=$(epoch); rotate outage-over
check "after the outage a rotation completes (epoch $e0 -> $((e0 + 1)) on every node, 90s)" wait_for 90 converged $((e0 + 1))
echo "RECOVERY api-outage $(( $(now) - t1 ))s (rotation converged after the API came back; outage lasted $((t1 - t0))s)"

log "fault 2: peer c unreachable for key exchange during a rotation"
ip netns exec c nft add table ip cut
ip netns exec c nft add chain ip cut in '{ type filter hook input priority 0 ; }'
ip netns exec c nft add rule ip cut in tcp dport 9471 drop
ip netns exec c nft add rule ip cut in tcp sport 9471 drop
spis_ab() { ip -n a xfrm state | grep -A1 'src 198.18.0.1 dst 198.18.0.2' | grep -o 'spi 0x[0-9a-f]*' | cut -d' ' -f2 | sort | tr '\n' ' '; }
ab_rotated() { [ "$(spis_ab)" != "$1" ]; }
before=$(spis_ab)
e0=$(epoch); rotate peer-cut
check "a<->b rotate while c is cut off (new a->b SA within 60s)" wait_for 60 ab_rotated "$before"
check "c's pods still reach a's over the old SAs" ip netns exec pc1 ping -c 3 -i 0.3 -W 2 "$pa"
t0=$(now)
ip netns exec c nft delete table ip cut
check "once c is reachable every node converges on epoch $((e0 + 1)) (120s)" wait_for 120 converged $((e0 + 1))
echo "RECOVERY peer-unreachable $(( $(now) - t0 ))s"

log "fault 3: node b rebooted (namespace, pods and kernel state gone; identity key kept on disk)"
agent_kill b
ip netns delete pb1; ip netns delete b; ip link del pb 2>/dev/null
rm -rf /run/cl/b /var/lib/cl/b/ipam
t0=$(now)
node_up b 198.18.0.2
agent_start b f-b 198.18.0.2
wait_for 90 agent_ready b || { agent_log_tail b; fail "rebooted agent b not ready"; }
pb=$(pod_add b pb1) || fail "CNI ADD after reboot"
check "a's pod reaches the rebooted node's new pod (90s)" wait_for 90 ip netns exec pa1 ping -c 1 -W 1 "$pb"
echo "RECOVERY node-reboot $(( $(now) - t0 ))s"
kill $bgp 2>/dev/null; ip netns exec pa1 ping -i 0.2 -W 1 -p $MARKER_HEX "$pb" > /tmp/bg2.txt 2>&1 & bgp=$!

log "fault 4: node c removed from the cluster, then added back"
k delete node f-c >/dev/null
check "a drops its SAs with removed node c (30s)" wait_for 30 sh -c "! /sbin/ip -n a xfrm state | grep -q 'dst 198.18.0.3'"
check_not "a's pod can no longer reach c's pod (blocked, not clear)" ip netns exec pa1 ping -c 2 -W 1 "$pc"
t0=$(now)
k8s_node f-c 198.18.0.3 10.244.3.0/24
agent_stop c; agent_start c f-c 198.18.0.3   # a kubelet would restart the DaemonSet pod
check "c is back: a's pod reaches c's pod (120s)" wait_for 120 ip netns exec pa1 ping -c 1 -W 1 "$pc"
echo "RECOVERY node-readded $(( $(now) - t0 ))s"

log "fault 5: node c revoked"
k patch rotationpolicy faults --type=merge -p '{"spec":{"revokedNodes":["f-c"]}}' >/dev/null || fail "revoke"
t0=$(now)
OTHERS=$(echo $NODES | tr ' ' '\n' | grep -v '^c$' | tr '\n' ' ')
dropped_c() { for x in $OTHERS; do /sbin/ip -n $x xfrm state | grep -q 198.18.0.3 && return 1; done; return 0; }
check "every other node ($OTHERS) drops its SAs with c within 30s" wait_for 30 dropped_c
echo "RECOVERY revocation-enforced $(( $(now) - t0 ))s"
check_not "c's pod cannot reach a's pod" ip netns exec pc1 ping -c 2 -W 1 "$pa"
check "the others still reach each other: $OTHERS" mesh $OTHERS

kill $bgp 2>/dev/null
ip netns exec pc1 ping -c 3 -W 1 -p $MARKER_HEX "$pa" >/dev/null 2>&1
capture_stop
check "across all faults the wire never carried pod clear text nor the marker" wire_report /tmp/wire.pcap 10.244.0.0/16
grep -h 'packets transmitted' /tmp/bg.txt /tmp/bg2.txt | sed 's/^/  background traffic: /'
log "faults passed"
