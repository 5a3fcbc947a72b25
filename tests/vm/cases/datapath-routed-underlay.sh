#!/bin/sh
# Nodes in different subnets with a routed underlay (DESIGN.md §3): node a in 198.18.0.0/24, node c in
# 198.18.1.0/24, the VM's root namespace routing between them. The inner route to the peer's pod CIDR
# must not need the peer's node IP on-link; the wire (the bridge) must carry ESP only.
. /repo/tests/vm/datapath.sh
underlay_up
ip addr add 198.18.1.254/24 dev br0
node_up a 198.18.0.1
ip netns add c
ip link add uc type veth peer name pc
ip link set uc netns c; ip link set pc master br0; ip link set pc up
ip -n c link set lo up; ip -n c link set uc up
ip -n c addr add 198.18.1.3/24 dev uc
ip -n c route add default via 198.18.1.254 dev uc
ip netns exec c sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
pod_up a pa1 10.244.1.11
pod_up c pc1 10.244.3.11
check "the nodes reach each other only through the router" ip netns exec a ping -c 1 -W 2 198.18.1.3
state /tmp/state-a.json a 198.18.0.1 10.244.1.0/24 c 198.18.1.3 10.244.3.0/24 "0x3002:$K2" "0x3001:$K1"
state /tmp/state-c.json c 198.18.1.3 10.244.3.0/24 a 198.18.0.1 10.244.1.0/24 "0x3001:$K1" "0x3002:$K2"
check "agent programs node a" apply_node a
check "agent programs node c" apply_node c
ip -n a route show proto 193 | sed 's/^/  a: /'
check "the tunnel comes up across the router" wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.3.11
capture_start /tmp/routed.pcap
check "pod -> remote pod across subnets" ip netns exec pa1 ping -c 5 -i 0.2 -W 2 -p $MARKER_HEX 10.244.3.11
check "host -> remote pod across subnets" ip netns exec a ping -c 3 -i 0.2 -W 2 -p $MARKER_HEX 10.244.3.11
capture_stop
check "the routed underlay carried ESP only" wire_report /tmp/routed.pcap 10.244.0.0/16
log "routed underlay passed"
