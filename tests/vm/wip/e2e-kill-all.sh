#!/bin/sh
# NOT in the vm tier yet: written, run once, not passing (see the session note). Move to tests/vm/cases/ once green.
# Every agent killed at once (SIGKILL), under traffic. Three nodes (CASE_NODES=5: five), a 100/s ping
# flood around the ring of nodes' pods while every agent dies in the same instant, stays dead for 10 s
# and is started again. Asserted:
#   - 0 pings lost, in every direction of the ring;
#   - the restarted agents adopt the SAs the kernel kept: every node's SPIs are the same before the kill
#     and after all agents are ready again (no re-key was needed, none was done);
#   - the wire carried no clear-text pod packet.
. /repo/tests/vm/lib.sh
lab_api_ready
NODES=$(case_nodes)
underlay_up
nodes_up ka
lab_policy ka aes-gcm-128
operator_start
agents_up ka
spis() { ip -n "$1" xfrm state | grep -o 'spi 0x[0-9a-f]*' | cut -d' ' -f2 | sort | tr '\n' ' '; }
sleep 7   # past any grace period of the first keying: one SA per direction and peer
for x in $NODES; do eval "spi_$x=\"\$(spis $x)\""; done

capture_start /tmp/wire.pcap
set -- $NODES
first=$1; prev=
for x in $NODES; do
  [ -n "$prev" ] && { eval "dst=\$p$x"; ip netns exec "p${prev}1" ping -i 0.01 -c 6000 -W 1 -p $MARKER_HEX "$dst" > /tmp/ring-$prev$x.txt 2>&1 & }
  prev=$x
done
eval "dst=\$p$first"; ip netns exec "p${prev}1" ping -i 0.01 -c 6000 -W 1 -p $MARKER_HEX "$dst" > /tmp/ring-$prev$first.txt 2>&1 &
sleep 3
pids=$(for x in $NODES; do cat /tmp/agent-$x.pid; done)
log "SIGKILL to every agent at once: $(echo $pids)"
kill -9 $pids
for x in $NODES; do wait_for 5 agent_gone $x || fail "agent $x survived SIGKILL"; done
sleep 10
for x in $NODES; do agent_start $x ka-$x 198.18.0.$(node_index $x); done
for x in $NODES; do wait_for 90 agent_ready $x || { agent_log_tail $x; fail "agent $x did not come back"; }; done
log "every agent ready again"
wait
capture_stop
for f in /tmp/ring-*.txt; do
  echo "  $(basename $f .txt): $(grep 'packets transmitted' $f)"
  check "no ping lost ($(basename $f .txt)) while every agent was dead and restarted" grep -q ' 0% packet loss' $f
done
for x in $NODES; do
  eval "before=\$spi_$x"
  check "node $x: the restarted agent adopted the kernel's SAs (SPIs unchanged: $before)" [ "$(spis $x)" = "$before" ]
done
check "the wire carried no clear-text pod packet, nor the marker" wire_report /tmp/wire.pcap 10.244.0.0/16
check "the mesh works after the restart" mesh $NODES
log "kill-all passed"
