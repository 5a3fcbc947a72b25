#!/bin/sh
# Helpers for the datapath VM cases (tests/vm/cases/datapath-*.sh): two nodes a and b on the underlay,
# pods on point-to-point veths, and the real netlink adapter programming them from state files through
# `cipherlane-agent datapath apply` (the layout of DESIGN.md §3, keys given in the file, as the key
# exchange would hand them over).
. /repo/tests/vm/lib.sh
AGENT="$BIN/cipherlane-agent"
K1=00112233445566778899aabbccddeeff01020304   # a -> b, epoch 1
K2=a0b1c2d3e4f5061728394a5b6c7d8e9f01020304   # b -> a, epoch 1
K3=ffeeddccbbaa99887766554433221100a1b2c3d4   # a -> b, epoch 2
K4=1f2e3d4c5b6a79880716253443526170b1b2b3b4   # b -> a, epoch 2

dp_topology() { # two nodes, pods pa1 pa2 on a, pb1 on b
  underlay_up
  node_up a 198.18.0.1
  node_up b 198.18.0.2
  pod_up a pa1 10.244.1.11
  pod_up a pa2 10.244.1.12
  pod_up b pb1 10.244.2.11
}

sa_list() { # "SPI:KEY SPI:KEY ...": a JSON list of SAs
  first=1; printf '['
  for s in $1; do
    [ $first = 1 ] || printf ','
    first=0; printf '{"spi":%d,"key":"%s"}' "$((${s%%:*}))" "${s#*:}"
  done
  printf ']'
}

# state FILE NAME IP CIDR PEER PEER_IP PEER_CIDR "INBOUND" "OUTBOUND" [EXTRA_TOP_LEVEL_JSON]
# INBOUND/OUTBOUND are "SPI:KEY ..." oldest first; "-" for a peer given without keys (adoption).
state() {
  f=$1; tmp=$f.tmp
  if [ "$8" = - ]; then keys=""; else
    keys=",\"keys\":{\"suite\":\"${SUITE:-aes-gcm-128}\",\"inbound\":$(sa_list "$8"),\"outbound\":$(sa_list "$9")}"
  fi
  printf '{"local":{"name":"%s","nodeIP":"%s","podCIDRs":["%s"]},"clusterPodCIDRs":["10.244.0.0/16"]%s,"peers":[{"name":"%s","nodeIP":"%s","podCIDRs":["%s"]%s}]}\n' \
    "$2" "$3" "$4" "${10:-}" "$5" "$6" "$7" "$keys" > "$tmp"
  mv "$tmp" "$f"
}
state_a() { state /tmp/state-a.json a 198.18.0.1 10.244.1.0/24 b 198.18.0.2 10.244.2.0/24 "$@"; }
state_b() { state /tmp/state-b.json b 198.18.0.2 10.244.2.0/24 a 198.18.0.1 10.244.1.0/24 "$@"; }

apply_node() { # NODE: one-shot apply of /tmp/state-NODE.json in the node's namespace
  ip netns exec "$1" "$AGENT" datapath apply --state "/tmp/state-$1.json"
}
hold_node() { # NODE: apply and keep re-applying on file changes (logs to /tmp/hold-NODE.log)
  ip netns exec "$1" "$AGENT" datapath apply --hold --state "/tmp/state-$1.json" \
    --metrics-addr "${2:-127.0.0.1:9472}" > "/tmp/hold-$1.log" 2>&1 &
  echo $! > "/tmp/hold-$1.pid"
  wait_for 20 grep -q holding "/tmp/hold-$1.log" || { cat "/tmp/hold-$1.log"; fail "agent on $1 did not start"; }
}
applied_count() { grep -c '^applied' "/tmp/hold-$1.log"; }
wait_applied() { # NODE N: until the holding agent applied N times (20 s at most)
  _wa=0   # not "i": sh has no local variables and callers loop over i
  while [ "$(grep -c '^applied' "/tmp/hold-$1.log")" -lt "$2" ]; do
    _wa=$((_wa + 1)); [ $_wa -gt 100 ] && return 1; sleep 0.2
  done
}

dp_keyed() { # both nodes keyed with the epoch-1 pair (one-shot apply)
  state_a "0x1002:$K2" "0x1001:$K1"
  state_b "0x1001:$K1" "0x1002:$K2"
  check "agent programs node a" apply_node a
  check "agent programs node b" apply_node b
}

spis() { # NODE: the SPIs of the node's SAs, sorted
  ip -n "$1" xfrm state | awk '/spi/ {for (i = 1; i <= NF; i++) if ($i == "spi") print $(i+1)}' | sort | tr '\n' ' '
}
stat_of() { ip netns exec "$1" cat /proc/net/xfrm_stat | awk -v k="$2" '$1 == k {print $2}'; }
