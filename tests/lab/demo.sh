#!/usr/bin/env bash
# The README's demo command: installs what the lab needs, starts the lab's real API server, boots the
# lab VM and shows pod traffic between two nodes encrypted by the kernel's IPsec, step by step, with a
# capture of the underlay that shows ESP only. Stops everything it started when it ends.
# DEMO_CLUSTER=1: the same on a real cluster (kubelets, containerd, kube-proxy, `helm install`).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
lab=${CIPHERLANE_LAB:-$repo/.cache/lab}
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

step "1/4 installing what the lab needs (Debian packages, the Go-built kube-apiserver/etcd/kubectl/helm/cnitool, the Rust workspace)"
"$repo/tests/setup.sh" >/dev/null

step "2/4 starting the real kube-apiserver and etcd on 127.0.0.1"
was_running=0
"$repo/tests/lab/apiserver.sh" status >/dev/null 2>&1 && was_running=1
"$repo/tests/lab/apiserver.sh" start
[ $was_running = 1 ] || trap '"$repo/tests/lab/apiserver.sh" stop' EXIT
# shellcheck disable=SC1091
source "$lab/env"
kubectl version 2>/dev/null | sed -n 2p

step "3/4 booting the lab VM (Debian's kernel with ESP, software emulation): three nodes, each running
     cipherlane-agent; the operator; pods made by the cipherlane CNI plugin through cnitool"
scenario=${DEMO_SCENARIO:-$repo/tests/vm/cases/e2e-encrypted-pods.sh}
if [ "${DEMO_CLUSTER:-0}" = 1 ]; then
  # the real cluster instead: kubelets in the VM register with a control plane on this host, and the
  # chart is installed with helm (tests/cluster/run.sh; it restarts the lab in cluster mode)
  scenario=$repo/tests/cluster/cases/cluster.sh
  "$repo/tests/cluster/run.sh" -v || true
else
  "$repo/tests/vm/run.sh" -v "$scenario" || true
fi

step "4/4 result"
name=$(basename "$scenario" .sh)
if [ "$(cat "$lab/vm/out/$name.rc" 2>/dev/null)" = 0 ]; then
  echo "What the API server recorded (the agents and the operator wrote these):"
  kubectl get nodes -o custom-columns='NODE:.metadata.name,INTERNAL-IP:.status.addresses[0].address,POD-CIDR:.spec.podCIDR' 2>/dev/null | grep -E 'NODE|e2e-'
  kubectl get cipherlanenodes 2>/dev/null
  kubectl get rotationpolicies 2>/dev/null
  echo
  echo "Pod traffic between the nodes crossed the underlay as ESP only, the clear-text marker never appeared,"
  echo "and the on-demand rotation (kubectl annotate rotationpolicy e2e cipherlane.io/rotate=...) lost no packet."
  echo "Full log: $lab/vm/out/$name.log   VM console: $lab/vm/console.log"
  echo "Next: tests/run-all.sh runs every test tier; docs/ explains the design."
else
  echo "The scenario FAILED; see $lab/vm/out/$name.log and $lab/vm/console.log"
  exit 1
fi
