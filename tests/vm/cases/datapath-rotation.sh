#!/bin/sh
# Make-before-break rotation under a >=100/s ping flood, driven through the holding agent's state
# files exactly as the key exchange would: new inbound SAs on both receivers, then the new outbound
# SAs, then (after the grace period) the old pair deleted. No ping may be lost; both SPI pairs are
# seen on the wire. Then a soft packet limit makes the kernel send XFRM_MSG_EXPIRE to the agent.
. /repo/tests/vm/datapath.sh
dp_topology
state_a "0x1002:$K2" "0x1001:$K1"
state_b "0x1001:$K1" "0x1002:$K2"
hold_node a
hold_node b
check "the tunnel comes up" wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11
capture_start /tmp/rot.pcap esp
ip netns exec pa1 ping -i 0.01 -c 1000 -W 1 10.244.2.11 > /tmp/flood.txt 2>&1 &
fp=$!
sleep 2
log "1. new inbound SAs on both receivers"
state_a "0x1002:$K2 0x2002:$K4" "0x1001:$K1"
state_b "0x1001:$K1 0x2001:$K3" "0x1002:$K2"
check "both agents applied step 1" wait_applied a 2 && check "b too" wait_applied b 2
sleep 1
log "2. the new outbound SAs (the newest state wins for output)"
state_a "0x1002:$K2 0x2002:$K4" "0x1001:$K1 0x2001:$K3"
state_b "0x1001:$K1 0x2001:$K3" "0x1002:$K2 0x2002:$K4"
check "both agents applied step 2" wait_applied a 3 && check "b too" wait_applied b 3
sleep 2
log "3. grace period over: the old pair goes"
state_a "0x2002:$K4" "0x2001:$K3"
state_b "0x2001:$K3" "0x2002:$K4"
check "both agents applied step 3" wait_applied a 4 && check "b too" wait_applied b 4
wait $fp
capture_stop
cat /tmp/hold-a.log | sed 's/^/  agent a: /'
result=$(grep 'packets transmitted' /tmp/flood.txt)
log "flood: $result"
check "the rotation lost no packet" sh -c "grep -q ' 0% packet loss' /tmp/flood.txt"
spis_seen=$(/sbin/tcpdump -n -r /tmp/rot.pcap 2>/dev/null | grep -o 'spi=0x[0-9a-f]*' | sort | uniq -c | tr '\n' ' ')
log "SPIs on the wire: $spis_seen"
check "both the old and the new SAs carried traffic" sh -c "echo '$spis_seen' | grep -q 0x00001001 && echo '$spis_seen' | grep -q 0x00002001"
check "only the new pair is left on a" [ "$(spis a)" = "0x00002001 0x00002002 " ]

log "a soft packet limit on the SAs: the kernel must tell the agent (XFRM_MSG_EXPIRE)"
state_a "0x2002:$K4" "0x2001:$K3" ',"limits":{"softPackets":50}'
check "agent a applied the limit" wait_applied a 5
check "the limit was set in place (same SPIs, no churn)" [ "$(spis a)" = "0x00002001 0x00002002 " ]
ip netns exec pa1 ping -c 60 -i 0.02 -W 1 10.244.2.11 >/dev/null 2>&1
check "the agent received a soft-expiry event" wait_for 10 grep -q '^expire soft' /tmp/hold-a.log
grep '^expire' /tmp/hold-a.log | head -n 2 | sed 's/^/  agent a: /'
log "rotation passed"
