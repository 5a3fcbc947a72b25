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
tcpreplay() { /sbin/tcpreplay "$@"; }
BIN=${CIPHERLANE_BIN:-/repo/target/debug}
OUT=${OUT:-/out}
MARKER_HEX=434c525445585421   # "CLRTEXT!" as a ping payload pattern
MARKER=CLRTEXT!

log() { echo "[$(date +%H:%M:%S)] $*"; }
fail() {
  echo "FAIL: $*"
  for f in /tmp/agent-*.log /tmp/operator.log; do [ -f "$f" ] && { echo "--- $f (tail) ---"; tail -n 25 "$f"; }; done
  exit 1
}
check() { # DESCRIPTION COMMAND...: run, print ok/FAIL, exit on failure
  d=$1; shift
  if "$@" >/tmp/check.out 2>&1; then echo "ok   $d"; else sed 's/^/     /' /tmp/check.out | tail -n 20; fail "$d"; fi
}
check_not() { # DESCRIPTION COMMAND...: the command must fail
  d=$1; shift
  if "$@" >/tmp/check.out 2>&1; then echo "FAIL $d (it succeeded)"; sed 's/^/     /' /tmp/check.out | tail -n 20; exit 1; else echo "ok   $d"; fi
}
uptime_s() { cut -d. -f1 /proc/uptime; }
wait_for() { # SECONDS COMMAND...: poll until the command succeeds, for at most SECONDS of wall-clock time
  t=$1; shift; end=$(( $(uptime_s) + t ))
  while [ "$(uptime_s)" -lt "$end" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  "$@" >/dev/null 2>&1
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

# --- the real system: API server objects, agents, pods through the CNI plugin ---------------------
KUBECTL=$(ls /repo/.cache/tools/*/bin/kubectl 2>/dev/null | head -n 1)
HELM=$(ls /repo/.cache/tools/*/bin/helm 2>/dev/null | head -n 1)
CNITOOL=$(ls /repo/.cache/tools/*/bin/cnitool 2>/dev/null | head -n 1)
k() { "$KUBECTL" --kubeconfig /out/kubeconfig "$@"; }

lab_api_ready() { # the lab API server must be reachable from the VM
  [ -f /out/kubeconfig ] || fail "no /out/kubeconfig: start the lab API server before the VM (tests/lab/apiserver.sh start)"
  [ -n "$KUBECTL" ] && [ -n "$CNITOOL" ] || fail "kubectl/cnitool not built (tests/tools/build.sh)"
  wait_for 20 k get --raw /readyz || fail "the lab API server is not reachable at 10.0.2.2"
  k apply --server-side --force-conflicts -f /repo/deploy/crds/ >/dev/null || fail "cannot install the CRDs"
  k wait --for condition=established --timeout=30s crd/cipherlanenodes.cipherlane.io crd/rotationpolicies.cipherlane.io >/dev/null
  # agents and operator run as the chart deploys them: its ServiceAccounts, RBAC and admission policy
  identities install || fail "cannot install the chart's RBAC"
  # objects an earlier VM case left behind would be peers of this case's nodes
  for n in $(k get nodes -l lab.cipherlane.io/vm -o name 2>/dev/null); do
    k delete cipherlanenode "${n#node/}" --ignore-not-found --wait=false >/dev/null 2>&1
  done
  k delete nodes -l lab.cipherlane.io/vm --ignore-not-found >/dev/null 2>&1
  k delete rotationpolicies -l lab.cipherlane.io/vm --ignore-not-found >/dev/null 2>&1
}

k8s_node() { # NAME IP POD_CIDR: a Node object as node IPAM and kubelet would write it (fresh)
  k delete cipherlanenode "$1" --ignore-not-found --wait=false >/dev/null 2>&1
  k delete node "$1" --ignore-not-found >/dev/null 2>&1
  printf 'apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n  labels: {kubernetes.io/hostname: %s, lab.cipherlane.io/vm: "true"}\nspec:\n  podCIDR: %s\n  podCIDRs: [%s]\n' "$1" "$1" "$3" "$3" | k apply -f - >/dev/null
  k patch node "$1" --subresource=status --type=merge \
    -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$2\"}]}}" >/dev/null
}

identities() { KUBECTL=$KUBECTL HELM=$HELM KUBECONFIG=/out/kubeconfig sh /repo/tests/lab/identities.sh "$@"; }

agent_start() { # NODE_NS NODE_NAME NODE_IP [extra flags]: the real agent in the node's namespace, with
  # the chart's agent ServiceAccount and a token bound to a Pod on its node (as the kubelet mounts it)
  ns=$1; name=$2; ip=$3; shift 3
  mkdir -p /run/cl/$ns /var/lib/cl/$ns /etc/cni/$ns /var/log/cl/$ns
  [ -f /run/cl/$ns.kubeconfig ] || identities agent "$name" /run/cl/$ns.kubeconfig || fail "no token for the agent on $name"
  # /sbin/ip, not the ip() function: a backgrounded function is a subshell, and $! would be its PID
  # rather than the agent's (ip netns exec and env both exec, so $! is the agent itself)
  /sbin/ip netns exec "$ns" /bin/env KUBECONFIG=/run/cl/$ns.kubeconfig RUST_LOG=${AGENT_LOG:-info} \
    "$BIN/cipherlane-agent" run --node-name "$name" --cluster-pod-cidrs 10.244.0.0/16 \
    --http-addr "$ip:9472" --state-dir /run/cl/$ns --data-dir /var/lib/cl/$ns \
    --cni-conf-dir /etc/cni/$ns --cni-log-dir /var/log/cl/$ns --resync 5s "$@" \
    >> "/tmp/agent-$ns.log" 2>&1 &
  echo $! > "/tmp/agent-$ns.pid"
}
agent_gone() { ! [ -d "/proc/$(cat /tmp/agent-$1.pid)" ] || grep -q '^State:.*Z' "/proc/$(cat /tmp/agent-$1.pid)/status"; }
agent_stop() { # graceful (SIGTERM), then SIGKILL; the process must be gone
  kill "$(cat /tmp/agent-$1.pid)" 2>/dev/null
  wait_for 5 agent_gone "$1" || kill -9 "$(cat /tmp/agent-$1.pid)" 2>/dev/null
  wait_for 5 agent_gone "$1" || fail "agent $1 (pid $(cat /tmp/agent-$1.pid)) did not stop"
}
agent_kill() { # SIGKILL; the process must be gone
  kill -9 "$(cat /tmp/agent-$1.pid)" 2>/dev/null
  wait_for 5 agent_gone "$1" || fail "agent $1 (pid $(cat /tmp/agent-$1.pid)) survived SIGKILL"
  grep -q cipherlane-agent "/proc/$(cat /tmp/agent-$1.pid)/cmdline" 2>/dev/null && fail "agent $1 still runs"
  true
}
agent_ready() { grep -q '"ready": *true' /run/cl/$1/agent-state.json 2>/dev/null; }
agent_log_tail() { echo "--- agent $1 log (tail) ---"; tail -n ${2:-30} "/tmp/agent-$1.log"; }

pod_add() { # NODE_NS POD: a pod created through the real CNI plugin via cnitool; prints its IP
  ip netns add "$2"
  out=$(ip netns exec "$1" env CNI_PATH="$BIN" NETCONFPATH=/etc/cni/$1 "$CNITOOL" add cipherlane "/run/netns/$2" 2>&1) || {
    echo "$out" >&2; return 1; }
  echo "$out" | tr -d ' \n' | grep -o '"address":"[0-9.]*' | head -n 1 | cut -d'"' -f4
}

# --- clusters of CASE_NODES nodes (3 by default; the full runs use 5) -------------------------------
# Nodes are named a, b, c, d, e, ... with node IP 198.18.0.<position> and pod CIDR 10.244.<position>.0/24;
# a node's first pod is p<node>1 and its IP is in the variable p<node> (pa, pb, ...).
case_nodes() { echo "a b c d e f g h" | cut -d' ' -f1-"${CASE_NODES:-3}"; }
node_index() { # NODE: its position (a=1)
  echo "a b c d e f g h" | tr ' ' '\n' | grep -n "^$1\$" | cut -d: -f1
}
mesh() { # NODE...: every listed node's pod reaches every other listed node's pod
  for x in "$@"; do for y in "$@"; do
    [ "$x" = "$y" ] && continue
    eval "dst=\$p$y"
    ip netns exec "p${x}1" ping -c 1 -W 1 "$dst" >/dev/null 2>&1 || { echo "p${x}1 -> p${y}1 ($dst) fails"; return 1; }
  done; done
}
nodes_up() { # PREFIX: every node of case_nodes on the underlay, with its Node object PREFIX-NODE
  for x in $(case_nodes); do
    i=$(node_index $x)
    node_up $x 198.18.0.$i
    k8s_node "$1-$x" 198.18.0.$i 10.244.$i.0/24
  done
}
agents_up() { # PREFIX: the real agent on every node of case_nodes (Node objects PREFIX-NODE), all ready,
  # a pod p<node>1 on each through the CNI plugin (its IP in p<node>), and the mesh keyed
  for x in $(case_nodes); do agent_start $x "$1-$x" 198.18.0.$(node_index $x); done
  for x in $(case_nodes); do wait_for 90 agent_ready $x || { agent_log_tail $x; fail "agent $x not ready"; }; done
  for x in $(case_nodes); do eval "p$x=\$(pod_add $x p${x}1)" || fail "CNI ADD on $x"; done
  check "$(case_nodes | wc -w) nodes keyed: every pod reaches every other node's pod (90s)" wait_for 90 mesh $(case_nodes)
}
lab_policy() { # NAME SUITE: a RotationPolicy for every node (rotation 1h, grace period 5s)
  printf 'apiVersion: cipherlane.io/v1alpha1\nkind: RotationPolicy\nmetadata: {name: %s, labels: {lab.cipherlane.io/vm: "true"}}\nspec: {suite: %s, rotationInterval: 1h, gracePeriod: 5s}\n' "$1" "$2" |
    k apply -f - >/dev/null || fail "RotationPolicy $1 rejected"
}
all_at_epoch() { # PREFIX EPOCH NODE...: the CipherlaneNodes PREFIX-NODE all report EPOCH
  pfx=$1; want=$2; shift 2
  [ "$(k get cipherlanenodes $(for x in "$@"; do printf '%s-%s ' "$pfx" "$x"; done) \
        -o jsonpath='{range .items[*]}{.status.epoch}{"\n"}{end}' | sort -u)" = "$want" ]
}

operator_start() { # the real operator in the VM's root namespace, restarted when it exits (as its
  # Deployment would be: it exits on purpose when it loses its leader Lease)
  identities operator /tmp/operator.kubeconfig || fail "no token for the operator"
  ( while true; do
      env KUBECONFIG=/tmp/operator.kubeconfig RUST_LOG=${OPERATOR_LOG:-info} POD_NAME=vm-operator \
        "$BIN/cipherlane-operator" --lease-namespace cipherlane-system --lease-name cipherlane-operator \
        >> /tmp/operator.log 2>&1
      echo "operator exited ($?); restarting in 1s" >> /tmp/operator.log
      sleep 1
    done ) &
  echo $! > /tmp/operator.pid
}
check_not_quiet() { ! "$@"; }
