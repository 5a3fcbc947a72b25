#!/bin/sh
# End to end: three nodes (CASE_NODES=5: five), each running the real agent against the lab's real API server; pods made
# by the real CNI plugin through cnitool; the agents exchange keys and program the kernel; pod traffic
# between nodes crosses the underlay as ESP only. Then an on-demand rotation (kubectl patch) under a
# 100/s ping flood loses nothing, and a killed agent leaves the datapath working.
. /repo/tests/vm/lib.sh
lab_api_ready
NODES=$(case_nodes); N=$(echo $NODES | wc -w)
log "$N nodes on the underlay; Node objects in the API server"
underlay_up
nodes_up e2e
log "a RotationPolicy for every node (aes-gcm-128, grace period 5s)"
lab_policy e2e aes-gcm-128
log "starting the operator and the agents"
operator_start
for x in $NODES; do agent_start $x e2e-$x 198.18.0.$(node_index $x); done
for x in $NODES; do
  wait_for 90 agent_ready $x || { agent_log_tail $x; fail "agent $x not ready"; }
done
echo "ok   all $N agents ready (conflist written, fail-closed in place)"
k get cipherlanenodes -o wide 2>&1 | sed 's/^/  /'

log "pods through the CNI plugin (cnitool add)"
for x in $NODES; do eval "p$x=\$(pod_add $x p${x}1)" || fail "CNI ADD on $x"; done
echo "  pods: $(for x in $NODES; do eval "printf 'p%s1=%s ' $x \$p$x"; done)"
check "pa1 -> pb1 works once the pair is keyed (60s)" wait_for 60 ip netns exec pa1 ping -c 1 -W 1 "$pb"
check "every pod reaches every other node's pod: $((N * (N - 1))) pairs (90s)" wait_for 90 mesh $NODES
ip -n a xfrm state | grep -c '^src' | sed 's/^/  SAs on node a: /'

capture_start /tmp/wire.pcap
check "pod->remote pod pings with the marker, no loss" ip netns exec pa1 ping -c 10 -i 0.1 -W 2 -p $MARKER_HEX "$pb"
check "host->remote pod" ip netns exec a ping -c 3 -i 0.2 -W 2 -p $MARKER_HEX "$pc"
check "pod->peer node IP" ip netns exec pa1 ping -c 3 -i 0.2 -W 2 -p $MARKER_HEX 198.18.0.2
ip netns exec pc1 iperf3 -s -D -1 >/dev/null 2>&1
wait_for 5 ip netns exec pc1 sh -c 'cat /proc/net/tcp | grep -q ":1451 "'
check "TCP pod->remote pod with iperf3 (3s)" ip netns exec pa1 iperf3 -c "$pc" -t 3
grep -h receiver /tmp/check.out | sed 's/^/  iperf3: /'
capture_stop
check "the wire carried ESP only and never the marker" wire_report /tmp/wire.pcap 10.244.0.0/16

log "on-demand rotation under a 100/s ping flood"
epoch0=$(k get rotationpolicy e2e -o jsonpath='{.status.epoch}')
spis_ab() { ip -n a xfrm state | grep -A1 'src 198.18.0.1 dst 198.18.0.2' | grep -o 'spi 0x[0-9a-f]*' | cut -d' ' -f2 | sort | tr '\n' ' '; }
spi0=$(spis_ab)
ip netns exec pa1 ping -i 0.01 -c 1500 -W 1 "$pb" > /tmp/flood.txt 2>&1 & fp=$!
sleep 2
k annotate rotationpolicy e2e cipherlane.io/rotate="e2e-$$" --overwrite >/dev/null || fail "kubectl annotate cipherlane.io/rotate"
wait $fp
grep 'packets transmitted' /tmp/flood.txt | sed 's/^/  flood: /'
check "no packet lost during the rotation" grep -q ' 0% packet loss' /tmp/flood.txt
epoch1=$(k get rotationpolicy e2e -o jsonpath='{.status.epoch}')
echo "  policy epoch: ${epoch0:-none} -> ${epoch1:-none}"
check "the policy's epoch advanced" [ "${epoch1:-0}" -gt "${epoch0:-0}" ]
check "every CipherlaneNode reports the new epoch $epoch1 (30s)" wait_for 30 all_at_epoch e2e "$epoch1" $NODES
k get rotationpolicy e2e 2>&1 | sed 's/^/  /'
sleep 7   # the policy's grace period is 5s
spi1=$(spis_ab)
echo "  a->b SAs before: $spi0 after the grace period: $spi1"
check "after the grace period one new SA a->b remains, the old one is gone" sh -c "[ \"$spi1\" != \"$spi0\" ] && [ $(echo $spi1 | wc -w) = 1 ]"
for x in $NODES; do
  errs=$(xfrm_errors $x)
  [ -z "$errs" ] || { echo "$errs"; fail "XFRM errors counted on $x"; }
done
echo "ok   no XFRM errors counted on any node"

log "scheduled rotation: rotationInterval 15s, under a 100/s ping flood"
e_before=$(k get rotationpolicy e2e -o jsonpath='{.status.epoch}')
ip netns exec pb1 ping -i 0.01 -c 3000 -W 1 "$pc" > /tmp/flood2.txt 2>&1 & fp=$!
k patch rotationpolicy e2e --type=merge -p '{"spec":{"rotationInterval":"15s"}}' >/dev/null || fail "patch rotationInterval"
scheduled() { [ "$(k get rotationpolicy e2e -o jsonpath='{.status.epoch}')" -gt "$e_before" ]; }
check "the operator advances the epoch on schedule (60s)" wait_for 60 scheduled
k patch rotationpolicy e2e --type=merge -p '{"spec":{"rotationInterval":"1h"}}' >/dev/null
wait $fp
grep 'packets transmitted' /tmp/flood2.txt | sed 's/^/  flood: /'
check "no packet lost during the scheduled rotation" grep -q ' 0% packet loss' /tmp/flood2.txt

log "volume-based re-key: maxPackets 3000 (the kernel's soft limit at 80% tells the agents)"
epoch() { k get rotationpolicy e2e -o jsonpath='{.status.epoch}'; }
e_vol=$(epoch); before=$(spis_ab)
k patch rotationpolicy e2e --type=merge -p '{"spec":{"maxPackets":3000}}' >/dev/null || fail "patch maxPackets"
ip netns exec pa1 ping -i 0.01 -c 3000 -W 1 "$pb" > /tmp/flood3.txt 2>&1
grep 'packets transmitted' /tmp/flood3.txt | sed 's/^/  flood: /'
check "no packet lost while SAs hit their packet limit" grep -q ' 0% packet loss' /tmp/flood3.txt
echo "  a->b SAs before: $before now: $(spis_ab); epoch $e_vol -> $(epoch)"
volume_rekeyed() { [ "$(spis_ab)" != "$before" ] && [ "$(epoch)" = "$e_vol" ]; }
check "the a->b SA was replaced by a volume re-key, without a new epoch" volume_rekeyed
k patch rotationpolicy e2e --type=json -p '[{"op":"remove","path":"/spec/maxPackets"}]' >/dev/null

log "killing agent a (SIGKILL) and restarting it under a 20/s ping flood: nothing may be lost"
ip netns exec pa1 ping -i 0.05 -c 800 -W 1 "$pb" > /tmp/killflood.txt 2>&1 & kp=$!
sleep 2
agent_kill a
check "pa1 -> pb1 still works with agent a dead" ip netns exec pa1 ping -c 5 -i 0.2 -W 2 "$pb"
check_not "traffic to an unknown remote pod CIDR stays blocked" ip netns exec pa1 ping -c 1 -W 1 10.244.99.9
agent_start a e2e-a 198.18.0.1
wait_for 90 agent_ready a || { agent_log_tail a; fail "agent a did not come back"; }
check "after the restart pa1 -> pb1 works" ip netns exec pa1 ping -c 5 -i 0.2 -W 2 "$pb"
wait $kp
grep 'packets transmitted' /tmp/killflood.txt | sed 's/^/  flood: /'
check "no packet lost while agent a was killed and restarted (40 s of pings)" grep -q ' 0% packet loss' /tmp/killflood.txt
check "with every agent back, the full mesh still works" mesh $NODES
for x in $NODES; do agent_log_tail $x 8; done
echo "--- operator log (tail) ---"; tail -n 15 /tmp/operator.log
log "e2e passed"
