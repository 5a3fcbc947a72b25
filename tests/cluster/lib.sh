#!/bin/sh
# The lab cluster inside the VM (busybox sh). Source it after tests/vm/lib.sh:
#   . /repo/tests/vm/lib.sh; . /repo/tests/cluster/lib.sh
#
# One VM, kind-style nodes: each node is a network namespace on the underlay bridge br0
# (198.18.0.<i>/24) plus its own mount namespace, held by a node "init" process, in which /etc/cni/net.d,
# /opt/cni/bin, /var/lib/kubelet, /var/lib/containerd, /run/containerd, /var/log, /run/cipherlane,
# /var/lib/cipherlane and /var/run/netns are the node's own folders (/nodes/<name>/fs/...). In it run
# Debian's containerd + runc, a real kubelet (its own cgroup root /<name>) that registers itself with a
# client certificate of the lab CA (system:node:<name>), and kube-proxy (nftables mode).
# The control plane runs on the host (tests/lab/apiserver.sh start-cluster); the host wrote the node
# identities to /out/cluster/ before the VM booted.
CL=/repo/.cache/cluster
TOOLS=$(dirname "$KUBECTL")
CLUSTER_CIDR=${CLUSTER_CIDR:-10.244.0.0/16}
NODE_DIRS="etc/cni/net.d opt/cni/bin var/lib/kubelet var/lib/containerd run/containerd var/log run/cipherlane var/lib/cipherlane var/run/netns etc/containerd"

cluster_nodes() { echo "a b c d e" | cut -d' ' -f1-"${CASE_CLUSTER_NODES:-2}"; }
node_pid() { cat "/nodes/$1/init.pid"; }
node_exec() { # NODE CMD...: run in the node (its network and mount namespaces)
  n=$1; shift
  nsenter -t "$(node_pid "$n")" -m -n -- "$@"
}
node_fs() { echo "/nodes/$1/fs"; }

cluster_host_up() { # once per VM: cgroup v2, containerd/runc on PATH, the underlay bridge
  [ -d "$CL/node/bin" ] || fail "no $CL/node: run tests/cluster/prepare.sh on the host"
  [ -f /out/cluster/kube-proxy.kubeconfig ] || fail "no /out/cluster identities: start the cluster with tests/lab/apiserver.sh start-cluster before the VM"
  mkdir -p /sys/fs/cgroup
  grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup || fail "cannot mount cgroup2"
  # every controller for the nodes' cgroup roots: the kubelet wants the root's cpu, cpuset, memory,
  # hugetlb and pids in its --cgroup-root
  controllers_on /sys/fs/cgroup || fail "cannot enable cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
  mkdir -p /nodes && mount -t tmpfs -o mode=755 nodes /nodes   # overlayfs needs a tmpfs (xattrs) under containerd
  mkdir -p /lib/x86_64-linux-gnu /usr/local/bin
  cp "$CL/node/lib/libseccomp.so.2" /lib/x86_64-linux-gnu/
  cp "$CL"/node/bin/* /usr/local/bin/
  export PATH=/usr/local/bin:$PATH
  underlay_up
  # pods (not only node IPs) may reach the host's API server through the kubernetes Service
  nft add rule ip lab post ip saddr "$CLUSTER_CIDR" ip daddr 10.0.2.2 oifname eth0 masquerade
}
controllers_on() { # CGROUP: enable every available controller for its children
  for c in $(cat "$1/cgroup.controllers"); do echo "+$c" > "$1/cgroup.subtree_control" || return 1; done
}

node_boot() { # NAME IP: the node's namespaces, then containerd, the images, kubelet and kube-proxy
  n=$1; a=$2; d=/nodes/$n
  node_up "$n" "$a"
  mkdir -p "$d/log"
  for x in $NODE_DIRS; do mkdir -p "$d/fs/$x"; done
  cp "$CL"/node/cni/* "$d/fs/opt/cni/bin/"   # the reference plugins a node ships (loopback for every sandbox)
  printf '%s\n' "$(echo "cipherlane-lab-node-$n-00000000000000000000" | cut -c1-32)" > "$d/machine-id"
  # the node's init: its mount namespace (ip netns exec makes one, with the node's own /sys)
  /sbin/ip netns exec "$n" sh -c "
    mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
    for x in $NODE_DIRS; do mkdir -p /\$x && mount -o bind $d/fs/\$x /\$x; done
    touch /etc/machine-id; mount -o bind $d/machine-id /etc/machine-id
    echo \$\$ > $d/init.pid
    exec sleep 1000000" > "$d/log/init.log" 2>&1 &
  wait_for 10 test -s "$d/init.pid" || fail "node $n: its init did not start"
  sleep 0.3
  mkdir -p "/sys/fs/cgroup/$n"
  controllers_on "/sys/fs/cgroup/$n" || fail "node $n: cgroup controllers: $(cat /sys/fs/cgroup/$n/cgroup.controllers)"
  cat > "$d/fs/etc/containerd/config.toml" <<T
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        NoPivotRoot = true
T
  node_containerd_start "$n"
  for img in "$CL"/images/*.tar; do
    base=$(cat "${img%.tar}.name")
    node_exec "$n" ctr -n k8s.io images import --base-name "$base" "$img" > /tmp/import.out 2>&1 ||
      { cat /tmp/import.out; fail "node $n: import $img"; }
  done
  for i in $(node_exec "$n" ctr -n k8s.io images ls -q | grep '^import-'); do node_exec "$n" ctr -n k8s.io images rm "$i" >/dev/null; done
  cat > "$d/kubelet.yaml" <<T
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /$n
failSwapOn: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}, x509: {clientCAFile: /out/cluster/ca.crt}}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
enforceNodeAllocatable: []
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
readOnlyPort: 0
serializeImagePulls: false
T
  cat > "$d/kube-proxy.yaml" <<T
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: /out/cluster/kube-proxy.kubeconfig}
hostnameOverride: node-$n
mode: nftables
clusterCIDR: $CLUSTER_CIDR
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: [primary]
T
  node_kubelet_start "$n" "$a"
  node_exec "$n" setsid "$TOOLS/kube-proxy" --config "$d/kube-proxy.yaml" -v 1 >> "$d/log/kube-proxy.log" 2>&1 < /dev/null &
  echo $! > "$d/kube-proxy.pid"
}

node_containerd_start() { # NODE
  d=/nodes/$1
  node_exec "$1" setsid containerd --config /etc/containerd/config.toml >> "$d/log/containerd.log" 2>&1 < /dev/null &
  echo $! > "$d/containerd.pid"
  wait_for 60 node_exec "$1" ctr version || { tail -20 "$d/log/containerd.log"; fail "node $1: containerd did not start"; }
}

node_kubelet_start() { # NODE IP
  d=/nodes/$1
  node_exec "$1" setsid "$TOOLS/kubelet" --config "$d/kubelet.yaml" --kubeconfig "/out/cluster/node-$1.kubeconfig" \
    --hostname-override "node-$1" --node-ip "$2" --root-dir /var/lib/kubelet -v 1 \
    >> "$d/log/kubelet.log" 2>&1 < /dev/null &
  echo $! > "$d/kubelet.pid"
}

node_ready() { [ "$(k get node "node-$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
node_registered() { k get node "node-$1" >/dev/null 2>&1; }

node_logs() { # NODE [LINES]: the tails of a node's component logs
  for f in /nodes/$1/log/*.log; do echo "--- node $1: $(basename "$f") (tail) ---"; tail -n "${2:-15}" "$f"; done
}

pod_log() { # NAMESPACE POD [CONTAINER]: the container's log from the node's /var/log/pods (the API
  # server cannot reach the kubelets, so kubectl logs does not work in this lab)
  node=$(k get pod -n "$1" "$2" -o jsonpath='{.spec.nodeName}')
  uid=$(k get pod -n "$1" "$2" -o jsonpath='{.metadata.uid}')
  cat "/nodes/${node#node-}/fs/var/log/pods/${1}_${2}_${uid}"/${3:-*}/*.log 2>/dev/null
}

pod_pid() { # NAMESPACE POD: the PID of a process in the pod's first container (its HOSTNAME is the pod name)
  ns=$1; p=$2
  for e in /proc/[0-9]*/environ; do
    tr '\0' '\n' < "$e" 2>/dev/null | grep -qx "HOSTNAME=$p" || continue
    pid=${e#/proc/}; echo "${pid%/environ}"; return 0
  done
  return 1
}
pod_exec() { # NAMESPACE POD CMD...: run a VM tool in the pod's network namespace (no kubectl exec here)
  ns=$1; p=$2; shift 2
  pid=$(pod_pid "$ns" "$p") || { echo "no process of pod $ns/$p" >&2; return 1; }
  nsenter -t "$pid" -n -- "$@"
}
pod_ip() { k get pod -n "$1" "$2" -o jsonpath='{.status.podIP}'; }
pod_node() { k get pod -n "$1" "$2" -o jsonpath='{.spec.nodeName}'; }

helm() { HOME=/tmp HELM_CACHE_HOME=/tmp/helm/cache HELM_CONFIG_HOME=/tmp/helm/config HELM_DATA_HOME=/tmp/helm/data \
  "$HELM" --kubeconfig /out/kubeconfig "$@"; }
