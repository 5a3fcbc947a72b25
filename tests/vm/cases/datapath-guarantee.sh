#!/bin/sh
# The guarantee of DESIGN.md §3, with the layout programmed by the real agent's netlink adapter:
# pod -> remote pod, host -> remote pod, NodePort-style DNAT to a remote pod and pod -> peer node IP
# all cross the underlay as ESP only (each checked with its own capture); a remote pod CIDR without
# an SA is blocked, never sent in clear; applying again changes nothing; metrics count the traffic.
. /repo/tests/vm/datapath.sh
dp_topology
dp_keyed
check "applying the same state again changes nothing" sh -c "/sbin/ip netns exec a $AGENT datapath apply --state /tmp/state-a.json | grep -q 'applied: 0 added, 0 changed, 0 deleted'"
ip -n a xfrm policy | grep -E '^src|dir|tmpl|action' | sed 's/^/  a: /' | head -n 40
check "the tunnel comes up (first reply within 20s)" wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11

guarantee() { # NAME COMMAND...: run with a fresh capture; the wire must carry ESP only, no marker
  name=$1; shift
  capture_start "/tmp/$name.pcap"
  check "$name works" "$@"
  capture_stop
  check "$name crossed the wire as ESP only" wire_report "/tmp/$name.pcap" 10.244.0.0/16
}
guarantee pod-to-remote-pod ip netns exec pa1 ping -c 5 -i 0.2 -W 2 -p $MARKER_HEX 10.244.2.11
guarantee host-to-remote-pod ip netns exec a ping -c 5 -i 0.2 -W 2 -p $MARKER_HEX 10.244.2.11
guarantee pod-to-peer-node-ip ip netns exec pa1 ping -c 5 -i 0.2 -W 2 -p $MARKER_HEX 198.18.0.2
guarantee remote-pod-to-host ip netns exec pb1 ping -c 5 -i 0.2 -W 2 -p $MARKER_HEX 198.18.0.1

# NodePort as kube-proxy programs it: DNAT the node port to a remote pod, masquerade to the node IP.
ip netns exec pb1 /sbin/iperf3 -s -D -p 8080 >/dev/null 2>&1
ip netns exec a /sbin/nft -f - <<'NFT'
table ip kubeproxy {
  chain pre { type nat hook prerouting priority -100; tcp dport 30080 dnat to 10.244.2.11:8080; }
  chain post { type nat hook postrouting priority 100; ip daddr 10.244.2.11 tcp dport 8080 masquerade; }
}
NFT
wait_for 10 ip netns exec pb1 sh -c 'cat /proc/net/tcp | grep -q ":1F90 "' || true
# Nothing listens on node a: an answer on 198.18.0.1:30080 can only come from the remote pod.
guarantee nodeport-dnat-to-remote-pod /sbin/iperf3 -c 198.18.0.1 -p 30080 -n 256K

before=$(stat_of a XfrmOutPolBlock)
check_not "a pod CIDR of the cluster without an SA is blocked" ip netns exec pa1 ping -c 2 -W 1 10.244.9.9
after=$(stat_of a XfrmOutPolBlock)
check "the fail-closed block policy counted the drops (XfrmOutPolBlock $before -> $after)" [ "$after" -gt "$before" ]

ip netns exec a "$AGENT" datapath metrics --state /tmp/state-a.json > /tmp/metrics.txt
grep -E 'cipherlane_(xfrm_policies|xfrm_states|peer_packets_total|peer_sa_age)' /tmp/metrics.txt | sed 's/^/  /'
check "metrics count the peer's packets" sh -c "grep -E '^cipherlane_peer_packets_total\{peer=\"b\",direction=\"out\"\} [1-9]' /tmp/metrics.txt"
check "metrics include the kernel's XFRM counters" grep -q 'cipherlane_xfrm_stat{counter="XfrmOutPolBlock"}' /tmp/metrics.txt
check "hash thresholds fit the /24 pod CIDRs" sh -c "/sbin/ip -n a -s -s xfrm policy count | grep -q 'IPv4 thresholds: local 0 remote 24'"
log "guarantee cases passed"
