#!/bin/sh
# Benchmark (not a test): per-packet cost of the datapath in the VM with 1 and with 1,000 peers, with
# the kernel's default policy hash thresholds (32/32: every 0/0 -> pod CIDR selector is inexact) and
# with the thresholds the agent sets (local 0, remote = the pod CIDR prefix: per-peer policies hashed).
# 64-byte UDP from a pod on node a to a pod on node b through ESP (iperf3 -b 0), 5 s per point, three
# interleaved rounds (median reported); and node -> node in clear (policy lookups without crypto).
# Writes /out/datapath-bench.txt. Run: tests/vm/run.sh tests/vm/bench/datapath-bench.sh
. /repo/tests/vm/datapath.sh
dp_topology
SECS=${BENCH_SECS:-5}

peers_json() { # SELF_IP N: N-1 extra keyed peers besides the real one, as JSON fragments
  i=1
  while [ $i -lt "$2" ]; do
    hi=$((100 + i / 250)); lo=$((i % 250))
    printf ',{"name":"n%d","nodeIP":"198.19.%d.%d","podCIDRs":["10.%d.%d.0/24"],"keys":{"suite":"aes-gcm-128","inbound":[{"spi":%d,"key":"%s"}],"outbound":[{"spi":%d,"key":"%s"}]}}' \
      $i $((i / 250)) $((lo + 1)) $hi $lo $((65536 + i)) "$K1" $((131072 + i)) "$K2"
    i=$((i + 1))
  done
}
write_state() { # NODE IP CIDR PEER PEER_IP PEER_CIDR IN OUT KIN KOUT N
  printf '{"local":{"name":"%s","nodeIP":"%s","podCIDRs":["%s"]},"clusterPodCIDRs":["10.0.0.0/8"],"peers":[{"name":"%s","nodeIP":"%s","podCIDRs":["%s"],"keys":{"suite":"aes-gcm-128","inbound":[{"spi":%d,"key":"%s"}],"outbound":[{"spi":%d,"key":"%s"}]}}%s]}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$9" "$8" "${10}" "$(peers_json "$2" "${11}")" > "/tmp/state-$1.json"
}
program() { # N peers on both nodes
  write_state a 198.18.0.1 10.244.1.0/24 b 198.18.0.2 10.244.2.0/24 4098 4097 "$K2" "$K1" "$1"
  write_state b 198.18.0.2 10.244.2.0/24 a 198.18.0.1 10.244.1.0/24 4097 4098 "$K1" "$K2" "$1"
  t0=$(date +%s)
  apply_node a >/dev/null || fail "apply a ($1 peers)"
  apply_node b >/dev/null || fail "apply b ($1 peers)"
  echo "programmed $1 peers per node in $(( $(date +%s) - t0 ))s: $(ip -n a xfrm policy | grep -c '^src') policies, $(ip -n a xfrm state | grep -c '^src') SAs on a"
}
ip netns exec pb1 /sbin/iperf3 -s -D -p 5201 >/dev/null 2>&1
ip netns exec b /sbin/iperf3 -s -D -p 5202 >/dev/null 2>&1
measure() { # LABEL [clear]: 64-byte UDP, received packets per second (appended to /tmp/pps-LABEL)
  # pod a -> pod b through ESP; with "clear": node a -> node b in clear, which still makes the kernel
  # look up the policies on output and input for every packet, without the (emulated) AES-GCM cost.
  if [ "${2:-}" = clear ]; then
    out=$(ip netns exec a /sbin/iperf3 -c 198.18.0.2 -p 5202 -u -l 64 -b 0 -t "$SECS" 2>&1)
  else
    out=$(ip netns exec pa1 /sbin/iperf3 -c 10.244.2.11 -u -l 64 -b 0 -t "$SECS" 2>&1)
  fi
  line=$(echo "$out" | grep receiver | tail -n 1)
  total=$(echo "$line" | grep -o '[0-9]*/[0-9]*' | tail -n 1)
  lost=${total%/*}; sent=${total#*/}
  got=$((sent - lost)); pps=$((got / SECS))
  [ "$pps" -gt 0 ] || { echo "$out" | tail -n 5; fail "no packets measured ($1)"; }
  ns=$((1000000000 / pps))
  printf '  %-44s %6d pkt/s received  %8d ns/packet  (sent %d, lost %d)\n' "$1" "$pps" "$ns" "$sent" "$lost" | tee -a /out/datapath-bench.txt
  echo "$pps" >> "/tmp/pps-$(echo "$1" | tr -c 'a-z0-9' _)"
}
median() { # LABEL: the median of the measured pps
  sort -n "/tmp/pps-$(echo "$1" | tr -c 'a-z0-9' _)" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}
: > /out/datapath-bench.txt
echo "# $(uname -r), qemu TCG, $(grep -c ^processor /proc/cpuinfo) vCPU; 64-byte UDP pod->remote pod via ESP aes-gcm-128, ${SECS}s per point" | tee -a /out/datapath-bench.txt
for n in 1 1000; do
  program "$n" | tee -a /out/datapath-bench.txt
  wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11 || fail "tunnel down with $n peers"
  for round in 1 2 3; do # interleaved, so that host noise hits every configuration alike
    for node in a b; do ip -n $node xfrm policy set hthresh4 32 32; done
    measure "peers=$n hthresh4=32/32 (kernel default)"
    measure "clear node->node peers=$n hthresh4=32/32" clear
    for node in a b; do ip -n $node xfrm policy set hthresh4 0 24; done
    measure "peers=$n hthresh4=0/24 (set by the agent)"
    measure "clear node->node peers=$n hthresh4=0/24" clear
  done
  for l in "peers=$n hthresh4=32/32 (kernel default)" "peers=$n hthresh4=0/24 (set by the agent)" \
           "clear node->node peers=$n hthresh4=32/32" "clear node->node peers=$n hthresh4=0/24"; do
    m=$(median "$l")
    printf 'MEDIAN %-44s %6d pkt/s  %8d ns/packet\n' "$l" "$m" $((1000000000 / m)) | tee -a /out/datapath-bench.txt
  done
  ip -n a -s -s xfrm policy count | tr -d '\t' | sed 's/^/  a: /' | tee -a /out/datapath-bench.txt
done
cat /out/datapath-bench.txt
