#!/usr/bin/env bash
# End-to-end benchmark in the lab VM: convergence time (2 and N nodes), cluster-wide rotation time,
# agent RSS with 1 and N-1 peers, pod-to-pod TCP throughput over ESP against node-to-node in clear.
# Usage: bench/e2e.sh [N]   (default 5 nodes). Writes bench/results/e2e-Nnodes.txt. Release binaries.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-5}
"$repo/tests/setup.sh" >/dev/null
(cd "$repo" && cargo build --release --bins --quiet)
was=0; "$repo/tests/lab/apiserver.sh" status >/dev/null 2>&1 && was=1
"$repo/tests/lab/apiserver.sh" start
[ $was = 1 ] || trap '"$repo/tests/lab/apiserver.sh" stop' EXIT
out=$(BENCH_NODES=$n VM_BIN=/repo/target/release VM_MEM=2048 "$repo/tests/vm/run.sh" "$repo/tests/vm/bench/e2e-bench.sh" 2>&1 || true)
echo "$out" | grep -v '^\S*Z ' | tail -n 30
mkdir -p "$repo/bench/results"; res=$repo/bench/results/e2e-${n}nodes.txt
{
  echo "# bench/e2e.sh $n on $(date -u +%Y-%m-%dT%H:%MZ): lab VM (qemu TCG, 2 vCPU, Debian kernel $(ls /boot/vmlinuz-* | sort -V | tail -n 1 | sed 's|/boot/vmlinuz-||')),"
  echo "# release binaries, real kube-apiserver on the host. Throughput is an emulated CPU's; read the ratio."
  echo "$out" | grep '^BENCH ' | sed 's/^BENCH //'
} > "$res"
cat "$res"
grep -q convergence "$res" && grep -q "^rotation_" "$res" && grep -q "^throughput_ratio" "$res"
