#!/bin/sh
# Two fences (DESIGN.md §3). Two nodes with the real agents, marker pings both ways at 100/s, and a
# capture on the underlay bridge (never on a node's own interface) through three faults:
#   - `ip xfrm policy flush` on a (every policy gone, the block policy too): the agent repairs on
#     the kernel's notification; the policies are back in milliseconds (measured);
#   - `ip xfrm state flush` on a: the pair re-keys (part 1);
#   - both at once, on both nodes.
# Through all of them: 0 clear-text pod packets on the wire, the marker never seen in clear. The
# nftables fence (table inet cipherlane) is what holds while the policies are gone: its drop
# counters move. It stays when the agent stops (policies flushed with no agent: still 0 clear text),
# `uninstall` removes it, and then (control) the same fault does leak: the capture would see it.
. /repo/tests/vm/lib.sh
lab_api_ready
CASE_NODES=2
underlay_up
nodes_up fe
lab_policy fe aes-gcm-128
operator_start
agents_up fe
for x in a b; do
  check "node $x: the fence table is installed" ip netns exec $x nft list table inet cipherlane
done
ip netns exec a nft list table inet cipherlane

MARKER="FENCE!!!"; MARKER_HEX=46454e4345212121
policies() { ip -n "$1" xfrm policy | grep -c '^src'; }
drops() { # NODE CHAIN: packets the fence chain dropped so far
  ip netns exec "$1" nft list chain inet cipherlane "$2" | awk '/counter packets/ { for (i = 1; i <= NF; i++) if ($i == "packets") s += $(i + 1) } END { print s + 0 }'
}
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
back_within() { # NODE COUNT T0: polls until NODE holds COUNT policies again; prints the ms since T0
  while [ "$(policies "$1")" -lt "$2" ]; do
    [ $(( $(now_ms) - $3 )) -gt 10000 ] && { echo 10000; return; }
  done
  echo $(( $(now_ms) - $3 ))
}

fault() { # NAME COMMAND...: marker floods both ways for 8 s, captured on br0; the fault after 2 s
  name=$1; shift
  na=$(policies a); nb=$(policies b)
  da=$(( $(drops a out) + $(drops a in) )); db=$(( $(drops b out) + $(drops b in) ))
  capture_start /tmp/wire-$name.pcap
  ip netns exec pa1 ping -D -i 0.01 -c 800 -W 1 -p $MARKER_HEX "$pb" > /tmp/flood-$name-ab.txt 2>&1 & f1=$!
  ip netns exec pb1 ping -D -i 0.01 -c 800 -W 1 -p $MARKER_HEX "$pa" > /tmp/flood-$name-ba.txt 2>&1 & f2=$!
  sleep 2
  log "fault $name: $*"
  t0=$(now_ms)
  "$@" || fail "the fault command failed: $*"
  ra=$(back_within a "$na" $t0); rb=$(back_within b "$nb" $t0)
  wait $f1 $f2
  capture_stop
  echo "REPAIR $name: a's $na policies back ${ra} ms after the fault began, b's $nb after ${rb} ms (polled; 10 ms clock)"
  for d in ab ba; do
    gap=$(awk -F'[][]' '/bytes from/ { t = $2 + 0; if (p && t - p > g) g = t - p; p = t } END { printf "%d", g * 1000 }' /tmp/flood-$name-$d.txt)
    echo "  flood $d: $(grep 'packets transmitted' /tmp/flood-$name-$d.txt); longest gap ${gap} ms"
    eval "gap_$d=$gap"
  done
  da=$(( $(drops a out) + $(drops a in) - da )); db=$(( $(drops b out) + $(drops b in) - db ))
  echo "  fence drops during $name: a $da, b $db"
  check "after $name the policies are back on a" [ "$(policies a)" -ge "$na" ]
  check "after $name the policies are back on b" [ "$(policies b)" -ge "$nb" ]
  check "$name: no clear-text pod packet on the underlay bridge, marker never seen" wire_report /tmp/wire-$name.pcap 10.244.0.0/16
  check "after $name the pair talks" wait_for 10 mesh a b
}
fault policy-flush ip -n a xfrm policy flush
check "through the policy flush pod traffic a -> b stopped for at most 1 s (longest gap $gap_ab ms)" [ "$gap_ab" -le 1000 ]
check "through the policy flush pod traffic b -> a stopped for at most 1 s (longest gap $gap_ba ms)" [ "$gap_ba" -le 1000 ]
grep -h 'flushed; repairing' /tmp/agent-a.log | tail -n 1 | cut -c1-200
fault state-flush ip -n a xfrm state flush
sleep 7   # past the grace period
both() { for x in a b; do ip -n $x xfrm policy flush && ip -n $x xfrm state flush || return 1; done; }
fault both-flushed both

log "the fence stays when the agent stops, and holds alone"
agent_stop a
check "a's fence table is still there with the agent stopped" ip netns exec a nft list table inet cipherlane
d0=$(drops a out)
capture_start /tmp/wire-stopped.pcap
ip -n a xfrm policy flush
ip netns exec pa1 ping -c 50 -i 0.02 -W 1 -p $MARKER_HEX "$pb" > /tmp/ping-stopped.txt 2>&1
capture_stop
d1=$(( $(drops a out) - d0 ))
echo "  with no agent and no policy on a: $(grep 'packets transmitted' /tmp/ping-stopped.txt); a's fence dropped $d1"
check "the fence dropped the pod traffic (at least 50 packets)" [ "$d1" -ge 50 ]
clear=$(/sbin/tcpdump -n -r /tmp/wire-stopped.pcap "ip and not esp and net 10.244.0.0/16" 2>/dev/null | grep -c .)
check "no agent, no policy: still 0 clear-text pod packets on the wire ($clear)" [ "$clear" = 0 ]

log "uninstall removes the fence"
check "uninstall runs" ip netns exec a "$BIN/cipherlane-agent" uninstall --state-dir /run/cl/a --cni-conf-dir /etc/cni/a
check_not "a's fence table is gone" ip netns exec a nft list table inet cipherlane
log "control: without either fence, the same traffic does leak, and b's fence drops it on arrival"
ip -n a xfrm policy flush; ip -n a xfrm state flush
ip -n a route replace 10.244.2.0/24 via 198.18.0.2   # uninstall took Cipherlane's route: send it to b anyway
din=$(drops b in)
capture_start /tmp/wire-control.pcap
ip netns exec pa1 ping -c 20 -i 0.05 -W 1 -p $MARKER_HEX "$pb" > /tmp/ping-control.txt 2>&1
capture_stop
clear=$(/sbin/tcpdump -n -r /tmp/wire-control.pcap "ip and not esp and net 10.244.0.0/16" 2>/dev/null | grep -c .)
din=$(( $(drops b in) - din ))
echo "  control: $clear clear-text pod packets on the wire; b's in-fence dropped $din"
check "the capture sees clear text when nothing fences it (the measurement can fail)" [ "$clear" -ge 20 ]
check "b's fence drops pod packets arriving undecrypted (meta ipsec missing)" [ "$din" -ge 20 ]
check "none reached pb1" grep -q ' 100% packet loss' /tmp/ping-control.txt
log "fence passed"
