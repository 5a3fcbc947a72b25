#!/bin/sh
# Smoke test of the lab's kernel: two node namespaces on the underlay, a pod on each, an ESP tunnel
# keyed by hand with `ip xfrm` (AES-GCM-128, tunnel mode), pings between the pods carrying a marker;
# the capture on the underlay must hold ESP only, and the marker must be absent.
. /repo/tests/vm/lib.sh
log "kernel $(uname -r); building two nodes on the underlay 198.18.0.0/24"
underlay_up
node_up a 198.18.0.1
node_up b 198.18.0.2
pod_up a pa1 10.244.1.11
pod_up b pb1 10.244.2.11
ip -n a route add 10.244.2.0/24 via 198.18.0.2
ip -n b route add 10.244.1.0/24 via 198.18.0.1
log "keying the tunnel by hand: aead rfc4106(gcm(aes)) 128-bit, one SA per direction"
k1=0x00112233445566778899aabbccddeeff01020304
k2=0xa0b1c2d3e4f5061728394a5b6c7d8e9f01020304
for n in a b; do
  ip -n $n xfrm state add src 198.18.0.1 dst 198.18.0.2 proto esp spi 0x1001 reqid 1 mode tunnel \
    flag esn replay-window 1024 aead 'rfc4106(gcm(aes))' $k1 128 || fail "SA a->b on $n"
  ip -n $n xfrm state add src 198.18.0.2 dst 198.18.0.1 proto esp spi 0x1002 reqid 1 mode tunnel \
    flag esn replay-window 1024 aead 'rfc4106(gcm(aes))' $k2 128 || fail "SA b->a on $n"
done
pol() { # node src dst dir tsrc tdst
  ip -n $1 xfrm policy add src $2 dst $3 dir $4 tmpl src $5 dst $6 proto esp reqid 1 mode tunnel
}
pol a 10.244.1.0/24 10.244.2.0/24 out 198.18.0.1 198.18.0.2
pol a 10.244.2.0/24 10.244.1.0/24 fwd 198.18.0.2 198.18.0.1
pol a 10.244.2.0/24 10.244.1.0/24 in  198.18.0.2 198.18.0.1
pol b 10.244.2.0/24 10.244.1.0/24 out 198.18.0.2 198.18.0.1
pol b 10.244.1.0/24 10.244.2.0/24 fwd 198.18.0.1 198.18.0.2
pol b 10.244.1.0/24 10.244.2.0/24 in  198.18.0.1 198.18.0.2
ip -n a xfrm state | grep -E '^src|aead' | sed 's/0x[0-9a-f]\{16,\}/<key>/; s/^/  a: /'
check "the tunnel comes up (first reply within 20s)" wait_for 20 ip netns exec pa1 ping -c 1 -W 1 10.244.2.11
capture_start /tmp/wire.pcap
log "pinging pod 10.244.1.11 -> 10.244.2.11 with the marker \"$MARKER\" in every payload"
check "20 pings pod->remote pod, no loss" ip netns exec pa1 ping -c 20 -i 0.1 -W 2 -p $MARKER_HEX 10.244.2.11
capture_stop
check "the underlay carried ESP only, the marker never" wire_report /tmp/wire.pcap 10.244.0.0/16
/sbin/tcpdump -n -r /tmp/wire.pcap esp 2>/dev/null | head -n 3 | sed 's/^/  wire: /'
log "control: with the SAs and policies removed, the same check must see the marker in clear"
for n in a b; do ip -n $n xfrm policy flush; ip -n $n xfrm state flush; done
capture_start /tmp/clear.pcap
ip netns exec pa1 ping -c 3 -i 0.2 -W 2 -p $MARKER_HEX 10.244.2.11 >/dev/null 2>&1
capture_stop
check_not "the wire check catches clear text when encryption is off" wire_report /tmp/clear.pcap 10.244.0.0/16
log "smoke test passed"
