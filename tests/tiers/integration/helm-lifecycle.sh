#!/usr/bin/env bash
# `helm install`, `helm upgrade` and `helm uninstall` of the chart with the real helm against the
# lab's real kube-apiserver. The lab has no kubelet and no controller manager, so this script plays
# their part where the uninstall hooks need it, and nothing more:
#   - it runs each hook Job's own command (taken from the Job's spec) with a token of the hook's own
#     ServiceAccount, so the hook's RBAC is exercised for real, then marks the Job complete as the
#     Job controller would;
#   - it removes the foregroundDeletion finalizer of the deleted agent DaemonSet (it has no pods) and
#     sets the uninstall DaemonSet's status, as the garbage collector and DaemonSet controller would.
# Checks: the CRDs and the default RotationPolicy are installed in one `helm install`; an upgrade
# changes the policy and keeps an admin's on-demand rotation request; uninstall runs the hooks in
# order (agents stopped before the uninstall DaemonSet exists; the wait Job last), then removes the
# release's objects and its hooks, and keeps the CRDs.
# Needs the lab: tests/lab/apiserver.sh start (the integration tier does that). Fails without it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
lab=${CIPHERLANE_LAB:-$repo/.cache/lab}
chart=$repo/charts/cipherlane
ok() { echo "ok   $*"; }
die() { echo "FAIL $*" >&2; exit 1; }

[ -f "$lab/env" ] || die "the lab is not running ($lab/env missing): start it with tests/lab/apiserver.sh start"
# shellcheck disable=SC1091
source "$lab/env"
kubectl get --raw /readyz >/dev/null 2>&1 || die "the lab's kube-apiserver does not answer at $KUBECONFIG: tests/lab/apiserver.sh start"
helm=$CIPHERLANE_TOOLS/helm
[ -x "$helm" ] || die "no helm at $helm (tests/tools/build.sh)"

rel=hl$$
ns=cipherlane-helm-life-$$
fn=$rel-cipherlane
work=$(mktemp -d)
uninstall_pid=
cleanup() {
  set +e
  [ -n "$uninstall_pid" ] && kill "$uninstall_pid" 2>/dev/null
  "$helm" uninstall "$rel" -n "$ns" --no-hooks >/dev/null 2>&1
  kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1
  kubectl delete clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding,rotationpolicy \
    -l "app.kubernetes.io/instance=$rel" --ignore-not-found >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
wait_for() { # SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out after ${t}s waiting for: $what"
}
exists() { kubectl -n "$ns" get "$@" >/dev/null 2>&1; }

# --- install -------------------------------------------------------------------------------------
kubectl create namespace "$ns" >/dev/null
"$helm" install "$rel" "$chart" -n "$ns" --set clusterPodCIDR=10.244.0.0/16 --set "rotationPolicy.name=$rel-default" \
  > "$work/install" 2>&1 || { cat "$work/install"; die "helm install failed"; }
grep -q "Cipherlane .* is installed in namespace $ns" "$work/install" || { cat "$work/install"; die "NOTES.txt was not shown"; }
for crd in cipherlanenodes.cipherlane.io rotationpolicies.cipherlane.io; do
  kubectl get crd "$crd" >/dev/null || die "CRD $crd is not installed"
done
for o in "daemonset $fn-agent" "deployment $fn-operator" "pdb $fn-operator" "serviceaccount $fn-agent"; do
  # shellcheck disable=SC2086
  exists $o || die "$o is missing after helm install"
done
kubectl get validatingadmissionpolicy "$fn-agent-own-node-only" >/dev/null || die "the admission policy is missing"
[ "$(kubectl get rotationpolicy "$rel-default" -o jsonpath='{.spec.suite} {.spec.rotationInterval}')" = "aes-gcm-128 24h" ] ||
  die "the default RotationPolicy is missing or wrong"
if exists daemonset "$fn-uninstall" || exists job "$fn-uninstall-stop-agents"; then die "an uninstall hook ran at install"; fi
ok "helm install: CRDs, workloads, RBAC, admission policy and the default RotationPolicy in one step"

# --- upgrade -------------------------------------------------------------------------------------
kubectl patch rotationpolicy "$rel-default" --type=merge -p '{"spec":{"rotationRequest":"admin-1"}}' >/dev/null
"$helm" upgrade "$rel" "$chart" -n "$ns" --reuse-values --set rotationPolicy.rotationInterval=12h \
  --set encryption.suite=aes-gcm-256 > "$work/upgrade" 2>&1 || { cat "$work/upgrade"; die "helm upgrade failed"; }
got=$(kubectl get rotationpolicy "$rel-default" -o jsonpath='{.spec.suite} {.spec.rotationInterval} {.spec.rotationRequest}')
[ "$got" = "aes-gcm-256 12h admin-1" ] || die "after the upgrade the policy is '$got', want 'aes-gcm-256 12h admin-1'"
[ "$(kubectl -n "$ns" get ds "$fn-agent" -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="CIPHERLANE_SUITE")].value}')" = aes-gcm-256 ] ||
  die "the upgrade did not reach the agent's suite"
ok "helm upgrade: the policy and the agent follow the new values; an admin's rotationRequest survives"

# --- uninstall, with the hooks -------------------------------------------------------------------
"$helm" uninstall "$rel" -n "$ns" --timeout 120s > "$work/uninstall" 2>&1 &
uninstall_pid=$!
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
hook_token() { kubectl -n "$ns" create token "$fn-uninstall" --duration 10m; }
run_job_as_hook() { # JOB: run the Job's container command with the hook ServiceAccount's token
  local args
  args=$(kubectl -n "$ns" get job "$1" -o json | jq -r '.spec.template.spec.containers[0].args | @sh')
  eval "set -- $args"
  kubectl --kubeconfig=/dev/null --server="$server" --certificate-authority="$lab/pki/ca.crt" --token="$(hook_token)" "$@"
}
complete_job() { # JOB: what the Job controller does when the pod exits 0
  local now; now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  kubectl -n "$ns" patch job "$1" --subresource=status --type=merge -p "{\"status\":{\"startTime\":\"$now\",\"completionTime\":\"$now\",\"succeeded\":1,\"conditions\":[
    {\"type\":\"SuccessCriteriaMet\",\"status\":\"True\",\"lastProbeTime\":\"$now\",\"lastTransitionTime\":\"$now\"},
    {\"type\":\"Complete\",\"status\":\"True\",\"lastProbeTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}" >/dev/null
}

wait_for 60 "the stop-agents Job" exists job "$fn-uninstall-stop-agents"
exists daemonset "$fn-agent" || die "the agent DaemonSet was deleted before the stop-agents hook ran"
if exists daemonset "$fn-uninstall"; then die "the uninstall DaemonSet exists before the agents are stopped"; fi
[ "$(kubectl -n "$ns" get job "$fn-uninstall-stop-agents" -o jsonpath='{.spec.template.spec.hostNetwork}')" = true ] ||
  die "the hook Job is not on the host network (no pod network once the agents stop)"
# The Job's command, with the hook's own RBAC; play the garbage collector for the foreground deletion.
run_job_as_hook "$fn-uninstall-stop-agents" > "$work/stop" 2>&1 &
stop_pid=$!
wait_for 30 "the agent DaemonSet to be marked for deletion" \
  sh -c "kubectl -n '$ns' get ds '$fn-agent' -o jsonpath='{.metadata.deletionTimestamp}' | grep -q ."
kubectl -n "$ns" patch ds "$fn-agent" --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]' >/dev/null
wait "$stop_pid" || { cat "$work/stop"; die "the stop-agents command failed with the hook's permissions"; }
if exists daemonset "$fn-agent"; then die "the agent DaemonSet still exists after stop-agents"; fi
complete_job "$fn-uninstall-stop-agents"
ok "uninstall hook 1: the stop-agents Job deletes the agent DaemonSet with its own RBAC, before anything else"

wait_for 60 "the uninstall DaemonSet" exists daemonset "$fn-uninstall"
kubectl -n "$ns" get ds "$fn-uninstall" -o json > "$work/uds.json"
jq -e '.spec.template.spec.initContainers[0].command == ["/usr/local/bin/cipherlane-agent","uninstall"]
       and .spec.template.spec.hostNetwork == true
       and (.spec.template.spec.tolerations | index({"operator":"Exists"}) != null)
       and .spec.template.spec.initContainers[0].securityContext.capabilities.add == ["NET_ADMIN"]' "$work/uds.json" >/dev/null ||
  die "the uninstall DaemonSet does not run 'cipherlane-agent uninstall' with NET_ADMIN on every node"
wait_for 60 "the wait Job" exists job "$fn-uninstall-wait"
# The DaemonSet controller's report: every node (none here) ran the uninstall and is Ready.
gen=$(jq .metadata.generation "$work/uds.json")
kubectl -n "$ns" patch ds "$fn-uninstall" --subresource=status --type=merge -p "{\"status\":{\"observedGeneration\":$gen,
  \"currentNumberScheduled\":0,\"desiredNumberScheduled\":0,\"numberMisscheduled\":0,\"numberReady\":0,\"updatedNumberScheduled\":0,\"numberAvailable\":0}}" >/dev/null
run_job_as_hook "$fn-uninstall-wait" > "$work/wait" 2>&1 || { cat "$work/wait"; die "the wait command failed with the hook's permissions"; }
grep -q "successfully rolled out" "$work/wait" || { cat "$work/wait"; die "the wait command did not see the uninstall DaemonSet finish"; }
complete_job "$fn-uninstall-wait"
ok "uninstall hooks 2-3: the uninstall DaemonSet runs 'cipherlane-agent uninstall' on every node; the wait Job waits for it"

wait "$uninstall_pid" || { cat "$work/uninstall"; uninstall_pid=; die "helm uninstall failed"; }
uninstall_pid=
for o in "daemonset $fn-uninstall" "job $fn-uninstall-wait" "job $fn-uninstall-stop-agents" "serviceaccount $fn-uninstall" \
         "deployment $fn-operator" "serviceaccount $fn-agent"; do
  # shellcheck disable=SC2086
  if exists $o; then die "$o is left after helm uninstall"; fi
done
if kubectl get validatingadmissionpolicy "$fn-agent-own-node-only" >/dev/null 2>&1; then die "the admission policy is left"; fi
kubectl get crd cipherlanenodes.cipherlane.io rotationpolicies.cipherlane.io >/dev/null || die "helm uninstall deleted the CRDs"
ok "helm uninstall: the release's objects and its hooks are gone; the CRDs are kept"
echo "helm-lifecycle: all checks passed"
