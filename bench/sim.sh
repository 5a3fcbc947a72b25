#!/usr/bin/env bash
# Many simulated nodes on this host: the real kube-apiserver and etcd, the real operator and one real
# cipherlane-agent process per node (each with the chart's RBAC and a Pod-bound token, as deployed), with the agents' key exchange over loopback (127.1.0.x), but
# with the RECORDING datapath: nothing is programmed into a kernel and nothing is encrypted. Each
# agent applies its plans to an in-memory XFRM state with the kernel's rules and writes it to
# datapath-recording.json. What this measures is the control plane: API watches, key exchanges,
# plans, status; and the agents' memory with many peers.
#
# Usage: bench/sim.sh [N] [RESULTS_FILE]   (default 101 nodes, i.e. 100 peers each; SIM_AGENT_LOG=info for agent logs;
#                                          bench/results/sim.txt). SIM_PROFILE=debug uses debug builds.
#
# Phases: 2 nodes (convergence, RSS with 1 peer); the other N-2 join (convergence from Node
# creation until every CipherlaneNode reports N-1 established peers and every recording holds an SA
# pair to each peer that matches the peer's recording); a cluster-wide rotation (kubectl annotate
# until every CipherlaneNode reports the new epoch). Fails when any phase does not converge.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-101}
out=${2:-$repo/bench/results/sim.txt}
profile=${SIM_PROFILE:-release}
timeout_s=${SIM_TIMEOUT:-900}
[ "$n" -ge 3 ] && [ "$n" -le 250 ] || { echo "sim.sh: N must be 3..250 (got $n)" >&2; exit 2; }
say() { printf '\033[1m[sim]\033[0m %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

"$repo/tests/setup.sh" >/dev/null
if [ "$profile" = release ]; then
  (cd "$repo" && cargo build --release --bins --quiet)
fi
bin=$repo/target/$profile
[ -x "$bin/cipherlane-agent" ] && [ -x "$bin/cipherlane-operator" ] || die "no binaries in $bin"

# A control plane of its own (own ports, own etcd), so the simulation never mixes with the lab's.
export CIPHERLANE_LAB=$repo/.cache/lab-sim LAB_APISERVER_PORT=${SIM_APISERVER_PORT:-17443} LAB_ETCD_PORT=${SIM_ETCD_PORT:-13379}
work=$CIPHERLANE_LAB/run
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$repo/tests/lab/apiserver.sh" stop quiet >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$repo/tests/lab/apiserver.sh" stop quiet >/dev/null 2>&1 || true
"$repo/tests/lab/apiserver.sh" start
# shellcheck disable=SC1091
source "$CIPHERLANE_LAB/env"
rm -rf "$work"; mkdir -p "$work"
now_ms() { date +%s%3N; }
node_ip() { echo "127.1.0.$1"; }
node_name() { printf 'sim-%03d' "$1"; }

kubectl apply --server-side -f "$repo/deploy/crds/" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/cipherlanenodes.cipherlane.io crd/rotationpolicies.cipherlane.io >/dev/null
HELM=$CIPHERLANE_TOOLS/helm sh "$repo/tests/lab/identities.sh" install
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: cipherlane.io/v1alpha1
kind: RotationPolicy
metadata: {name: sim}
spec: {suite: aes-gcm-128, rotationInterval: 1h, gracePeriod: 5s}
YAML


sh "$repo/tests/lab/identities.sh" operator "$work/operator.kubeconfig"
env KUBECONFIG="$work/operator.kubeconfig" RUST_LOG=warn POD_NAME=sim-operator \
  "$bin/cipherlane-operator" --lease-namespace cipherlane-system --lease-name cipherlane-operator \
  >"$work/operator.log" 2>&1 &
pids+=($!)
say "Pod-bound tokens for $n agents (before any Node exists, as for a DaemonSet's pods)"
for i in $(seq 1 "$n"); do
  sh "$repo/tests/lab/identities.sh" agent "$(node_name "$i")" "$work/$(node_name "$i")/kubeconfig"
done

create_nodes() { # FIRST LAST: Node objects (podCIDR from node IPAM), one apply
  local i
  { echo "apiVersion: v1"; echo "kind: List"; echo "items:"
    for i in $(seq "$1" "$2"); do
      printf -- '- apiVersion: v1\n  kind: Node\n  metadata: {name: %s, labels: {sim.cipherlane.io/node: "true"}}\n  spec: {podCIDR: 10.100.%d.0/24, podCIDRs: [10.100.%d.0/24]}\n' \
        "$(node_name "$i")" "$i" "$i"
    done; } | kubectl apply -f - >/dev/null
}
agent_pid=()
start_agents() { # FIRST LAST
  local i d
  for i in $(seq "$1" "$2"); do
    d=$work/$(node_name "$i"); mkdir -p "$d"
    env KUBECONFIG="$d/kubeconfig" RUST_LOG=${SIM_AGENT_LOG:-warn} "$bin/cipherlane-agent" run \
      --datapath recording --node-name "$(node_name "$i")" --node-ip "$(node_ip "$i")" \
      --cluster-pod-cidrs 10.100.0.0/16 --http-addr "$(node_ip "$i"):9472" \
      --state-dir "$d/run" --data-dir "$d/data" --cni-conf-dir "$d/cni" --cni-log-dir "$d/log" \
      >"$d/agent.log" 2>&1 &
    pids+=($!); agent_pid[$i]=$!
  done
}

# Every CipherlaneNode of nodes 1..K reports K-1 established peers.
established() { # K
  local k=$1
  kubectl get cipherlanenodes -o json | jq -e --argjson k "$k" \
    '[.items[] | select((.metadata.name | ltrimstr("sim-") | tonumber) <= $k)
               | select(.status.peersEstablished == ($k - 1))] | length == $k' >/dev/null
}
# Every recording of nodes 1..K holds an SA pair to each other node, and A's newest outbound SPI to B
# is one of B's inbound SPIs from A (the key exchange agreed on both ends). Prints mismatches.
recordings_agree() { # K
  local k=$1 files=() i
  for i in $(seq 1 "$k"); do
    files+=("$work/$(node_name "$i")/run/datapath-recording.json")
    [ -f "${files[-1]}" ] || { echo "no recording for $(node_name "$i")"; return 1; }
  done
  jq -rs --argjson k "$k" '
    (map({key: .nodeIp, value: .}) | from_entries) as $by
    | [ .[] as $a | $a.peers[] as $p
        | select(($p.inboundSpis | length) == 0 or ($p.outboundSpis | length) == 0
                 or ($p.encryptedTo | length) < 2
                 or (($by[$p.nodeIp].peers // [] | map(select(.nodeIp == $a.nodeIp))[0].inboundSpis // [])
                     | index($p.outboundSpis[-1])) == null)
        | "\($a.node) -> \($p.nodeIp)" ]
    | if length == 0 and ([$by[] | .peers | length] | all(. == ($k - 1))) then empty
      elif length == 0 then "a recording holds a peer count other than \($k - 1)" else .[] end' \
    "${files[@]}"
}
wait_for() { # SECONDS CMD...: polls every second
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 1; done
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_s() { awk '{printf "%.2f\n", ($14 + $15) / 100}' "/proc/$1/stat"; }
# Sums a counter over every agent's /metrics (the handshakes the cluster needed, refusals by kind).
metric_sum() { # NAME_AND_LABELS
  local i
  for i in $(seq 1 "$n"); do curl -s --max-time 5 "http://$(node_ip "$i"):9472/metrics"; done |
    awk -v m="$1" 'index($0, m " ") == 1 {s += $NF} END {printf "%d\n", s}'
}
handshake_figures() { # what the key exchange did, cluster-wide
  echo "initiated $(metric_sum 'cipherlane_handshakes_total{role="initiator",outcome="started"}')" \
    "completed $(metric_sum 'cipherlane_handshakes_total{role="initiator",outcome="established"}')" \
    "(pairs: $((n * (n - 1) / 2)))," \
    "refused: collision $(metric_sum 'cipherlane_handshake_rejections_total{reason="collision"}')" \
    "overloaded $(metric_sum 'cipherlane_handshake_rejections_total{reason="overloaded"}')" \
    "timeout $(metric_sum 'cipherlane_handshake_rejections_total{reason="timeout"}')"
}
stats() { sort -n | awk '{a[NR] = $1} END {printf "min %d median %d max %d", a[1], a[int((NR + 1) / 2)], a[NR]}'; }

results=()
record() { results+=("$1 $2"); say "$1 = $2"; }

say "phase 1: 2 nodes"
t0=$(now_ms)
create_nodes 1 2; start_agents 1 2
wait_for "$timeout_s" established 2 || die "2 nodes did not converge (see $work/*/agent.log)"
record convergence_2_nodes_ms $(( $(now_ms) - t0 ))
bad=$(recordings_agree 2 2>&1 || echo "cannot read the recordings")
[ -z "$bad" ] || die "recordings of 2 nodes disagree: $bad"
sleep 5
record agent_rss_kb_1_peer "$(rss_kb "${agent_pid[1]}")"

say "phase 2: $((n - 2)) more nodes join (one Node apply, agents started at once, as a DaemonSet rollout)"
t0=$(now_ms)
create_nodes 3 "$n"; start_agents 3 "$n"
wait_for "$timeout_s" established "$n" || {
  kubectl get cipherlanenodes -o custom-columns=NAME:.metadata.name,PEERS:.status.peersSummary | head -n 20 >&2
  die "$n nodes did not converge in ${timeout_s}s"; }
t_api=$(( $(now_ms) - t0 ))
wait_for 60 eval '[ -z "$(recordings_agree '"$n"')" ]' || die "recordings disagree: $(recordings_agree "$n" | head -n 5)"
record convergence_${n}_nodes_ms "$t_api"
record recordings_checked "$n nodes x $((n - 1)) peers, SA pairs match on both ends"
sleep 5
rss=$(for i in $(seq 1 "$n"); do rss_kb "${agent_pid[$i]}"; done | stats)
record agent_rss_kb_$((n - 1))_peers "$rss"
cpu=$(for i in $(seq 1 "$n"); do cpu_s "${agent_pid[$i]}"; done | awk '{s += $1} END {printf "%.1f", s}')
record agents_cpu_s_total_after_convergence "$cpu"
record handshakes_to_converge "$(handshake_figures)"

say "phase 3: cluster-wide rotation"
e0=$(kubectl get rotationpolicy sim -o jsonpath='{.status.epoch}')
at_epoch() { # E: every CipherlaneNode reports epoch E
  kubectl get cipherlanenodes -o json | jq -e --argjson e "$1" --argjson k "$n" \
    '[.items[] | select(.status.epoch == $e)] | length == $k' >/dev/null
}
t0=$(now_ms)
kubectl annotate rotationpolicy sim cipherlane.io/rotate="sim-$(date +%s)" --overwrite >/dev/null
wait_for "$timeout_s" at_epoch $((e0 + 1)) || die "rotation to epoch $((e0 + 1)) did not converge"
record rotation_${n}_nodes_ms $(( $(now_ms) - t0 ))
wait_for 60 eval '[ -z "$(recordings_agree '"$n"')" ]' || die "recordings disagree after the rotation"
rss=$(for i in $(seq 1 "$n"); do rss_kb "${agent_pid[$i]}"; done | stats)
record agent_rss_kb_$((n - 1))_peers_after_rotation "$rss"
record handshakes_after_rotation "$(handshake_figures)"
dead=0; for i in $(seq 1 "$n"); do kill -0 "${agent_pid[$i]}" 2>/dev/null || dead=$((dead + 1)); done
[ "$dead" = 0 ] || die "$dead agent(s) exited during the run"

mkdir -p "$(dirname "$out")"
{
  echo "# bench/sim.sh $n on $(date -u +%Y-%m-%dT%H:%MZ), $profile binaries, $(nproc) CPUs shared by everything below."
  echo "# SIMULATION: the real kube-apiserver/etcd, operator and $n agent processes on one host, key exchange over"
  echo "# loopback, but the RECORDING datapath: nothing was programmed into a kernel and nothing was encrypted."
  printf '%s\n' "${results[@]}"
} > "$out"
cat "$out"
