#!/bin/sh
# Benchmark payload for the lab VM (run by bench/e2e.sh, not by the test tiers). Prints "BENCH key value"
# lines. Real agents, real operator, real API server (on the host), real kernel ESP in qemu (TCG:
# absolute throughput is that of an emulated CPU; the encrypted/clear ratio is the meaningful figure).
# Convergence is timed from the Node objects' creation until every pod pings every other node's pod
# (pods are blocked until their pair is keyed: fail-closed), with the agents started right after.
. /repo/tests/vm/lib.sh
lab_api_ready
CASE_NODES=${BENCH_NODES:-5}
NODES=$(case_nodes); N=$(echo $NODES | wc -w)
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$(cat /tmp/agent-$1.pid)/status; }
underlay_up
for x in $NODES; do node_up $x 198.18.0.$(node_index $x); done
lab_policy bench aes-gcm-128
operator_start
for x in $NODES; do identities agent b-$x /run/cl/$x.kubeconfig || fail "token"; done   # before any clock starts
join() { # TAG NODE...: Node objects, then the agents (as a DaemonSet would start them), then one
  # pod each; prints when each step was done (ms since $t0): kubectl and cnitool start slowly in TCG
  tag=$1; shift
  for x in "$@"; do i=$(node_index $x); k8s_node b-$x 198.18.0.$i 10.244.$i.0/24; done
  echo "BENCH ${tag}_nodes_created_at_ms $(( $(now_ms) - t0 ))"
  for x in "$@"; do agent_start $x b-$x 198.18.0.$(node_index $x); done
  for x in "$@"; do wait_for 120 agent_ready $x || fail "agent $x not ready"; done
  echo "BENCH ${tag}_agents_ready_at_ms $(( $(now_ms) - t0 ))"
  for x in "$@"; do eval "p$x=\$(pod_add $x p${x}1)" || fail "CNI ADD on $x"; done
  echo "BENCH ${tag}_pods_created_at_ms $(( $(now_ms) - t0 ))"
}

# phase 1: two nodes (one peer each)
t0=$(now_ms)
join phase1 a b
wait_for 120 mesh a b || fail "2 nodes never converged"
echo "BENCH convergence_2_nodes_ms $(( $(now_ms) - t0 ))"
sleep 5
echo "BENCH agent_rss_kb_1_peer $(rss_kb a)"

# phase 2: the other nodes join
t0=$(now_ms)
join phase2 $(echo $NODES | cut -d' ' -f3-)
wait_for 240 mesh $NODES || fail "$N nodes never converged"
echo "BENCH convergence_${N}_nodes_ms $(( $(now_ms) - t0 )) (the last $((N - 2)) joining)"
sleep 5
echo "BENCH agent_rss_kb_$((N - 1))_peers $(rss_kb a)"

# cluster-wide rotation: annotate -> every CipherlaneNode at the new epoch
e0=$(k get rotationpolicy bench -o jsonpath='{.status.epoch}')
t0=$(now_ms)
k annotate rotationpolicy bench cipherlane.io/rotate=bench-$$ --overwrite >/dev/null
wait_for 240 all_at_epoch b $((e0 + 1)) $NODES || fail "rotation did not converge"
echo "BENCH rotation_${N}_nodes_ms $(( $(now_ms) - t0 ))"

# throughput: pod->pod over ESP against node->node in clear, same VM, same path through the bridge
ip netns exec pb1 iperf3 -s -D -1 >/dev/null 2>&1; sleep 1
enc=$(ip netns exec pa1 iperf3 -c "$pb" -t 5 -f m 2>/dev/null | awk '/receiver/ {print $7}')
ip netns exec b iperf3 -s -D -1 >/dev/null 2>&1; sleep 1
clr=$(ip netns exec a iperf3 -c 198.18.0.2 -t 5 -f m 2>/dev/null | awk '/receiver/ {print $7}')
echo "BENCH throughput_esp_mbit $enc"
echo "BENCH throughput_clear_mbit $clr"
echo "BENCH throughput_ratio $(awk -v e="$enc" -v c="$clr" 'BEGIN { if (c > 0) printf "%.2f", e / c; else print "n/a" }')"
