#!/bin/sh
# Runs in the VM between cases: ends every process a case left behind and removes its network state,
# so that each case starts from the same clean slate.
ip() { /sbin/ip "$@"; }
nft() { /sbin/nft "$@"; }
[ -f /tmp/operator.pid ] && kill -9 "$(cat /tmp/operator.pid)" 2>/dev/null
for p in cipherlane-agent cipherlane-operator cipherlane tcpdump iperf3 ping nc sleep; do killall -9 "$p" 2>/dev/null; done
ip -all netns delete 2>/dev/null
for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
  case $l in lo|eth0) ;; *) ip link del "$l" 2>/dev/null ;; esac
done
ip xfrm state flush; ip xfrm policy flush
nft flush ruleset 2>/dev/null
rm -rf /run/cipherlane /var/lib/cipherlane /tmp/case.* /tmp/agent-* /tmp/operator.* /run/cl /var/lib/cl /etc/cni /var/log/cl
true
