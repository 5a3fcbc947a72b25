#!/bin/sh
# Peer churn with real SAs: a holding agent on node a sees a keyed peer appear and disappear again and
# again (each time with fresh SPIs). Afterwards exactly the steady state is left: no SA, policy or
# route leaked, and traffic to the steady peer still flows. (1,000 cycles of policies and routes run
# on the host's kernel in crates/xfrm/tests/netns.rs; here, with SAs, CYCLES cycles.)
. /repo/tests/vm/datapath.sh
CYCLES=${CYCLES:-300}
dp_topology
state_b "0x1001:$K1" "0x1002:$K2"
check "agent programs node b" apply_node b
steady() { state_a "0x1002:$K2" "0x1001:$K1"; }
steady
hold_node a
check "the tunnel comes up" wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11
base_pol=$(ip -n a xfrm policy | grep -c '^src'); base_sa=$(ip -n a xfrm state | grep -c '^src')
base_rt=$(ip -n a route show proto 193 | grep -c .)
log "steady state: $base_pol policies, $base_sa SAs, $base_rt routes; $CYCLES add/remove cycles"
c=0; n=1
while [ $c -lt "$CYCLES" ]; do
  c=$((c + 1)); i=$c
  printf '{"local":{"name":"a","nodeIP":"198.18.0.1","podCIDRs":["10.244.1.0/24"]},"clusterPodCIDRs":["10.244.0.0/16"],"peers":[{"name":"b","nodeIP":"198.18.0.2","podCIDRs":["10.244.2.0/24"],"keys":{"suite":"aes-gcm-128","inbound":[{"spi":4098,"key":"%s"}],"outbound":[{"spi":4097,"key":"%s"}]}},{"name":"c%d","nodeIP":"198.19.%d.%d","podCIDRs":["10.244.%d.0/24"],"keys":{"suite":"aes-gcm-128","inbound":[{"spi":%d,"key":"%s"}],"outbound":[{"spi":%d,"key":"%s"}]}}]}\n' \
    "$K2" "$K1" $i $((i / 200)) $((i % 200 + 1)) $((100 + i % 100)) $((65536 + i)) "$K3" $((131072 + i)) "$K4" > /tmp/state-a.json.tmp
  mv /tmp/state-a.json.tmp /tmp/state-a.json
  n=$((n + 1)); wait_applied a $n || fail "cycle $c: peer not added"
  steady
  n=$((n + 1)); wait_applied a $n || fail "cycle $c: peer not removed"
  [ $((c % 25)) = 0 ] && log "$c cycles: $(ip -n a xfrm state | grep -c '^src') SAs, $(ip -n a xfrm policy | grep -c '^src') policies"
done
grep -v '^applied: 8 added, 0 changed, 0 deleted\|^applied: 0 added, 0 changed, 8 deleted' /tmp/hold-a.log | head -n 5 | sed 's/^/  agent a: /'
check "every cycle added and removed exactly the peer's 2 SAs, 5 policies and 1 route" \
  [ "$(grep -c '^applied: 8 added, 0 changed, 0 deleted' /tmp/hold-a.log)" = "$CYCLES" ]
check "no policy leaked" [ "$(ip -n a xfrm policy | grep -c '^src')" = "$base_pol" ]
check "no SA leaked" [ "$(ip -n a xfrm state | grep -c '^src')" = "$base_sa" ]
check "no route leaked" [ "$(ip -n a route show proto 193 | grep -c .)" = "$base_rt" ]
check "the steady peer still works" ip netns exec pa1 ping -c 3 -i 0.2 -W 2 10.244.2.11
log "churn passed"
