#!/bin/sh
# Benchmark payload for the lab VM (run by bench/e2e.sh, not by the test tiers). Prints "BENCH key value"
# lines. Real agents, real operator, real API server (on the host), real kernel ESP in qemu (TCG:
# absolute throughput is that of an emulated CPU; the encrypted/clear ratio is the meaningful figure).
. /repo/tests/vm/lib.sh
lab_api_ready
N=${BENCH_NODES:-5}
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$(cat /tmp/agent-$1.pid)/status; }
underlay_up
for j in $(seq 1 $N); do node_up n$j 198.18.0.$j; k8s_node b-n$j 198.18.0.$j 10.244.$j.0/24; done   # (node_up sets $n)
cat <<YAML | k apply -f - >/dev/null || fail "RotationPolicy rejected"
apiVersion: cipherlane.io/v1alpha1
kind: RotationPolicy
metadata: {name: bench, labels: {lab.cipherlane.io/vm: "true"}}
spec: {suite: aes-gcm-128, rotationInterval: 1h, gracePeriod: 5s}
YAML
operator_start

# phase 1: two nodes (one peer each)
t0=$(now_ms)
agent_start n1 b-n1 198.18.0.1; agent_start n2 b-n2 198.18.0.2
for n in 1 2; do wait_for 120 agent_ready n$n || fail "agent n$n not ready"; done
p1=$(pod_add n1 p1) && p2=$(pod_add n2 p2) || fail "CNI ADD"
wait_for 120 ip netns exec p1 ping -c 1 -W 1 "$p2" || fail "2 nodes never converged"
echo "BENCH convergence_2_nodes_ms $(( $(now_ms) - t0 ))"
sleep 5
echo "BENCH agent_rss_kb_1_peer $(rss_kb n1)"

# phase 2: the other nodes join; convergence = every pod reaches every other pod
t0=$(now_ms)
for n in $(seq 3 $N); do agent_start n$n b-n$n 198.18.0.$n; done
for n in $(seq 3 $N); do wait_for 120 agent_ready n$n || fail "agent n$n not ready"; eval p$n=\$\(pod_add n$n p$n\) || fail "CNI ADD"; done
all_pairs() {
  for a in $(seq 1 $N); do for b in $(seq 1 $N); do
    [ $a = $b ] && continue
    eval dst=\$p$b
    ip netns exec p$a ping -c 1 -W 1 "$dst" >/dev/null 2>&1 || return 1
  done; done
}
wait_for 240 all_pairs || fail "$N nodes never converged"
echo "BENCH convergence_${N}_nodes_ms $(( $(now_ms) - t0 ))"
sleep 5
echo "BENCH agent_rss_kb_$((N - 1))_peers $(rss_kb n1)"

# cluster-wide rotation: annotate -> every CipherlaneNode at the new epoch
e0=$(k get rotationpolicy bench -o jsonpath='{.status.epoch}')
converged() { test "$(k get cipherlanenodes -l lab.cipherlane.io/vm -o jsonpath='{.items[*].status.epoch}' 2>/dev/null; k get cipherlanenodes $(seq -f 'b-n%g' 1 $N) -o jsonpath='{.items[*].status.epoch}')" != "" && \
  [ "$(k get cipherlanenodes $(seq -f 'b-n%g' 1 $N) -o jsonpath='{range .items[*]}{.status.epoch}{"\n"}{end}' | sort -u)" = "$((e0 + 1))" ]; }
t0=$(now_ms)
k annotate rotationpolicy bench cipherlane.io/rotate=bench-$$ --overwrite >/dev/null
wait_for 240 converged || fail "rotation did not converge"
echo "BENCH rotation_${N}_nodes_ms $(( $(now_ms) - t0 ))"

# throughput: pod->pod over ESP against node->node in clear, same VM, same path through the bridge
ip netns exec p2 iperf3 -s -D -1 >/dev/null 2>&1; sleep 1
enc=$(ip netns exec p1 iperf3 -c "$p2" -t 5 -f m 2>/dev/null | awk '/receiver/ {print $7}')
ip netns exec n2 iperf3 -s -D -1 >/dev/null 2>&1; sleep 1
clr=$(ip netns exec n1 iperf3 -c 198.18.0.2 -t 5 -f m 2>/dev/null | awk '/receiver/ {print $7}')
echo "BENCH throughput_esp_mbit $enc"
echo "BENCH throughput_clear_mbit $clr"
echo "BENCH throughput_ratio $(awk -v e="$enc" -v c="$clr" 'BEGIN { if (c > 0) printf "%.2f", e / c; else print "n/a" }')"
