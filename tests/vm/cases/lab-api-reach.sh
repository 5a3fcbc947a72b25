#!/bin/sh
# Node namespaces in the VM reach the lab's real API server on the host's loopback (10.0.2.2) through
# the underlay bridge and nftables masquerade, as a node's agent will.
. /repo/tests/vm/lib.sh
[ -f /out/kubeconfig ] || fail "no /out/kubeconfig: the lab API server was not running when the VM started (tests/lab/apiserver.sh start)"
kubectl=$(ls /repo/.cache/tools/*/bin/kubectl 2>/dev/null | head -n 1)
[ -n "$kubectl" ] || fail "kubectl not built (tests/tools/build.sh)"
underlay_up
node_up a 198.18.0.1
check "node a reaches the API server at 10.0.2.2 (readyz)" wait_for 20 ip netns exec a "$kubectl" --kubeconfig /out/kubeconfig get --raw /readyz
ip netns exec a "$kubectl" --kubeconfig /out/kubeconfig get --raw /version | grep -E '"gitVersion"' | sed 's/^ */  API server /'
check "node a lists the API's namespaces over TLS with the lab CA" ip netns exec a "$kubectl" --kubeconfig /out/kubeconfig get namespaces
