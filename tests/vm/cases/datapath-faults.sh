#!/bin/sh
# Agent faults: killing the agent (SIGKILL) keeps traffic to known peers flowing and traffic to unknown
# peers blocked (the kernel keeps the layout); a restarted agent that knows no keys adopts the SAs it
# finds in the kernel with no SA churn and no packet loss; uninstall removes exactly what it installed.
. /repo/tests/vm/datapath.sh
dp_topology
state_a "0x1002:$K2" "0x1001:$K1"
state_b "0x1001:$K1" "0x1002:$K2"
hold_node a
hold_node b
check "the tunnel comes up" wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11
before_a=$(spis a); before_b=$(spis b)
ip netns exec pa1 ping -i 0.02 -c 400 -W 1 10.244.2.11 > /tmp/ping.txt 2>&1 &
pp=$!
sleep 1
kill -9 "$(cat /tmp/hold-a.pid)" "$(cat /tmp/hold-b.pid)"
log "both agents killed"
check "traffic to the known peer keeps flowing without the agents" ip netns exec pa1 ping -c 3 -i 0.2 -W 2 10.244.2.11
check_not "traffic to an unknown peer's pods stays blocked" ip netns exec pa1 ping -c 2 -W 1 10.244.9.9
capture_start /tmp/killed.pcap
ip netns exec a ping -c 3 -i 0.2 -W 2 -p $MARKER_HEX 10.244.2.11 >/dev/null 2>&1
capture_stop
check "the wire stays ESP only while the agents are down" wire_report /tmp/killed.pcap 10.244.0.0/16

log "restarting the agents with no keys: they must adopt the kernel's SAs"
state_a - -
state_b - -
check "agent a adopts: nothing added, changed or deleted" sh -c "/sbin/ip netns exec a $AGENT datapath apply --state /tmp/state-a.json | grep -q 'applied: 0 added, 0 changed, 0 deleted'"
check "agent b adopts: nothing added, changed or deleted" sh -c "/sbin/ip netns exec b $AGENT datapath apply --state /tmp/state-b.json | grep -q 'applied: 0 added, 0 changed, 0 deleted'"
check "the SAs are the same ones (no churn)" [ "$(spis a)" = "$before_a" ] && [ "$(spis b)" = "$before_b" ]
wait $pp
log "ping across kill and restart: $(grep 'packets transmitted' /tmp/ping.txt)"
check "no packet was lost across kill and restart" sh -c "grep -q ' 0% packet loss' /tmp/ping.txt"

log "a removed peer has its objects removed"
printf '{"local":{"name":"a","nodeIP":"198.18.0.1","podCIDRs":["10.244.1.0/24"]},"clusterPodCIDRs":["10.244.0.0/16"],"peers":[]}\n' > /tmp/state-a.json
check "agent a removes peer b" apply_node a
check "no SA is left for the removed peer" [ -z "$(spis a)" ]
check_not "the removed peer's pods are blocked, not reached in clear" ip netns exec pa1 ping -c 2 -W 1 10.244.2.11
check "fail-closed stays: the cluster block policy is still there" sh -c "/sbin/ip -n a xfrm policy | grep -q 'action block'"

log "uninstall removes what the agent installed and nothing else"
ip -n a xfrm policy add src 10.99.0.0/16 dst 10.98.0.0/16 dir out priority 7 action block
ip -n a route add 10.97.0.0/24 via 198.18.0.254
check "uninstall runs" ip netns exec a "$AGENT" uninstall
left=$(ip -n a xfrm policy | grep -c '^src')
check "only the foreign policy is left ($left)" [ "$left" = 1 ]
check "the foreign route is left" sh -c "/sbin/ip -n a route | grep -q 10.97.0.0/24"
check "our routes are gone" sh -c "! /sbin/ip -n a route show proto 193 | grep -q ."
log "fault cases passed"
