#!/usr/bin/env bash
# The lab's API server is real: it accepts a CRD and a custom object, Node objects with podCIDRs and an
# InternalIP, issues TokenRequest tokens (also Pod-bound ones carrying the node's name), and enforces RBAC.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
lab=${CIPHERLANE_LAB:-$repo/.cache/lab}
source "$lab/env"
ok() { echo "ok   $*"; }
die() { echo "FAIL $*"; exit 1; }
ns=lab-smoke-$$
kubectl create namespace "$ns" >/dev/null
cleanup() {
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  kubectl delete crd smokes.lab.cipherlane.io >/dev/null 2>&1 || true
  kubectl delete node smoke-a smoke-b >/dev/null 2>&1 || true
}
trap cleanup EXIT

kubectl apply -f - >/dev/null <<'YAML'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: smokes.lab.cipherlane.io}
spec:
  group: lab.cipherlane.io
  scope: Cluster
  names: {plural: smokes, singular: smoke, kind: Smoke}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {size: {type: integer, minimum: 1}}
YAML
kubectl wait --for condition=established --timeout=30s crd/smokes.lab.cipherlane.io >/dev/null
printf 'apiVersion: lab.cipherlane.io/v1\nkind: Smoke\nmetadata: {name: one}\nspec: {size: 3}\n' | kubectl apply -f - >/dev/null
[ "$(kubectl get smoke one -o jsonpath='{.spec.size}')" = 3 ] || die "custom object not stored"
if printf 'apiVersion: lab.cipherlane.io/v1\nkind: Smoke\nmetadata: {name: two}\nspec: {size: 0}\n' | kubectl apply -f - 2>/dev/null; then
  die "schema validation did not reject size 0"
fi
ok "a CRD is accepted, its objects stored and validated"

"$repo/tests/lab/apiserver.sh" nodes smoke-a:198.18.0.1:10.244.1.0/24 smoke-b:198.18.0.2:10.244.2.0/24
got=$(kubectl get node smoke-b -o jsonpath='{.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}')
[ "$got" = "10.244.2.0/24 198.18.0.2" ] || die "node smoke-b lacks its podCIDR or InternalIP (got '$got')"
ok "Node objects carry spec.podCIDR(s) and an InternalIP"

kubectl -n "$ns" create serviceaccount agent >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: agent-on-a}
spec:
  serviceAccountName: agent
  nodeName: smoke-a
  automountServiceAccountToken: false
  containers: [{name: c, image: example.invalid/none}]
YAML
claims() { # a JWT on stdin -> its claims as JSON
  local p; p=$(cut -d. -f2 | tr '_-' '/+')
  while [ $(( ${#p} % 4 )) != 0 ]; do p="$p="; done
  printf '%s' "$p" | base64 -d
}
tok=$(kubectl -n "$ns" create token agent --duration 10m)
[ "$(printf '%s' "$tok" | claims | jq -r .sub)" = "system:serviceaccount:$ns:agent" ] || die "TokenRequest token has the wrong subject"
bound=$(kubectl -n "$ns" create token agent --bound-object-kind Pod --bound-object-name agent-on-a)
node=$(printf '%s' "$bound" | claims | jq -r '."kubernetes.io".node.name')
[ "$node" = smoke-a ] || die "a Pod-bound token does not name the pod's node (got '$node')"
ok "TokenRequest works; a Pod-bound token names the node (smoke-a)"

server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$lab/pki/ca.crt" -H "Authorization: Bearer $bound" "$server/api/v1/nodes")
[ "$code" = 403 ] || die "RBAC: a service account without roles listed nodes (HTTP $code)"
who=$(curl -s --cacert "$lab/pki/ca.crt" -H "Authorization: Bearer $bound" -H 'Content-Type: application/json' \
  -X POST "$server/apis/authentication.k8s.io/v1/selfsubjectreviews" \
  -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' |
  jq -r '.status.userInfo.extra["authentication.kubernetes.io/node-name"][0]')
[ "$who" = smoke-a ] || die "the API server does not see the token's node binding (got '$who')"
ok "RBAC is on (403 without a role); the API sees the token's node-name extra (smoke-a)"
