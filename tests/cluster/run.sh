#!/usr/bin/env bash
# tests/cluster/run.sh [-v]: the cluster tier. Prepares the nodes' binaries and the images
# (prepare.sh), starts a fresh control plane with the controller manager and the scheduler
# (apiserver.sh start-cluster), and runs tests/cluster/cases/cluster.sh in one VM of VM_MEM MiB
# (default 6144) with CASE_CLUSTER_NODES nodes (default 2; the full run uses 3). The lab is stopped
# afterwards. Exit status: the case's.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
say() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
api=$repo/tests/lab/apiserver.sh
# the control plane stops with the tier (it is started afresh; restarting a lab here would leave
# servers holding the caller's VM lock file descriptor)
trap '"$api" stop >/dev/null 2>&1' EXIT
t0=$(date +%s)
"$repo/tests/cluster/prepare.sh" || { say "FAIL: prepare.sh"; exit 1; }
"$api" stop >/dev/null 2>&1 || true
"$api" start-cluster || { say "FAIL: the control plane did not start"; exit 1; }
say "host side ready after $(( $(date +%s) - t0 ))s; booting the VM (${VM_MEM:-6144} MiB, ${CASE_CLUSTER_NODES:-2} nodes)"
export CASE_CLUSTER_NODES=${CASE_CLUSTER_NODES:-2}
VM_MEM=${VM_MEM:-6144} VM_TIMEOUT=${VM_TIMEOUT:-1900} VM_CASE_TIMEOUT=${VM_CASE_TIMEOUT:-1500} "$repo/tests/vm/run.sh" "$@" "$repo/tests/cluster/cases/cluster.sh"
rc=$?
say "cluster tier took $(( $(date +%s) - t0 ))s (exit $rc)"
exit $rc
