#!/bin/sh
# Benchmark (not a test): the per-packet cost of the second fence (table inet cipherlane) in the VM.
# Two hand-keyed nodes (ESP aes-gcm-128), 64-byte UDP pod a -> pod b (iperf3 -u -l 64 -b 0), 5 s per
# point, three interleaved rounds with and without the fence on both nodes, median; the ratio is
# pkt/s with the fence over pkt/s without. Every packet of this flow runs the fence's rules to their
# last expression (pod CIDR matches, then `rt ipsec` / `meta ipsec` finds the transform): the worst
# case for accepted traffic. Also node -> node in clear (no pod CIDR: the rules stop at the first
# comparison). The table is the agent's (same chains, priorities and expressions as
# crates/xfrm/src/nft.rs writes; the netns test the_fence_table_is_installed_whole_read_back_as_written
# checks that `nft list` of the agent's table reads exactly so), loaded here with nft -f.
# Writes /out/fence-bench.txt. Run: tests/vm/run.sh tests/vm/bench/fence-bench.sh (or bench/fence.sh)
. /repo/tests/vm/datapath.sh
dp_topology
dp_keyed
SECS=${BENCH_SECS:-5}
fence_on() { # NODE LOCAL_CIDR PEER_IP
  cat > /tmp/fence-$1.nft <<NFT
table inet cipherlane {
  set peer_nodes4 { type ipv4_addr; elements = { $3 } }
  chain out {
    type filter hook postrouting priority srcnat + 10; policy accept;
    ip daddr 10.244.0.0/16 ip daddr != $2 rt ipsec missing counter drop
    ip saddr $2 ip daddr @peer_nodes4 rt ipsec missing counter drop
  }
  chain in {
    type filter hook prerouting priority raw; policy accept;
    ip saddr 10.244.0.0/16 ip saddr != $2 meta ipsec missing counter drop
  }
}
NFT
  ip netns exec "$1" nft -f /tmp/fence-$1.nft || fail "loading the fence on $1"
}
fence_off() { ip netns exec "$1" nft delete table inet cipherlane 2>/dev/null || true; }
ip netns exec pb1 /sbin/iperf3 -s -D -p 5201 >/dev/null 2>&1
ip netns exec b /sbin/iperf3 -s -D -p 5202 >/dev/null 2>&1
sleep 1
measure() { # LABEL [clear]
  if [ "${2:-}" = clear ]; then
    out=$(ip netns exec a /sbin/iperf3 -c 198.18.0.2 -p 5202 -u -l 64 -b 0 -t "$SECS" 2>&1)
  else
    out=$(ip netns exec pa1 /sbin/iperf3 -c 10.244.2.11 -u -l 64 -b 0 -t "$SECS" 2>&1)
  fi
  total=$(echo "$out" | grep receiver | tail -n 1 | grep -o '[0-9]*/[0-9]*' | tail -n 1)
  lost=${total%/*}; sent=${total#*/}
  got=$((sent - lost)); pps=$((got / SECS))
  [ "$pps" -gt 0 ] || { echo "$out" | tail -n 5; fail "no packets measured ($1)"; }
  printf '  %-36s %6d pkt/s received  %8d ns/packet  (sent %d, lost %d)\n' "$1" "$pps" $((1000000000 / pps)) "$sent" "$lost" | tee -a /out/fence-bench.txt
  echo "$pps" >> "/tmp/pps-$(echo "$1" | tr -c 'a-z0-9' _)"
}
median() { sort -n "/tmp/pps-$(echo "$1" | tr -c 'a-z0-9' _)" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
: > /out/fence-bench.txt
echo "# $(uname -r), qemu TCG, $(grep -c ^processor /proc/cpuinfo) vCPU; 64-byte UDP, ${SECS}s per point, 3 interleaved rounds" | tee -a /out/fence-bench.txt
wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11 || fail "tunnel down"
for round in 1 2 3; do
  fence_off a; fence_off b
  measure "esp pod->pod without fence"
  measure "clear node->node without fence" clear
  fence_on a 10.244.1.0/24 198.18.0.2; fence_on b 10.244.2.0/24 198.18.0.1
  measure "esp pod->pod with fence"
  measure "clear node->node with fence" clear
done
drops=$(ip netns exec a nft list table inet cipherlane | grep -o 'packets [0-9]*' | awk '{s += $2} END {print s + 0}')
echo "  fence drops on a during the bench: $drops (must be 0: every packet was encrypted or not pod traffic)" | tee -a /out/fence-bench.txt
[ "$drops" = 0 ] || fail "the fence dropped accepted traffic"
for kind in "esp pod->pod" "clear node->node"; do
  off=$(median "$kind without fence"); on=$(median "$kind with fence")
  printf 'BENCH fence_ratio %-18s %s (median pkt/s with fence %d / without %d; ns/packet %d vs %d)\n' \
    "$(echo "$kind" | tr ' >' '_' | tr -d '-')" "$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a / b}')" "$on" "$off" \
    $((1000000000 / on)) $((1000000000 / off)) | tee -a /out/fence-bench.txt
done
