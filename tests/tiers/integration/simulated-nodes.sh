#!/usr/bin/env bash
# Six simulated nodes on this host (bench/sim.sh, debug builds): the real API server (its own), the
# real operator and six real agents whose key exchange runs over loopback, with the RECORDING
# datapath (nothing programmed, nothing encrypted). Proves the simulation the 100-node benchmark
# uses: every node converges to 5 established peers, the recordings of both ends of every pair agree
# on the SAs, and a cluster-wide rotation reaches every node. bench/sim.sh fails when any does not.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
SIM_PROFILE=debug SIM_TIMEOUT=180 "$repo/bench/sim.sh" 6 "$out"
for key in convergence_6_nodes_ms rotation_6_nodes_ms "agent_rss_kb_5_peers min"; do
  grep -q "^$key [0-9]" "$out" || { echo "FAIL: no $key figure in the simulation's results" >&2; exit 1; }
done
grep -q '^recordings_checked 6 nodes x 5 peers' "$out" || { echo "FAIL: the recordings were not checked" >&2; exit 1; }
grep -q 'nothing was encrypted' "$out" || { echo "FAIL: the results are not labeled as a simulation" >&2; exit 1; }
echo "simulated nodes: OK"
