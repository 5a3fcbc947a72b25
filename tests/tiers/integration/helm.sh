#!/usr/bin/env bash
# The Helm chart against the real helm and the lab's real kube-apiserver:
#   - helm lint --strict, helm template; the schema requires clusterPodCIDR and rejects wrong types;
#   - deploy/ and the chart's CRD copies are up to date (deploy/render.sh --check);
#   - every rendered object (hooks included), deploy/ and the example policies pass a server-side
#     dry-run apply;
#   - for real: with a TokenRequest token bound to a Pod on node A, the agent may write
#     CipherlaneNode A and is denied B (by the chart's ValidatingAdmissionPolicy); a token without a
#     node binding is denied; the agent's and the operator's accounts can do exactly what they need
#     (kubectl auth can-i --list compared with the expected rules) and nothing else.
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
kver=$(kubectl version -o json | jq -r .serverVersion.gitVersion)

rel=ht$$                      # unique names: the lab may be shared with other tests
ns=cipherlane-helm-$$
node_a=$rel-node-a node_b=$rel-node-b
work=$(mktemp -d)
cleanup() {
  set +e
  kubectl delete cipherlanenode "$node_a" "$node_b" --ignore-not-found >/dev/null 2>&1
  kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1
  kubectl delete node "$node_a" "$node_b" --ignore-not-found >/dev/null 2>&1
  kubectl delete clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding,rotationpolicy \
    -l "app.kubernetes.io/instance=$rel" --ignore-not-found >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
tmpl() { "$helm" template "$rel" "$chart" --namespace "$ns" --kube-version "$kver" "$@"; }
printf 'clusterPodCIDR: 10.244.0.0/16\nrotationPolicy: {name: %s-default}\n' "$rel" > "$work/base.yaml"
base=(-f "$work/base.yaml")     # a file, not --set, so that later -f files can override it

# --- lint, template, schema -------------------------------------------------------------------
"$helm" lint --strict "$chart" --kube-version "$kver" --set clusterPodCIDR=10.244.0.0/16 > "$work/lint" 2>&1 ||
  { cat "$work/lint"; die "helm lint --strict failed"; }
grep -q '0 chart(s) failed' "$work/lint" || die "helm lint did not report success"
ok "helm lint --strict passes"

if tmpl > /dev/null 2> "$work/err"; then die "helm template without clusterPodCIDR succeeded"; fi
grep -q "clusterPodCIDR" "$work/err" || { cat "$work/err"; die "the missing clusterPodCIDR is not named"; }
ok "the schema requires clusterPodCIDR"

# Each wrong value must be rejected, and the error must name its key.
wrong=(
  '/network/mtu|network: {mtu: "1400"}'
  '/network/mtu|network: {mtu: 900}'
  '/encryption/fips|encryption: {fips: "yes"}'
  '/encryption/suite|encryption: {suite: des-cbc}'
  '/agent/kexPort|agent: {kexPort: 70000}'
  '/agent/tolerations|agent: {tolerations: {operator: Exists}}'
  '/operator/replicas|operator: {replicas: "two"}'
  '/rotationPolicy/rotationInterval|rotationPolicy: {rotationInterval: 24}'
  '/rotationPolicy/maxBytes|rotationPolicy: {maxBytes: -1}'
  '/clusterPodCIDR|clusterPodCIDR: 10.244.0.0'
  '/clusterPodCIDR|clusterPodCIDR: [10.244.0.0/16]'
  '/metrics/serviceMonitor/enabled|metrics: {serviceMonitor: {enabled: 1}}'
  "additional properties 'agnet' not allowed|agnet: {logLevel: debug}"
  '/encryption/suite|encryption: {fips: true, suite: chacha20-poly1305}'
)
for case in "${wrong[@]}"; do
  key=${case%%|*}; printf '%s\n' "${case#*|}" > "$work/bad.yaml"
  if tmpl "${base[@]}" -f "$work/bad.yaml" > /dev/null 2> "$work/err"; then
    die "the schema accepted a wrong value: ${case#*|}"
  fi
  grep -q "values don't meet the specifications of the schema" "$work/err" || { cat "$work/err"; die "not a schema error: ${case#*|}"; }
  grep -qF "$key" "$work/err" || { cat "$work/err"; die "the schema error for '${case#*|}' does not name $key"; }
done
ok "the schema rejects ${#wrong[@]} wrong values, each naming its key"

tmpl "${base[@]}" --set clusterPodCIDRv6=fd00:10:244::/56 --set encryption.fips=true --set encryption.suite=aes-gcm-256 \
  --set metrics.serviceMonitor.enabled=true > "$work/all.yaml" || die "helm template with every option on failed"
for kind in ServiceMonitor DaemonSet Deployment PodDisruptionBudget ValidatingAdmissionPolicy RotationPolicy; do
  grep -q "^kind: $kind\$" "$work/all.yaml" || die "helm template renders no $kind"
done
grep -q '10.244.0.0/16,fd00:10:244::/56' "$work/all.yaml" || die "the dual-stack pod CIDRs do not reach the agent"
ok "helm template renders every part (ServiceMonitor on, dual-stack, FIPS)"

count_kind() { grep -c "^kind: $1\$" || true; }
[ "$(tmpl "${base[@]}" --set admissionPolicy.enabled=false | count_kind ValidatingAdmissionPolicy)" = 0 ] || die "admissionPolicy.enabled=false still renders the policy"
[ "$(tmpl "${base[@]}" --set uninstall.enabled=false | grep -c 'helm.sh/hook:' || true)" = 0 ] || die "uninstall.enabled=false still renders hooks"
[ "$(tmpl "${base[@]}" --set operator.podDisruptionBudget.enabled=false | count_kind PodDisruptionBudget)" = 0 ] || die "the PDB cannot be turned off"
[ "$(tmpl "${base[@]}" --set rotationPolicy.create=false | count_kind RotationPolicy)" = 0 ] || die "the default policy cannot be turned off"
tmpl "${base[@]}" --set agent.privileged=true --show-only templates/agent-daemonset.yaml | grep -q 'privileged: true' || die "agent.privileged=true is ignored"
[ "$(tmpl "${base[@]}" --show-only templates/agent-daemonset.yaml | grep -c 'privileged: true' || true)" = 0 ] || die "the agent is privileged by default"
tmpl "${base[@]}" --set image.digest=sha256:"$(printf '%064d' 0)" --show-only templates/agent-daemonset.yaml | grep -q "cipherlane-agent@sha256:0000" ||
  die "image.digest is not used"
ok "toggles work: admission policy, uninstall hooks, PDB, default policy, privileged, image digest"

HELM=$helm "$repo/deploy/render.sh" --check || die "deploy/ or the chart's crds/ are stale: run deploy/render.sh"
for f in "$repo"/deploy/crds/*.yaml; do
  cmp -s "$f" "$chart/crds/$(basename "$f")" || die "charts/cipherlane/crds/$(basename "$f") differs from deploy/crds"
done
ok "deploy/ manifests and the chart's CRDs match their sources"

# --- the agent's pod spec: the properties the issue names ---------------------------------------
tmpl "${base[@]}" --show-only templates/agent-daemonset.yaml > "$work/ds.yaml"
python3 - "$work/ds.yaml" <<'PY' || die "the agent DaemonSet lacks a required property (above)"
import sys, yaml
ds = yaml.safe_load(open(sys.argv[1]))
pod = ds["spec"]["template"]["spec"]
agent = next(c for c in pod["containers"] if c["name"] == "agent")
init = pod["initContainers"][0]
sc = agent["securityContext"]
checks = {
    "hostNetwork": pod.get("hostNetwork") is True,
    "system-node-critical": pod.get("priorityClassName") == "system-node-critical",
    "tolerates every taint": {"operator": "Exists"} in pod.get("tolerations", []),
    "not privileged": not sc.get("privileged", False),
    "only NET_ADMIN added": sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]},
    "no privilege escalation": sc.get("allowPrivilegeEscalation") is False,
    "install-cni init container": init["name"] == "install-cni" and "install-cni" in init["command"],
    "liveness /healthz": agent["livenessProbe"]["httpGet"]["path"] == "/healthz",
    "readiness /readyz": agent["readinessProbe"]["httpGet"]["path"] == "/readyz",
    "hostPath mounts": sorted(v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v)
        == ["/etc/cni/net.d", "/opt/cni/bin", "/run/cipherlane", "/var/lib/cipherlane"],
}
bad = [k for k, v in checks.items() if not v]
if bad: print("missing:", bad); sys.exit(1)
PY
ok "agent DaemonSet: hostNetwork, NET_ADMIN only, system-node-critical, all taints, install-cni, probes, hostPaths"

# --- server-side dry-run against the real API server --------------------------------------------
kubectl apply --server-side --force-conflicts --field-manager=cipherlane-helm-test -f "$chart/crds/" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/cipherlanenodes.cipherlane.io crd/rotationpolicies.cipherlane.io >/dev/null
kubectl create namespace "$ns" >/dev/null
tmpl "${base[@]}" > "$work/release.yaml"            # hooks included
kubectl apply --server-side --dry-run=server -f "$work/release.yaml" > "$work/dry" 2>&1 ||
  { cat "$work/dry"; die "the rendered chart failed a server-side dry-run"; }
n=$(grep -c 'serverside-applied (server dry run)' "$work/dry"); want=$(grep -c '^kind:' "$work/release.yaml")
[ "$n" = "$want" ] || { cat "$work/dry"; die "dry-run applied $n of $want objects"; }
ok "all $want rendered objects (hooks included) pass a server-side dry-run"
kubectl apply --server-side --dry-run=server -f "$repo/deploy/cipherlane.yaml" -f "$repo/deploy/uninstall.yaml" > "$work/dry" 2>&1 ||
  { cat "$work/dry"; die "deploy/cipherlane.yaml or deploy/uninstall.yaml failed a server-side dry-run"; }
kubectl apply --server-side --dry-run=server -f "$repo/deploy/examples/" > "$work/dry" 2>&1 ||
  { cat "$work/dry"; die "an example in deploy/examples failed a server-side dry-run"; }
ok "deploy/cipherlane.yaml, deploy/uninstall.yaml and deploy/examples pass a server-side dry-run"

# --- install for real (without hooks) ------------------------------------------------------------
tmpl "${base[@]}" --no-hooks | kubectl apply --server-side -f - >/dev/null
agent_sa=$rel-cipherlane-agent op_sa=$rel-cipherlane-operator
agent_user=system:serviceaccount:$ns:$agent_sa op_user=system:serviceaccount:$ns:$op_sa

# RBAC, exactly: `kubectl auth can-i --list` (resource rules only, without the self-review rules every
# account has) equals the expected rules, in the release namespace and in another one.
rules() { # USER NAMESPACE
  kubectl auth can-i --list --as="$1" -n "$2" | awk 'NR > 1 && $1 !~ /^\[/ && $1 !~ /^selfsubject/ { print }' |
    sed -E 's/ +/ /g; s/ $//' | sort
}
expect() { sed -E 's/^ +//; s/ +/ /g' | grep -v '^$' | sort; }
diff <(rules "$op_user" "$ns") <(expect <<EOF
  cipherlanenodes.cipherlane.io [] [] [get list watch delete]
  events.events.k8s.io [] [] [create patch]
  leases.coordination.k8s.io [] [$rel-cipherlane-operator] [get update]
  leases.coordination.k8s.io [] [] [create]
  nodes [] [] [get list watch]
  rotationpolicies.cipherlane.io [] [] [get list watch]
  rotationpolicies.cipherlane.io/status [] [] [update patch]
EOF
) || die "the operator's permissions in $ns differ from the expected (diff above: < actual, > expected)"
diff <(rules "$op_user" default) <(rules "$op_user" "$ns" | grep -v '^leases') || die "the operator has Lease rights outside $ns"
diff <(rules "$agent_user" "$ns") <(expect <<EOF
  cipherlanenodes.cipherlane.io [] [] [get list watch create patch]
  cipherlanenodes.cipherlane.io/status [] [] [patch]
  nodes [] [] [get list watch]
  rotationpolicies.cipherlane.io [] [] [get list watch]
EOF
) || die "the agent's permissions differ from the expected (diff above: < actual, > expected)"
# And a few spot checks through the authorizer, by verb.
can() { kubectl auth can-i "$@" >/dev/null 2>&1; }
for a in "watch rotationpolicies" "patch rotationpolicies --subresource=status" "list cipherlanenodes" "delete cipherlanenodes" \
         "list nodes" "create events.events.k8s.io"; do
  # shellcheck disable=SC2086
  can $a --as="$op_user" || die "the operator cannot $a"
done
can create leases.coordination.k8s.io -n "$ns" --as="$op_user" || die "the operator cannot create its Lease"
can update "leases.coordination.k8s.io/$rel-cipherlane-operator" -n "$ns" --as="$op_user" || die "the operator cannot renew its Lease"
for d in "patch rotationpolicies" "create rotationpolicies" "delete rotationpolicies" "patch cipherlanenodes --subresource=status" \
         "create cipherlanenodes" "patch cipherlanenodes" "patch nodes" "get secrets" "list pods" "get configmaps" "create pods"; do
  # shellcheck disable=SC2086
  if can $d -A --as="$op_user"; then die "the operator can $d, which it does not need"; fi
done
if can update leases.coordination.k8s.io/other-lease -n "$ns" --as="$op_user"; then die "the operator can update any Lease"; fi
for d in "delete cipherlanenodes" "update cipherlanenodes" "create events.events.k8s.io" "create rotationpolicies" "patch rotationpolicies" "patch nodes" "get secrets" "list pods"; do
  # shellcheck disable=SC2086
  if can $d -A --as="$agent_user"; then die "the agent can $d, which it does not need"; fi
done
ok "RBAC: the operator and the agent can do what they need and nothing more (can-i --list and spot checks)"

# --- the admission policy, with real Pod-bound tokens ---------------------------------------------
CIPHERLANE_LAB=$lab "$repo/tests/lab/apiserver.sh" nodes "$node_a:198.18.0.1:10.244.1.0/24" "$node_b:198.18.0.2:10.244.2.0/24" 2>/dev/null
for n in a b; do
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: agent-on-$n}
spec:
  serviceAccountName: $agent_sa
  nodeName: $rel-node-$n
  automountServiceAccountToken: false
  containers: [{name: agent, image: example.invalid/cipherlane-agent}]
EOF
done
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
as_token() { # TOKEN kubectl-args...: kubectl authenticated only by TOKEN
  local t=$1; shift
  kubectl --kubeconfig=/dev/null --server="$server" --certificate-authority="$lab/pki/ca.crt" --token="$t" "$@"
}
patch_status() { # TOKEN NAME JSON [PLURAL]: PATCH a status subresource as kube-rs does (no GET first, unlike kubectl)
  curl -sS -o "$work/out" -w '%{http_code}' --cacert "$lab/pki/ca.crt" -H "Authorization: Bearer $1" \
    -H 'Content-Type: application/merge-patch+json' -X PATCH \
    "$server/apis/cipherlane.io/v1alpha1/${4:-cipherlanenodes}/$2/status" -d "$3"
}
tok_a=$(kubectl -n "$ns" create token "$agent_sa" --duration 10m --bound-object-kind Pod --bound-object-name agent-on-a)
tok_free=$(kubectl -n "$ns" create token "$agent_sa" --duration 10m)
who=$(as_token "$tok_a" auth whoami -o json | jq -r '.status.userInfo.extra["authentication.kubernetes.io/node-name"][0]')
[ "$who" = "$node_a" ] || die "the Pod-bound token does not carry node $node_a (got '$who')"
cln() { # NAME NODE_IP
  cat <<EOF
apiVersion: cipherlane.io/v1alpha1
kind: CipherlaneNode
metadata: {name: $1}
spec:
  identityKey: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
  nodeIP: $2
  endpoint: $2:9471
  podCIDRs: [10.244.0.0/24]
  suites: [aes-gcm-128]
EOF
}
# The policy starts to act a moment after it is created: wait for a condition (a dry-run denial), not a fixed time.
denied_by_policy() { grep -q "ValidatingAdmissionPolicy '$rel-cipherlane-agent-own-node-only'" "$1"; }
for _ in $(seq 1 60); do
  if ! cln "$node_b" 198.18.0.2 | as_token "$tok_a" create --dry-run=server -f - > "$work/out" 2>&1 && denied_by_policy "$work/out"; then break; fi
  sleep 1
done
denied_by_policy "$work/out" || { cat "$work/out"; die "the admission policy never denied agent A writing CipherlaneNode B"; }

# The agent publishes with server-side apply: the first apply creates the object.
cln "$node_a" 198.18.0.1 | as_token "$tok_a" apply --server-side --field-manager=cipherlane-agent -f - > "$work/out" 2>&1 ||
  { cat "$work/out"; die "agent A could not create its own CipherlaneNode with server-side apply"; }
code=$(patch_status "$tok_a" "$node_a" '{"status":{"peersEstablished":1,"peersTotal":1}}')
[ "$code" = 200 ] || { cat "$work/out"; die "agent A could not patch its own CipherlaneNode's status (HTTP $code)"; }
cln "$node_a" 198.18.0.1 | sed 's/:9471/:9472/' |
  as_token "$tok_a" apply --server-side --field-manager=cipherlane-agent -f - > "$work/out" 2>&1 ||
  { cat "$work/out"; die "agent A could not update its own CipherlaneNode with server-side apply"; }
[ "$(kubectl get cipherlanenode "$node_a" -o jsonpath='{.spec.endpoint}')" = 198.18.0.1:9472 ] || die "agent A's apply did not land"
as_token "$tok_a" patch cipherlanenode "$node_a" --type=merge -p '{"spec":{"endpoint":"198.18.0.1:9999"}}' >/dev/null ||
  die "agent A could not patch its own CipherlaneNode"
[ "$(kubectl get cipherlanenode "$node_a" -o jsonpath='{.spec.endpoint} {.status.peersEstablished}')" = "198.18.0.1:9999 1" ] ||
  die "agent A's writes did not land"
ok "agent on $node_a (Pod-bound token) creates and patches CipherlaneNode/$node_a and its status"

if cln "$node_b" 198.18.0.2 | as_token "$tok_a" create -f - > "$work/out" 2>&1; then die "agent A created CipherlaneNode B"; fi
denied_by_policy "$work/out" || { cat "$work/out"; die "agent A creating B was denied, but not by the policy"; }
grep -q "may write only CipherlaneNode/$node_a, not CipherlaneNode/$node_b" "$work/out" || { cat "$work/out"; die "the denial does not say why"; }
cln "$node_b" 198.18.0.2 | kubectl create -f - >/dev/null     # B exists (written by an admin here)
code=$(patch_status "$tok_a" "$node_b" '{"status":{"peersTotal":9}}')
if [ "$code" != 403 ] || ! denied_by_policy "$work/out"; then
  cat "$work/out"; die "agent A patching B's status was not denied by the policy (HTTP $code)"
fi
if as_token "$tok_a" patch cipherlanenode "$node_b" --type=merge -p '{"spec":{"endpoint":"6.6.6.6:1"}}' > "$work/out" 2>&1; then
  die "agent A patched CipherlaneNode B"
fi
denied_by_policy "$work/out" || { cat "$work/out"; die "agent A patching B was denied, but not by the policy"; }
cln "$node_b" 6.6.6.6 > "$work/b.yaml"
if as_token "$tok_a" apply --server-side --field-manager=cipherlane-agent --force-conflicts -f "$work/b.yaml" > "$work/out" 2>&1; then
  die "agent A server-side applied CipherlaneNode B"
fi
denied_by_policy "$work/out" || { cat "$work/out"; die "agent A applying B was denied, but not by the policy"; }
[ "$(kubectl get cipherlanenode "$node_b" -o jsonpath='{.spec.endpoint} {.status.peersTotal}')" = "198.18.0.2:9471 " ] || die "CipherlaneNode B changed"
if as_token "$tok_a" delete cipherlanenode "$node_a" > "$work/out" 2>&1; then die "agent A deleted a CipherlaneNode"; fi
grep -q Forbidden "$work/out" || { cat "$work/out"; die "agent A's delete failed for another reason than RBAC"; }
ok "agent on $node_a is denied creating, patching, applying CipherlaneNode/$node_b and its status (by the policy), and deleting (RBAC)"

if as_token "$tok_free" patch cipherlanenode "$node_a" --type=merge -p '{"spec":{"endpoint":"6.6.6.6:1"}}' > "$work/out" 2>&1; then
  die "a token without a node binding patched CipherlaneNode A"
fi
grep -q "this token is not bound to a node" "$work/out" || { cat "$work/out"; die "the unbound token was not denied by the policy"; }
ok "the agent's account with a token not bound to a node is denied"

op_tok=$(kubectl -n "$ns" create token "$op_sa" --duration 10m)
as_token "$op_tok" delete cipherlanenode "$node_b" >/dev/null || die "the operator could not delete a CipherlaneNode (garbage collection)"
code=$(patch_status "$op_tok" "$rel-default" '{"status":{"epoch":1}}' rotationpolicies)
[ "$code" = 200 ] || { cat "$work/out"; die "the operator could not write a RotationPolicy's status (HTTP $code)"; }
[ "$(kubectl get rotationpolicy "$rel-default" -o jsonpath='{.status.epoch}')" = 1 ] || die "the operator's status write did not land"
if as_token "$op_tok" patch rotationpolicy "$rel-default" --type=merge -p '{"spec":{"suite":"aes-gcm-256"}}' >/dev/null 2>&1; then
  die "the operator could change a RotationPolicy's spec"
fi
ok "with a real token the operator deletes CipherlaneNodes and writes policy status, not policy spec"
echo "helm: all checks passed"
