#!/bin/sh
# The chart's identities for the lab's agents and operator: they run with the ServiceAccounts, RBAC
# and admission policy of charts/cipherlane (release "cipherlane" in cipherlane-system), never as
# the lab admin. POSIX sh: it runs on the host and in the lab VM (busybox).
#
#   identities.sh install            apply the chart's ServiceAccounts, (Cluster)Roles and bindings and
#                                    its ValidatingAdmissionPolicy, rendered by helm template
#   identities.sh agent NODE FILE    a Pod of the agent bound to NODE (spec.nodeName; nothing runs it)
#                                    and a kubeconfig FILE with a token bound to that Pod: the token
#                                    carries the node's name, as the kubelet's projected token does
#   identities.sh operator FILE      a kubeconfig FILE with a token of the operator's ServiceAccount
#
# Uses $KUBECTL and $HELM (default: kubectl and helm on PATH) with $KUBECONFIG of the lab admin.
# Tokens last $TOKEN_DURATION (default 4h): longer than any lab run.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
K=${KUBECTL:-kubectl}
H=${HELM:-helm}
NS=cipherlane-system
REL=cipherlane
AGENT_SA=$REL-agent
OPERATOR_SA=$REL-operator
DURATION=${TOKEN_DURATION:-4h}
die() { echo "identities.sh: $*" >&2; exit 1; }

write_kubeconfig() { # FILE TOKEN
  server=$($K config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$($K config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  [ -n "$server" ] && [ -n "$ca" ] || die "cannot read the server and CA from \$KUBECONFIG"
  mkdir -p "$(dirname "$1")"
  umask 077
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: sa, user: {token: "$2"}}]
contexts: [{name: sa, context: {cluster: lab, user: sa}}]
current-context: sa
EOF
}

case ${1:-} in
  install)
    $K create namespace "$NS" >/dev/null 2>&1 || true
    kver=$($K get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
    $H template "$REL" "$repo/charts/cipherlane" --namespace "$NS" --kube-version "$kver" \
        --set clusterPodCIDR=10.0.0.0/8 \
        --show-only templates/serviceaccounts.yaml --show-only templates/rbac-agent.yaml \
        --show-only templates/rbac-operator.yaml --show-only templates/admission-policy.yaml \
      | $K apply --server-side --force-conflicts -f - >/dev/null || die "cannot apply the chart's RBAC"
    ;;
  agent)
    [ $# = 3 ] || die "usage: identities.sh agent NODE FILE"
    pod=$AGENT_SA-$2
    if ! $K -n "$NS" get pod "$pod" >/dev/null 2>&1; then
      cat <<EOF | $K -n "$NS" apply -f - >/dev/null || die "cannot create Pod $pod"
apiVersion: v1
kind: Pod
metadata: {name: $pod, labels: {app.kubernetes.io/component: agent, lab.cipherlane.io/identity: "true"}}
spec:
  serviceAccountName: $AGENT_SA
  nodeName: $2
  automountServiceAccountToken: false
  containers: [{name: agent, image: example.invalid/cipherlane-agent}]
EOF
    fi
    tok=$($K -n "$NS" create token "$AGENT_SA" --duration "$DURATION" \
          --bound-object-kind Pod --bound-object-name "$pod") || die "cannot create a token bound to Pod $pod"
    write_kubeconfig "$3" "$tok"
    ;;
  operator)
    [ $# = 2 ] || die "usage: identities.sh operator FILE"
    tok=$($K -n "$NS" create token "$OPERATOR_SA" --duration "$DURATION") || die "cannot create the operator's token"
    write_kubeconfig "$2" "$tok"
    ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
