#!/usr/bin/env bash
# tests/run-tier.sh unit|integration|vm
#
#   unit         cargo test (tests that need no root, no cluster) + tests/tiers/unit/*.sh
#   integration  root: the lab's real kube-apiserver + etcd, network namespaces on this host;
#                cargo test -- --ignored (the tests marked "integration: ...") + tests/tiers/integration/*.sh
#   vm           one qemu VM with real kernel ESP running every case in tests/vm/cases/ + tests/tiers/vm/*.sh
#
# A tier that cannot run (not root, no qemu, the API server does not start) FAILS, loudly; it never
# passes without doing its work. Prints "TIER <name>: N passed, N failed" last.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tier=${1:-}
lab=${CIPHERLANE_LAB:-$repo/.cache/lab}
results=$lab/results; mkdir -p "$results"
say() { printf '\033[1m[%s]\033[0m %s\n' "$tier" "$*" >&2; }
passed=0; failed=0; failures=()
count_cargo() { # LOGFILE: add cargo's "test result" lines to the totals
  local p f
  read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
                       END { print p + 0, f + 0 }' "$1")
  passed=$((passed + p)); failed=$((failed + f))
}
run_scripts() { # DIR: every *.sh is one check
  local s
  for s in "$repo"/tests/tiers/"$1"/*.sh; do
    [ -e "$s" ] || continue
    say "running $(basename "$s")"
    if bash "$s"; then passed=$((passed + 1)); echo "PASS $1/$(basename "$s" .sh)"
    else failed=$((failed + 1)); failures+=("$1/$(basename "$s" .sh)"); echo "FAIL $1/$(basename "$s" .sh)"; fi
  done
}
need_root() { [ "$(id -u)" = 0 ] || { say "FATAL: the $tier tier needs root (network namespaces, XFRM)"; echo "TIER $tier: 0 passed, 1 failed"; exit 1; }; }
start_lab() { # starts the lab API server unless it runs already; stops it at exit only if this tier started it
  local was_running=0
  "$repo/tests/lab/apiserver.sh" status >/dev/null 2>&1 && was_running=1
  "$repo/tests/lab/apiserver.sh" start || { say "FATAL: the lab API server did not start"; echo "TIER $tier: 0 passed, 1 failed"; exit 1; }
  # shellcheck disable=SC1091
  source "$lab/env"
  [ $was_running = 1 ] || trap '"$repo/tests/lab/apiserver.sh" stop' EXIT
}

run_cargo_tests() { # NAME [ARGS after --]: cargo test --workspace, counted; a build failure counts as a failure
  local name=$1 log=$results/$1-cargo.log rc; shift
  cargo test --workspace --color never -- "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  count_cargo "$log"
  if [ "$rc" != 0 ] && ! grep -aq '^test result: FAILED' "$log"; then
    failed=$((failed + 1)); failures+=("cargo test $* (build failed)")
  fi
  grep -aq '^test result: FAILED' "$log" && failures+=("cargo test $*")
  true
}

case $tier in
  unit)
    say "cargo test --workspace (unit and in-memory tests; no root, no cluster)"
    run_cargo_tests unit
    run_scripts unit
    ;;
  integration)
    need_root
    # a fresh API server: tests that list cluster-wide objects must not see what a demo or an
    # earlier run left behind (this wipes the lab's etcd; LAB_REUSE=1 keeps a running one)
    [ "${LAB_REUSE:-0}" = 1 ] || "$repo/tests/lab/apiserver.sh" stop >/dev/null 2>&1 || true
    start_lab
    say "cargo test --workspace -- --ignored (real API server at $KUBECONFIG, namespaces on this host)"
    run_cargo_tests integration --ignored --test-threads=1
    run_scripts integration
    ;;
  vm)
    need_root
    [ "${LAB_REUSE:-0}" = 1 ] || "$repo/tests/lab/apiserver.sh" stop >/dev/null 2>&1 || true
    start_lab
    say "building the workspace's binaries for the VM"
    cargo build --workspace --bins --quiet || { echo "TIER vm: 0 passed, 1 failed"; exit 1; }
    cases=("$repo"/tests/vm/cases/*.sh)
    say "one VM for ${#cases[@]} case(s)"
    "$repo/tests/vm/run.sh" "${cases[@]}" 2>&1 | tee "$results/vm.log"
    grep -aE '^(PASS|FAIL) vm/' "$results/vm.log" > "$results/vm.summary" || true
    p=$(grep -c '^PASS' "$results/vm.summary"); f=$(grep -c '^FAIL' "$results/vm.summary")
    passed=$((passed + p)); failed=$((failed + f))
    if [ $((p + f)) -lt ${#cases[@]} ]; then failed=$((failed + ${#cases[@]} - p - f)); failures+=("vm: cases without a result"); fi
    [ "$f" -gt 0 ] && failures+=($(grep '^FAIL' "$results/vm.summary" | awk '{print $2}'))
    run_scripts vm
    ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
[ ${#failures[@]} -gt 0 ] && say "failures: ${failures[*]}"
echo "TIER $tier: $passed passed, $failed failed"
echo "$passed $failed" > "$results/$tier.counts"
[ "$failed" = 0 ] && [ ${#failures[@]} = 0 ]
