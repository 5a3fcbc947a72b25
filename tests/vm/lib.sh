#!/bin/sh
# Shell helpers for VM cases (busybox sh). Source it: . /repo/tests/vm/lib.sh
#
# The underlay is a bridge br0 in the VM's root namespace (198.18.0.254/24), so that node namespaces
# can also reach the host's API server (10.0.2.2, through nftables masquerade on eth0). Capture "the
# wire" on br0 (never on a node's own interface: a receiver's interface also shows the decrypted inner
# packets that XFRM re-injects there).
set -u
# busybox sh prefers its own applets over $PATH: name the real tools explicitly
ip() { /sbin/ip "$@"; }
ping() { /sbin/ping "$@"; }
tcpdump() { /sbin/tcpdump "$@"; }
nft() { /sbin/nft "$@"; }
iperf3() { /sbin/iperf3 "$@"; }
BIN=${CIPHERLANE_BIN:-/repo/target/debug}
OUT=${OUT:-/out}
MARKER_HEX=434c525445585421   # "CLRTEXT!" as a ping payload pattern
MARKER=CLRTEXT!

log() { echo "[$(date +%H:%M:%S)] $*"; }
fail() { echo "FAIL: $*"; exit 1; }
check() { # DESCRIPTION COMMAND...: run, print ok/FAIL, exit on failure
  d=$1; shift
  if "$@" >/tmp/check.out 2>&1; then echo "ok   $d"; else echo "FAIL $d"; sed 's/^/     /' /tmp/check.out | tail -n 20; exit 1; fi
}
check_not() { # DESCRIPTION COMMAND...: the command must fail
  d=$1; shift
  if "$@" >/tmp/check.out 2>&1; then echo "FAIL $d (it succeeded)"; sed 's/^/     /' /tmp/check.out | tail -n 20; exit 1; else echo "ok   $d"; fi
}
wait_for() { # SECONDS COMMAND...: poll until the command succeeds
  t=$1; shift; i=0
  while [ $i -lt $((t * 5)) ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; i=$((i + 1)); done
  return 1
}

underlay_up() { # the bridge, NAT towards the host's loopback only
  ip link add br0 type bridge
  ip link set br0 up
  ip addr add 198.18.0.254/24 dev br0
  nft add table ip lab
  nft add chain ip lab post '{ type nat hook postrouting priority 100 ; }'
  nft add rule ip lab post ip saddr 198.18.0.0/15 ip daddr 10.0.2.2 oifname eth0 masquerade
}

node_up() { # NAME IP: a node namespace on the underlay with a default route (proxy ARP needs one)
  n=$1; a=$2
  ip netns add "$n"
  ip link add "u$n" type veth peer name "p$n"
  ip link set "u$n" netns "$n"
  ip link set "p$n" master br0; ip link set "p$n" up
  ip -n "$n" link set lo up; ip -n "$n" link set "u$n" name eth0 2>/dev/null || true
  dev=$(ip -n "$n" -o link show | awk -F': ' '$2 !~ /^lo/ {print $2}' | cut -d@ -f1 | head -n 1)
  ip -n "$n" link set "$dev" up
  ip -n "$n" addr add "$a/24" dev "$dev"
  ip -n "$n" route add default via 198.18.0.254 dev "$dev"
  ip netns exec "$n" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
}

pod_up() { # NODE POD IP: a pod on a point-to-point veth, wired by hand as the CNI plugin would
  ip netns add "$2"
  ip link add "h$2" type veth peer name eth0 netns "$2"
  ip link set "h$2" netns "$1"
  ip -n "$2" link set lo up; ip -n "$2" link set eth0 up
  ip -n "$2" addr add "$3/32" dev eth0
  ip -n "$2" route add 169.254.1.1 dev eth0 scope link
  ip -n "$2" route add default via 169.254.1.1 dev eth0
  ip -n "$1" link set "h$2" up
  ip netns exec "$1" sh -c "echo 1 > /proc/sys/net/ipv4/conf/h$2/proxy_arp"
  ip -n "$1" route add "$3/32" dev "h$2" scope link
}

capture_start() { # FILE [FILTER]: capture the wire (br0)
  /sbin/tcpdump -Z root -U -n -i br0 -w "$1" ${2:-} 2>/tmp/tcpdump.err &
  CAPTURE_PID=$!
  wait_for 5 grep -q listening /tmp/tcpdump.err || true
}
capture_stop() { sleep 0.5; kill "$CAPTURE_PID" 2>/dev/null; wait "$CAPTURE_PID" 2>/dev/null; }

wire_report() { # FILE POD_CIDR: print ESP count, clear pod packets, marker; fail if anything leaked
  f=$1; cidr=$2
  esp=$(/sbin/tcpdump -n -r "$f" esp 2>/dev/null | grep -c ESP)
  clear=$(/sbin/tcpdump -n -r "$f" "ip and not esp and net $cidr" 2>/dev/null | grep -c .)
  if grep -q "$MARKER" "$f"; then marker=SEEN; else marker=absent; fi
  echo "wire: $esp ESP packets, $clear clear-text packets to/from pod addresses ($cidr), marker $marker"
  [ "$clear" -gt 0 ] && /sbin/tcpdump -n -r "$f" "ip and not esp and net $cidr" 2>/dev/null | head -n 5
  [ "$esp" -gt 0 ] && [ "$clear" = 0 ] && [ "$marker" = absent ]
}

xfrm_errors() { # NODE: the non-zero XFRM error counters of a node
  ip netns exec "$1" cat /proc/net/xfrm_stat | awk '$2 != 0'
}
