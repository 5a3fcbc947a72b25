#!/bin/sh
# A key is installed once (DESIGN.md §3). Two nodes with the real agents; while they run, SAs vanish
# from a kernel: `ip xfrm state flush` on a, then on b (each side of the pair's initiator rule), then
# one SA deleted alone. Each time, under a 100/s ping flood:
#   - the agent never installs a lost key again: the pair re-keys with a fresh handshake (new SPIs,
#     new keys on both nodes), and `ip xfrm monitor` on both kernels shows no (SPI, key) added twice;
#   - pod traffic is interrupted for at most 1 s (at most 100 pings lost; "OUTAGE" lines);
#   - ESP captured on the wire before the flushes and replayed afterwards (tcpreplay) is refused by
#     both kernels: no replayed ping reaches a pod, and the kernels count the refusals.
. /repo/tests/vm/lib.sh
lab_api_ready
CASE_NODES=2
underlay_up
nodes_up sl
# every SA either kernel is given, with its key, from the very start
for x in a b; do /sbin/ip -n $x xfrm monitor > /tmp/monitor-$x.txt 2>&1 & echo $! > /tmp/monitor-$x.pid; done
lab_policy sl aes-gcm-128
operator_start
agents_up sl

spis() { # NODE: the node's SPIs, sorted
  ip -n "$1" xfrm state | grep -o 'spi 0x[0-9a-f]*' | cut -d' ' -f2 | grep -v 0x0c1affff | sort | tr '\n' ' '
}
out_spi() { # NODE PEER_IP: the SPI of the newest SA from NODE to the peer (the kernel sends on it)
  ip -n "$1" xfrm state | grep -A1 "dst $2\$" | grep -o 'spi 0x[0-9a-f]*' | cut -d' ' -f2 | head -n 1
}

log "recording ESP on the wire (pings with the payload REPLAY!, both directions) for replay later"
REPLAY_HEX=5245504c41592121   # "REPLAY!!"
/sbin/tcpdump -Z root -U -n -i br0 -w /tmp/esp-to-a.pcap esp and dst host 198.18.0.1 2>/tmp/td1.err & t1=$!
/sbin/tcpdump -Z root -U -n -i br0 -w /tmp/esp-to-b.pcap esp and dst host 198.18.0.2 2>/tmp/td2.err & t2=$!
wait_for 5 grep -q listening /tmp/td1.err; wait_for 5 grep -q listening /tmp/td2.err
check "pb1 -> pa1 pings (recorded)" ip netns exec pb1 ping -c 20 -i 0.05 -W 1 -p $REPLAY_HEX "$pa"
check "pa1 -> pb1 pings (recorded)" ip netns exec pa1 ping -c 20 -i 0.05 -W 1 -p $REPLAY_HEX "$pb"
sleep 0.5; kill $t1 $t2; wait $t1 $t2 2>/dev/null
echo "  recorded $(tcpdump -n -r /tmp/esp-to-a.pcap 2>/dev/null | grep -c ESP) ESP packets to a, $(tcpdump -n -r /tmp/esp-to-b.pcap 2>/dev/null | grep -c ESP) to b"

flood_fault() { # NAME COMMAND...: a 100/s flood pa1 -> pb1 for 15 s, the fault after 3 s
  name=$1; shift
  a0=$(spis a); b0=$(spis b)
  ip netns exec pa1 ping -D -i 0.01 -c 1500 -W 1 "$pb" > /tmp/flood-$name.txt 2>&1 & fp=$!
  sleep 3
  log "fault $name: $*"
  "$@" || fail "the fault command failed: $*"
  wait $fp
  tx=$(grep -o '^[0-9]* packets transmitted' /tmp/flood-$name.txt | cut -d' ' -f1)
  rx=$(grep -o '[0-9]* received' /tmp/flood-$name.txt | cut -d' ' -f1)
  lost=$(( ${tx:-0} - ${rx:-0} ))
  # the longest time between two replies (ping -D stamps each one)
  gap=$(awk -F'[][]' '/bytes from/ { t = $2 + 0; if (p && t - p > g) g = t - p; p = t } END { printf "%d", g * 1000 }' /tmp/flood-$name.txt)
  echo "OUTAGE $name: ${gap} ms without a reply; $lost of $tx pings lost at 100/s"
  [ "${tx:-0}" -ge 1400 ] || fail "the flood did not run ($tx sent)"
  check "after $name pod traffic was interrupted for at most 1 s (longest gap between replies ${gap} ms)" [ "$gap" -le 1000 ]
  a1=$(spis a); b1=$(spis b)
  echo "  SPIs on a: $a0-> $a1"
  echo "  SPIs on b: $b0-> $b1"
  check "after $name node a sends on a new SA" sh -c "! echo '$a0' | grep -qw '$(out_spi a 198.18.0.2)'"
  check "after $name node b sends on a new SA too (the peer replaced its side)" sh -c "! echo '$b0' | grep -qw '$(out_spi b 198.18.0.1)'"
}
replay() {
log "replaying the ESP recorded before the flush into both nodes (b still holds its old inbound SA: grace period)"
for x in a b; do
  ip netns exec p${x}1 /sbin/tcpdump -Z root -U -n -i eth0 -w /tmp/pod-$x.pcap icmp 2>/tmp/tdp-$x.err & eval "tp$x=\$!"
  wait_for 5 grep -q listening /tmp/tdp-$x.err
done
stat_sum() { ip netns exec "$1" cat /proc/net/xfrm_stat | awk '/XfrmInNoStates|XfrmInStateSeqError/ {s += $2} END {print s + 0}'; }
ra0=$(stat_sum a); rb0=$(stat_sum b)
check "tcpreplay into a" tcpreplay -q -i pa /tmp/esp-to-a.pcap
check "tcpreplay into b" tcpreplay -q -i pb /tmp/esp-to-b.pcap
sleep 1
kill $tpa $tpb; wait $tpa $tpb 2>/dev/null
ra=$(( $(stat_sum a) - ra0 )); rb=$(( $(stat_sum b) - rb0 ))
acc_a=$(grep -c "REPLAY!!" /tmp/pod-a.pcap); acc_b=$(grep -c "REPLAY!!" /tmp/pod-b.pcap)
echo "REPLAY into a: $ra refused by the kernel (XfrmInNoStates + XfrmInStateSeqError), $acc_a reached pa1"
echo "REPLAY into b: $rb refused by the kernel (XfrmInNoStates + XfrmInStateSeqError), $acc_b reached pb1"
check "no replayed packet reached pa1" [ "$acc_a" = 0 ]
check "no replayed packet reached pb1" [ "$acc_b" = 0 ]
check "a's kernel saw the replayed packets and refused them" [ "$ra" -ge 20 ]
check "b's kernel saw the replayed packets and refused them" [ "$rb" -ge 20 ]

}
flood_fault flush-a ip -n a xfrm state flush
replay
sleep 7   # past the 5 s grace period: the old SAs are gone from b
flood_fault flush-b ip -n b xfrm state flush
sleep 7
one=$(out_spi a 198.18.0.2)
flood_fault delete-one ip -n a xfrm state delete src 198.18.0.1 dst 198.18.0.2 proto esp spi "$one"
for x in a b; do
  n=$(ip netns exec $x wget -qO- http://198.18.0.$(node_index $x):9472/metrics | awk '/^cipherlane_sas_lost_total/ {print $2}')
  echo "  node $x: cipherlane_sas_lost_total $n"
  check "node $x counted its lost SAs" [ "${n:-0}" -gt 0 ]
done
grep -h 'keys are burned' /tmp/agent-a.log /tmp/agent-b.log | head -n 3 | cut -c1-300

log "no (SPI, key) was ever added twice to either kernel"
for x in a b; do kill "$(cat /tmp/monitor-$x.pid)" 2>/dev/null; done
added() { # monitor output -> "spi key" for each SA added (not deleted, updated or expired)
  awk '/^[^ \t]/ { add = ($1 == "src") } add && /proto esp spi/ { for (i = 1; i <= NF; i++) if ($i == "spi") spi = $(i + 1) }
       add && /aead/ { for (i = 1; i <= NF; i++) if ($i == "aead") print spi, $(i + 2) }' "$1"
}
for x in a b; do
  added /tmp/monitor-$x.txt | grep -v '^0x0c1affff ' > /tmp/added-$x.txt   # the start-up ESP probe (never carries traffic)
  echo "  node $x: $(wc -l < /tmp/added-$x.txt) SAs added, $(sort /tmp/added-$x.txt | uniq -d | wc -l) (SPI, key) pairs added twice"
  check "node $x: SAs were added (the monitor saw them)" [ "$(wc -l < /tmp/added-$x.txt)" -ge 8 ]
  check "node $x: no (SPI, key) pair added twice" [ -z "$(sort /tmp/added-$x.txt | uniq -d)" ]
  check "node $x: no key added twice under any SPI" [ -z "$(cut -d' ' -f2 /tmp/added-$x.txt | sort | uniq -d)" ]
done
check "with everything healed, the pair still talks" mesh a b
for x in a b; do echo "  xfrm_stat $x: $(xfrm_errors $x | tr -s ' \t' ' ' | tr '\n' ';')"; done
log "sa loss passed"
