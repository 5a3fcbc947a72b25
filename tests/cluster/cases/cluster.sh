#!/bin/sh
# The real cluster: the host's control plane (kube-apiserver, etcd, kube-controller-manager,
# kube-scheduler), CASE_CLUSTER_NODES nodes (2 by default) in this VM that register themselves (kubelet +
# Debian's containerd + kube-proxy in nftables mode), the images imported into every node, then
# `helm install` of charts/cipherlane as a user runs it. Proves: the agents and operators become Ready,
# a Deployment's pods on two nodes get addresses from the cipherlane CNI plugin through containerd's
# CRI and talk, the underlay carries ESP only (a clear-text marker absent), pod -> ClusterIP Service
# with its endpoint on the other node and host-network pod -> remote pod are encrypted too, an
# on-demand rotation (kubectl annotate) under traffic loses nothing, and `helm uninstall` leaves no
# Cipherlane XFRM state, policy or conflist on any node.
. /repo/tests/vm/lib.sh
. /repo/tests/cluster/lib.sh
NODES=$(cluster_nodes); N=$(echo $NODES | wc -w)
TAG=${CASE_IMAGE_TAG:-dev1}
[ -f /out/kubeconfig ] || fail "no /out/kubeconfig: start the lab (tests/lab/apiserver.sh start-cluster) before the VM"
wait_for 30 k get --raw /readyz || fail "the lab API server is not reachable at 10.0.2.2"
k get nodes -o name | grep -q . && fail "Node objects exist before any kubelet ran: $(k get nodes -o name | tr '\n' ' ')"

log "booting $N nodes: containerd, images, kubelet, kube-proxy"
cluster_host_up
t0=$(uptime_s)
for x in $NODES; do node_boot $x 198.18.0.$(node_index $x); done
for x in $NODES; do
  wait_for 180 node_registered $x || { node_logs $x 30; fail "node-$x did not register"; }
done
echo "ok   $N kubelets registered themselves ($(( $(uptime_s) - t0 ))s)"
podcidr() { k get node "node-$1" -o jsonpath='{.spec.podCIDR}'; }
for x in $NODES; do
  wait_for 60 sh -c "[ -n \"\$($KUBECTL --kubeconfig /out/kubeconfig get node node-$x -o jsonpath='{.spec.podCIDR}')\" ]" ||
    fail "node-$x got no podCIDR from the controller manager's node IPAM"
  echo "  node-$x: podCIDR $(podcidr $x), $(k get node node-$x -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}')"
done
reason=$(k get node node-a -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}')
echo "  node-a before the install: $reason"
check "nodes are NotReady without a CNI config" sh -c "echo '$reason' | grep -qi 'cni'"
svc_ready() { k get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[0].endpoints[0].addresses[0]}' | grep -q 10.0.2.2; }
check "the kubernetes Service's endpoint is the advertised 10.0.2.2" wait_for 30 svc_ready
kp_ready() { node_exec "$1" /sbin/nft list table ip kube-proxy 2>/dev/null | grep -q 10.96.0.1; }
for x in $NODES; do
  wait_for 120 kp_ready $x || { node_logs $x 30; fail "kube-proxy on node-$x programmed no Service"; }
done
echo "ok   kube-proxy (nftables) programs the kubernetes Service on every node"

log "helm install cipherlane charts/cipherlane -n kube-system (image cipherlane.lab/...:$TAG)"
t1=$(uptime_s)
helm install cipherlane /repo/charts/cipherlane -n kube-system \
  --set clusterPodCIDR=10.244.0.0/16 --set image.registry=cipherlane.lab --set image.tag="$TAG" > /tmp/helm.out 2>&1 ||
  { cat /tmp/helm.out; fail "helm install"; }
ds_ready() { [ "$(k get ds -n kube-system cipherlane-agent -o jsonpath='{.status.numberReady}')" = "$N" ]; }
if ! wait_for 400 ds_ready; then
  k get pods -n kube-system -o wide
  for p in $(k get pods -n kube-system -l app.kubernetes.io/component=agent -o name); do
    k describe -n kube-system "$p" | tail -n 15; pod_log kube-system "${p#pod/}" | tail -n 20
  done
  for x in $NODES; do node_logs $x 20; done
  fail "the agent DaemonSet is not Ready on $N nodes"
fi
t_ready=$(( $(uptime_s) - t1 ))
echo "ok   the agent DaemonSet is Ready on all $N nodes, ${t_ready}s after helm install"
k get pods -n kube-system -o wide | sed 's/^/  /'
for x in $NODES; do
  check "node-$x: the init container installed the CNI plugin" test -x "$(node_fs $x)/opt/cni/bin/cipherlane"
  check "node-$x: the agent wrote its conflist" test -f "$(node_fs $x)/etc/cni/net.d/05-cipherlane.conflist"
done
for x in $NODES; do wait_for 60 node_ready $x || fail "node-$x is not Ready with the conflist"; done
echo "ok   every node Ready"
op_ready() { [ "$(k get deploy -n kube-system cipherlane-operator -o jsonpath='{.status.readyReplicas}')" -ge 1 ]; }
check "the operator Deployment has a Ready replica (120s)" wait_for 120 op_ready
holder=$(k get lease -n kube-system cipherlane-operator -o jsonpath='{.spec.holderIdentity}')
check "the operator's leader holds its Lease ($holder)" [ -n "$holder" ]

log "a Deployment of the workload image, one pod per node"
cat > /tmp/web.yaml <<Y
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: $N
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: cipherlane.lab/workload:1
          imagePullPolicy: Never
          command: ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-\$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
Y
check "kubectl apply the Deployment and Service" k apply -f /tmp/web.yaml
web_ready() { [ "$(k get deploy web -o jsonpath='{.status.readyReplicas}')" = "$N" ]; }
wait_for 240 web_ready || { k get pods -o wide; k describe pods | tail -n 30; fail "the web Deployment is not Ready"; }
k get pods -o wide -l app=web | sed 's/^/  /'
pods=$(k get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')
spread=$(k get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)
check "the $N pods are spread over $N nodes" [ "$spread" = "$N" ]
for p in $pods; do
  ip=$(pod_ip default $p); nd=$(pod_node default $p)
  cidr=$(k get node "$nd" -o jsonpath='{.spec.podCIDR}')
  prefix=$(echo "$cidr" | cut -d. -f1-3)
  check "$p ($ip) has an address of its node's podCIDR $cidr" sh -c "echo $ip | grep -q '^$prefix\.'"
done
pa=$(echo $pods | cut -d' ' -f1); pb=$(echo $pods | cut -d' ' -f2)
ipa=$(pod_ip default $pa); ipb=$(pod_ip default $pb); na=$(pod_node default $pa); nb=$(pod_node default $pb)
grep -q '"type": *"cipherlane"' "$(node_fs ${na#node-})/etc/cni/net.d/05-cipherlane.conflist" &&
  echo "ok   the pods' network came from the cipherlane plugin (containerd's CRI, no cnitool)"

log "every path encrypted: capture on the underlay bridge br0"
capture_start /tmp/wire.pcap
check "pod -> pod across nodes ($pa on $na -> $pb on $nb), with the marker" pod_exec default $pa /sbin/ping -c 10 -i 0.2 -W 2 -p $MARKER_HEX "$ipb"
svc=$(k get svc web -o jsonpath='{.spec.clusterIP}')
remote_svc() { pod_exec default $pa wget -q -T 3 -O - "http://$svc/" | grep -q "hello-from-$pb"; }
check "pod -> ClusterIP $svc answered by the endpoint on the other node (60s)" wait_for 60 remote_svc
check "host-network (node ${na#node-}) -> remote pod $ipb, with the marker" node_exec ${na#node-} /sbin/ping -c 5 -i 0.2 -W 2 -p $MARKER_HEX "$ipb"
capture_stop
check "the wire carried ESP only for pod addresses and never the marker" wire_report /tmp/wire.pcap 10.244.0.0/16

log "on-demand rotation through the RotationPolicy (kubectl annotate) under a 50/s ping flood"
epoch0=$(k get rotationpolicy default -o jsonpath='{.status.epoch}')
pod_exec default $pa /sbin/ping -i 0.02 -c 1000 -W 1 "$ipb" > /tmp/flood.txt 2>&1 & fp=$!
sleep 2
k annotate rotationpolicy default cipherlane.io/rotate="cluster-$$" --overwrite >/dev/null || fail "kubectl annotate rotationpolicy default"
wait $fp
grep 'packets transmitted' /tmp/flood.txt | sed 's/^/  flood: /'
check "no packet lost during the rotation" grep -q ' 0% packet loss' /tmp/flood.txt
adv() { [ "$(k get rotationpolicy default -o jsonpath='{.status.epoch}')" -gt "${epoch0:-0}" ]; }
check "the policy's epoch advanced past ${epoch0:-0} (60s)" wait_for 60 adv

log "helm uninstall: the hooks clean every node"
k delete -f /tmp/web.yaml --wait=false >/dev/null 2>&1
helm uninstall cipherlane -n kube-system --timeout 10m > /tmp/helm.out 2>&1 || { cat /tmp/helm.out; k get pods -n kube-system -o wide; fail "helm uninstall"; }
for x in $NODES; do
  st=$(node_exec $x /sbin/ip xfrm state | grep -c '^src'); po=$(node_exec $x /sbin/ip xfrm policy | grep -c '^src')
  echo "  node-$x after uninstall: $st XFRM states, $po XFRM policies, conflist: $(ls "$(node_fs $x)/etc/cni/net.d/" | tr '\n' ' ')"
  check "node-$x: no Cipherlane XFRM state or policy left" sh -c "[ $st = 0 ] && [ $po = 0 ]"
  check_not "node-$x: no conflist left" test -f "$(node_fs $x)/etc/cni/net.d/05-cipherlane.conflist"
  check_not "node-$x: no nftables fence left" node_exec $x /sbin/nft list table inet cipherlane
done
echo "FIGURES helm_install_to_agents_ready_s=$t_ready nodes=$N"
echo "cluster case passed"
