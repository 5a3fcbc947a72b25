#!/bin/sh
# The CNI plugin alone in the VM's Debian kernel (no agent: the agent state is written by hand, as
# the agent would): a pod is refused while the node is not ready, then wired through cnitool
# (libcni); pod -> node, pod -> pod on the same node, the node -> pod, the agent's MTU on both
# veth ends, CHECK, DEL (twice), and DEL after the pod's netns is gone.
. /repo/tests/vm/lib.sh
[ -n "$CNITOOL" ] || fail "cnitool not built (tests/tools/build.sh)"
underlay_up
node_up cn 198.18.0.1
mkdir -p /run/cl/cn /etc/cni/cn /var/lib/cl/cn
cat > /etc/cni/cn/10-cipherlane.conflist <<JSON
{"cniVersion":"1.1.0","name":"cipherlane","plugins":[{"type":"cipherlane",
 "agentStateFile":"/run/cl/cn/agent-state.json","ipamDir":"/var/lib/cl/cn/ipam","logFile":"/tmp/cni-cn.log"}]}
JSON
state() { # READY REASON
  printf '{"version":1,"ready":%s,"reason":"%s","nodeName":"cn","podMtu":1400,"podCidrs":["10.244.9.0/24"]}\n' "$1" "$2" \
    > /run/cl/cn/agent-state.json.tmp && mv /run/cl/cn/agent-state.json.tmp /run/cl/cn/agent-state.json
}
tool() { ip netns exec cn env CNI_PATH="$BIN" NETCONFPATH=/etc/cni/cn "$CNITOOL" "$@"; }

state false "waiting for the fail-closed policy"
ip netns add refused
check_not "ADD is refused while the agent is not ready" tool add cipherlane /run/netns/refused
cp /tmp/check.out /tmp/refusal.out
check "the refusal names the reason" grep -q "waiting for the fail-closed policy" /tmp/refusal.out
check_not "STATUS fails while the agent is not ready" tool status cipherlane /run/netns/refused
check_not "the refused pod got no interface" ip -n refused link show eth0

state true ""
check "STATUS succeeds once ready" tool status cipherlane /run/netns/refused
p1=$(pod_add cn p1) || fail "CNI ADD p1"
p2=$(pod_add cn p2) || fail "CNI ADD p2"
echo "  pods: p1=$p1 p2=$p2"
case $p1 in 10.244.9.*) ;; *) fail "p1 got $p1, not an address of 10.244.9.0/24" ;; esac
check "p1 has the agent's MTU" sh -c "/sbin/ip -n p1 link show eth0 | grep -q 'mtu 1400'"
check "p1 routes through 169.254.1.1" sh -c "/sbin/ip -n p1 route | grep -q 'default via 169.254.1.1 dev eth0'"
check "p1 -> node" wait_for 10 ip netns exec p1 ping -c 1 -W 1 198.18.0.1
check "p1 -> p2 on the same node" wait_for 10 ip netns exec p1 ping -c 1 -W 1 "$p2"
check "node -> p1" ip netns exec cn ping -c 1 -W 1 "$p1"
check "pod MTU 1400 carries a 1372-byte ping unfragmented" ip netns exec p1 ping -c 1 -W 1 -M do -s 1372 198.18.0.1
check "CHECK passes" tool check cipherlane /run/netns/p1
check "DEL p2" tool del cipherlane /run/netns/p2
check "a repeated DEL succeeds" tool del cipherlane /run/netns/p2
check_not "p2's interface is gone" ip -n p2 link show eth0
ip netns del p1
check "DEL after the netns is gone" tool del cipherlane /run/netns/p1
check "no lease is left" sh -c '[ -z "$(ls /var/lib/cl/cn/ipam/cipherlane | grep "^10\.")" ]'
check "no host veth is left" sh -c '! /sbin/ip -n cn -o link show type veth | grep -q ": cl"'
check "the plugin logged to its file" grep -q "ADD container=" /tmp/cni-cn.log
