#!/usr/bin/env bash
# The cluster tier inside the vm tier: a real control plane on the host, CASE_CLUSTER_NODES (2) self-
# registering kubelets in one VM, `helm install` of the chart, encrypted pod traffic, a rotation and
# `helm uninstall` (tests/cluster/run.sh, tests/cluster/cases/cluster.sh).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
"$repo/tests/cluster/run.sh"
