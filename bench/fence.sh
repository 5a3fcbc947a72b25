#!/usr/bin/env bash
# The per-packet cost of the second fence (nftables table inet cipherlane) in the lab VM, as a ratio
# of packets per second with and without it (tests/vm/bench/fence-bench.sh). Writes bench/results/fence.txt.
# Usage: flock /tmp/cipherlane-vm.lock bench/fence.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/tests/setup.sh" >/dev/null
(cd "$repo" && cargo build --bins --quiet)
out=$("$repo/tests/vm/run.sh" "$repo/tests/vm/bench/fence-bench.sh" 2>&1 || true)
echo "$out" | tail -n 25
mkdir -p "$repo/bench/results"; res=$repo/bench/results/fence.txt
{
  echo "# bench/fence.sh on $(date -u +%Y-%m-%dT%H:%MZ): lab VM (qemu TCG, 2 vCPU, on a 2-core host shared with other"
  echo "# engineers' builds), hand-keyed ESP between two node namespaces. Read the ratio, not the absolute rates."
  echo "$out" | grep -E '^(  |# |BENCH )' | grep -v '^  *[0-9]*Z' | sed 's/^BENCH //'
} > "$res"
cat "$res"
[ "$(grep -c '^fence_ratio' "$res")" = 2 ]
