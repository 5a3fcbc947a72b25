#!/usr/bin/env bash
# The lab's control plane: real etcd and kube-apiserver on 127.0.0.1, built from pinned Go modules.
#
#   apiserver.sh start            start etcd + kube-apiserver (Node,RBAC authorization, NodeRestriction,
#                                 TokenRequest on), wait for /readyz, write $LAB/env (KUBECONFIG, PATH with
#                                 the tools) and $LAB/kubeconfig
#   apiserver.sh start-cluster    start, then kube-controller-manager (node IPAM: --cluster-cidr
#                                 $LAB_CLUSTER_CIDR, default 10.244.0.0/16) and kube-scheduler: a real
#                                 control plane for the kubelets of tests/cluster (in the VM)
#   apiserver.sh stop             stop all of them, check that no process is left
#   apiserver.sh status           say whether it runs
#   apiserver.sh nodes SPEC...    create Node objects as node IPAM and kubelet would; SPEC is
#                                 NAME:INTERNAL_IP:POD_CIDR[,POD_CIDR2] (podCIDR(s) in spec, InternalIP in status)
#   apiserver.sh vm-kubeconfig F  write a kubeconfig for use inside the lab VM (server https://10.0.2.2:PORT)
#   apiserver.sh vm-identity F CN [O]  the same with a client certificate of the lab CA for CN (and group O),
#                                 e.g. system:node:node-a system:nodes for a kubelet
#
# The API server advertises 10.0.2.2 (the host as the VM's user-mode network sees it): the `kubernetes`
# Service's endpoint is 10.0.2.2:PORT, reached from pods in the VM through kube-proxy.
# $CIPHERLANE_LAB (default .cache/lab) holds certificates, data, logs and pid files.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
lab=${CIPHERLANE_LAB:-$repo/.cache/lab}
api_port=${LAB_APISERVER_PORT:-16443}
etcd_port=${LAB_ETCD_PORT:-12379}
etcd_peer_port=$((etcd_port + 1))
cluster_cidr=${LAB_CLUSTER_CIDR:-10.244.0.0/16}
service_cidr=10.96.0.0/16
say() { printf '\033[1m[lab]\033[0m %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

tools_bin() { "$repo/tests/tools/build.sh" | tail -n 1; }

certs() {
  local d=$lab/pki
  [ -f "$d/done" ] && return 0
  mkdir -p "$d" && cd "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=cipherlane-lab-ca" 2>/dev/null
  cat > server.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:10.0.2.2,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile server.ext 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=lab-admin" 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  touch done
  cd - >/dev/null
}

client_cert() { # CN [O]: $lab/pki/id/<CN>.{crt,key}, a client certificate of the lab CA (made once)
  local d=$lab/pki/id subj="/CN=$1"
  [ -n "${2:-}" ] && subj="/O=$2/CN=$1"
  [ -f "$d/$1.crt" ] && return 0
  mkdir -p "$d"
  openssl req -newkey rsa:2048 -nodes -keyout "$d/$1.key" -out "$d/$1.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$d/$1.csr" -CA "$lab/pki/ca.crt" -CAkey "$lab/pki/ca.key" -CAcreateserial \
    -out "$d/$1.crt" -days 3650 -extfile "$lab/pki/client.ext" 2>/dev/null
}

write_kubeconfig() { # FILE SERVER [CN [O]]: admin, or the identity CN (group O) from client_cert
  local pki=$lab/pki crt=$lab/pki/admin.crt key=$lab/pki/admin.key
  if [ -n "${3:-}" ]; then client_cert "$3" "${4:-}"; crt=$pki/id/$3.crt; key=$pki/id/$3.key; fi
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: lab-admin
  user:
    client-certificate-data: $(base64 -w0 < "$crt")
    client-key-data: $(base64 -w0 < "$key")
contexts:
- name: lab
  context: {cluster: lab, user: lab-admin}
current-context: lab
EOF
}

running() { [ -f "$lab/$1.pid" ] && kill -0 "$(cat "$lab/$1.pid")" 2>/dev/null; }

start() {
  if running kube-apiserver && running etcd; then say "already running"; return 0; fi
  stop quiet
  local bin; bin=$(tools_bin)
  mkdir -p "$lab/logs"
  certs
  rm -rf "$lab/etcd-data"
  say "starting etcd on 127.0.0.1:$etcd_port"
  setsid "$bin/etcd" --name lab --data-dir "$lab/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "lab=http://127.0.0.1:$etcd_peer_port" --log-level warn \
    >"$lab/logs/etcd.log" 2>&1 < /dev/null &
  echo $! > "$lab/etcd.pid"
  local pki=$lab/pki
  say "starting kube-apiserver on 127.0.0.1:$api_port (RBAC, service-account issuer)"
  setsid "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 10.0.2.2 --secure-port "$api_port" \
    --endpoint-reconciler-type lease \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/server.crt" --tls-private-key-file "$pki/server.key" \
    --service-account-issuer https://kubernetes.default.svc --api-audiences https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$service_cidr" \
    --allow-privileged=true \
    --event-ttl 1h \
    >"$lab/logs/kube-apiserver.log" 2>&1 < /dev/null &
  echo $! > "$lab/kube-apiserver.pid"
  write_kubeconfig "$lab/kubeconfig" "https://127.0.0.1:$api_port"
  cat > "$lab/env" <<EOF
export KUBECONFIG=$lab/kubeconfig
export PATH=$bin:\$PATH
export CIPHERLANE_TOOLS=$bin
export LAB_APISERVER_PORT=$api_port
EOF
  local i
  for i in $(seq 1 120); do
    if curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
         "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
      say "kube-apiserver ready after ${i}s; KUBECONFIG=$lab/kubeconfig (source $lab/env)"
      return 0
    fi
    running kube-apiserver || { tail -n 30 "$lab/logs/kube-apiserver.log" >&2; die "kube-apiserver exited"; }
    running etcd || { tail -n 30 "$lab/logs/etcd.log" >&2; die "etcd exited"; }
    sleep 1
  done
  tail -n 30 "$lab/logs/kube-apiserver.log" >&2
  die "kube-apiserver not ready after 120s"
}

stop() {
  local p pid
  for p in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$lab/$p.pid" ] || continue
    pid=$(cat "$lab/$p.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$lab/$p.pid"
  done
  local pat="$lab/etcd-data|--secure-port $api_port|$lab/kcm.kubeconfig|$lab/scheduler.kubeconfig"
  if pgrep -f "$pat" >/dev/null; then
    die "a lab process is still running: $(pgrep -af "$pat")"
  fi
  [ "${1:-}" = quiet ] || say "stopped; no lab process left"
}

nodes() {
  # shellcheck disable=SC1091
  source "$lab/env"
  local spec name ip cidrs first
  for spec in "$@"; do
    IFS=: read -r name ip cidrs <<<"$spec"
    [ -n "$name" ] && [ -n "$ip" ] && [ -n "$cidrs" ] || die "bad node spec '$spec': want NAME:INTERNAL_IP:POD_CIDR[,POD_CIDR]"
    first=${cidrs%%,*}
    local list; list=$(printf '"%s",' ${cidrs//,/ }); list=[${list%,}]
    kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  labels: {kubernetes.io/hostname: $name, kubernetes.io/os: linux}
spec:
  podCIDR: $first
  podCIDRs: $list
EOF
    kubectl patch node "$name" --subresource=status --type=merge \
      -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$ip\"},{\"type\":\"Hostname\",\"address\":\"$name\"}]}}" >/dev/null
    say "node $name: InternalIP $ip, podCIDRs $cidrs"
  done
}

start_cluster() { # the API server, then the controller manager and the scheduler (on 127.0.0.1)
  start
  local bin pki=$lab/pki; bin=$(tools_bin)
  if ! running kube-controller-manager; then
    write_kubeconfig "$lab/kcm.kubeconfig" "https://127.0.0.1:$api_port" system:kube-controller-manager
    say "starting kube-controller-manager (node IPAM --cluster-cidr $cluster_cidr)"
    setsid "$bin/kube-controller-manager" --kubeconfig "$lab/kcm.kubeconfig" \
      --secure-port 0 --leader-elect=false --use-service-account-credentials \
      --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
      --allocate-node-cidrs --cluster-cidr "$cluster_cidr" --node-cidr-mask-size 24 \
      --service-cluster-ip-range "$service_cidr" --controllers '*' \
      >"$lab/logs/kube-controller-manager.log" 2>&1 < /dev/null &
    echo $! > "$lab/kube-controller-manager.pid"
  fi
  if ! running kube-scheduler; then
    write_kubeconfig "$lab/scheduler.kubeconfig" "https://127.0.0.1:$api_port" system:kube-scheduler
    say "starting kube-scheduler"
    setsid "$bin/kube-scheduler" --kubeconfig "$lab/scheduler.kubeconfig" --secure-port 0 --leader-elect=false \
      >"$lab/logs/kube-scheduler.log" 2>&1 < /dev/null &
    echo $! > "$lab/kube-scheduler.pid"
  fi
  # shellcheck disable=SC1091
  source "$lab/env"
  local i
  for i in $(seq 1 90); do
    running kube-controller-manager || { tail -n 30 "$lab/logs/kube-controller-manager.log" >&2; die "kube-controller-manager exited"; }
    running kube-scheduler || { tail -n 30 "$lab/logs/kube-scheduler.log" >&2; die "kube-scheduler exited"; }
    # the controller manager's first visible work: the default ServiceAccount and the root CA ConfigMap
    if kubectl get serviceaccount default -n default >/dev/null 2>&1 && kubectl get configmap kube-root-ca.crt -n default >/dev/null 2>&1; then
      say "controller manager and scheduler up after ${i}s"
      return 0
    fi
    sleep 1
  done
  tail -n 30 "$lab/logs/kube-controller-manager.log" >&2
  die "kube-controller-manager made no default ServiceAccount in 90s"
}

case ${1:-} in
  start) start ;;
  start-cluster) start_cluster ;;
  stop) stop ;;
  status) if running kube-apiserver && running etcd; then
            if running kube-controller-manager; then echo "running (cluster)"; else echo running; fi
          else echo stopped; exit 1; fi ;;
  nodes) shift; nodes "$@" ;;
  vm-kubeconfig) certs; write_kubeconfig "$2" "https://10.0.2.2:$api_port" ;;
  vm-identity) certs; write_kubeconfig "$2" "https://10.0.2.2:$api_port" "$3" "${4:-}" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
