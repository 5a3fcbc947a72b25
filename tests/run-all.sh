#!/usr/bin/env bash
# The README's test command: installs what the tests need (tests/setup.sh), then runs every tier —
# unit, integration (real kube-apiserver, namespaces), vm (real kernel ESP in qemu) — and fails if any
# tier fails or cannot run. Prints "N passed, N failed" last, summed over the tiers.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
lab=${CIPHERLANE_LAB:-$repo/.cache/lab}
start=$(date +%s)
"$repo/tests/setup.sh" >/dev/null || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
total_p=0; total_f=0; bad=()
for t in unit integration vm; do
  t0=$(date +%s)
  rm -f "$lab/results/$t.counts"
  "$repo/tests/run-tier.sh" "$t" || bad+=("$t")
  read -r p f < "$lab/results/$t.counts" 2>/dev/null || { p=0; f=1; }
  total_p=$((total_p + p)); total_f=$((total_f + f))
  echo ">>> tier $t: $p passed, $f failed in $(( $(date +%s) - t0 ))s"
done
echo ">>> all tiers in $(( $(date +%s) - start ))s"
[ ${#bad[@]} -gt 0 ] && echo ">>> failed tiers: ${bad[*]}"
echo "$total_p passed, $total_f failed"
[ ${#bad[@]} = 0 ]
