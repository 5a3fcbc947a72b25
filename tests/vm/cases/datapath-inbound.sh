#!/bin/sh
# The inbound rules of DESIGN.md §3 with the agent's layout: spoofed clear text from the underlay
# claiming a peer's (or any unkeyed cluster) pod address does not reach a pod; same-node pod
# traffic, host -> local pod and an external client -> local pod still work.
. /repo/tests/vm/datapath.sh
dp_topology
dp_keyed
check "the tunnel comes up" wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11
check "same-node pod -> pod works" ip netns exec pa1 ping -c 3 -i 0.2 -W 2 10.244.1.12
check "host -> local pod works" ip netns exec a ping -c 3 -i 0.2 -W 2 10.244.1.11
ip route add 10.244.1.0/24 via 198.18.0.1
check "an external client (not a cluster pod) -> local pod works" ping -c 3 -i 0.2 -W 2 10.244.1.11

# A spoofer on the underlay sends clear text from pod addresses straight to node a.
ip netns add spoof
ip link add us type veth peer name ps
ip link set us netns spoof; ip link set ps master br0; ip link set ps up
ip -n spoof link set us up; ip -n spoof link set lo up
ip -n spoof addr add 198.18.0.9/24 dev us
ip -n spoof addr add 10.244.2.99/32 dev lo
ip -n spoof addr add 10.244.7.7/32 dev lo
ip -n spoof route add 10.244.1.0/24 via 198.18.0.1
wait_for 10 ip netns exec spoof ping -c 1 -W 1 198.18.0.1 || true
before=$(stat_of a XfrmInTmplMismatch); blocked=$(stat_of a XfrmFwdHdrError)
check_not "spoofed clear text from peer b's pod CIDR does not reach a pod" ip netns exec spoof ping -c 3 -W 1 -I 10.244.2.99 10.244.1.11
check "the kernel counted it as a template mismatch" [ "$(stat_of a XfrmInTmplMismatch)" -gt "$before" ]
before=$(stat_of a XfrmInPolBlock)
check_not "clear text from an unkeyed cluster pod CIDR does not reach a pod" ip netns exec spoof ping -c 3 -W 1 -I 10.244.7.7 10.244.1.11
check "the inbound guard (fwd block) counted it" [ "$(stat_of a XfrmInPolBlock)" -gt "$before" ]
check "traffic through the SA still works afterwards" ip netns exec pb1 ping -c 3 -i 0.2 -W 2 10.244.1.11
xfrm_errors a | sed 's/^/  a: /'
log "inbound cases passed"
