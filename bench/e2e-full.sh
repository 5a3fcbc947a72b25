#!/usr/bin/env bash
# The full end-to-end suite: the e2e scenario (pods, ESP-only wire, rotations on demand, on schedule
# and by volume under ping floods, an agent killed) and every fault, with N nodes (default 5) in one
# lab VM. CI runs the same two cases with 3 nodes (the vm tier); this is the long run.
# Usage: bench/e2e-full.sh [N]. Writes bench/results/e2e-full-Nnodes.txt (checks, recovery times,
# ping losses). Exits non-zero when any check fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-5}
"$repo/tests/setup.sh" >/dev/null
was=0; "$repo/tests/lab/apiserver.sh" status >/dev/null 2>&1 && was=1
[ $was = 1 ] || "$repo/tests/lab/apiserver.sh" start
[ $was = 1 ] || trap '"$repo/tests/lab/apiserver.sh" stop' EXIT
(cd "$repo" && cargo build --workspace --bins --quiet)
rc=0
CASE_NODES=$n VM_MEM=2048 VM_CASE_TIMEOUT=1500 "$repo/tests/vm/run.sh" \
  "$repo/tests/vm/cases/e2e-encrypted-pods.sh" "$repo/tests/vm/cases/e2e-faults.sh" || rc=$?
logs=$repo/.cache/lab/vm/out
res=$repo/bench/results/e2e-full-${n}nodes.txt
mkdir -p "$(dirname "$res")"
{
  echo "# bench/e2e-full.sh $n on $(date -u +%Y-%m-%dT%H:%MZ): $n nodes in the lab VM (qemu TCG), debug binaries,"
  echo "# real kube-apiserver on the host. vm exit code: $rc"
  for c in e2e-encrypted-pods e2e-faults; do
    echo "## $c (exit $(cat "$logs/$c.rc" 2>/dev/null || echo none))"
    grep -aE '^(ok |FAIL|RECOVERY|  flood:|  background traffic:)' "$logs/$c.log" || true
  done
} > "$res"
cat "$res"
[ "$rc" = 0 ] && ! grep -q '^FAIL' "$res"
