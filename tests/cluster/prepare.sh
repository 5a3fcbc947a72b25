#!/usr/bin/env bash
# tests/cluster/prepare.sh: the host-side half of the lab cluster, into .cache/cluster (the VM reads it
# at /repo/.cache/cluster over 9p):
#   node/bin/{containerd,containerd-shim-runc-v2,ctr,runc}, node/lib/libseccomp.so.2
#       Debian's containerd and runc packages (apt-get download, unpacked; nothing is installed on the
#       host and no service starts here)
#   node/cni/{loopback,host-local,ptp}  Debian's containernetworking-plugins: the reference plugins a
#       node ships (containerd's CRI needs loopback for every pod sandbox)
#   images/*.tar  OCI archives of the agent, operator, pause, kubectl and workload images (images.sh)
# The Go-built kubelet and kube-proxy stay in the lab's tool cache (tests/tools/build.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=$repo/.cache/cluster
say() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
node=$cache/node
if [ ! -x "$node/bin/containerd" ] || [ ! -x "$node/bin/runc" ] || [ ! -x "$node/cni/loopback" ]; then
  d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
  say "fetching Debian's containerd and runc packages"
  (cd "$d" && chmod 777 . && apt-get download containerd runc containernetworking-plugins >/dev/null 2>&1) ||
    { apt-get update -qq && (cd "$d" && apt-get download containerd runc containernetworking-plugins >/dev/null); } ||
    die "apt-get download containerd runc containernetworking-plugins failed"
  rm -rf "$node.tmp"; mkdir -p "$node.tmp/bin" "$node.tmp/lib" "$node.tmp/cni"
  for f in "$d"/*.deb; do dpkg-deb -x "$f" "$d/x"; done
  cp "$d/x/usr/bin/containerd" "$d/x/usr/bin/containerd-shim-runc-v2" "$d/x/usr/bin/ctr" "$d/x/usr/sbin/runc" "$node.tmp/bin/"
  cp "$d/x/usr/lib/cni/loopback" "$d/x/usr/lib/cni/host-local" "$d/x/usr/lib/cni/ptp" "$node.tmp/cni/"
  seccomp=$(ldd "$d/x/usr/sbin/runc" | awk '/libseccomp/ {print $3}')
  [ -n "$seccomp" ] || die "runc needs libseccomp.so.2: install libseccomp2"
  cp -L "$seccomp" "$node.tmp/lib/libseccomp.so.2"
  dpkg-deb -f "$d"/containerd_*.deb Version > "$node.tmp/containerd.version"
  dpkg-deb -f "$d"/runc_*.deb Version > "$node.tmp/runc.version"
  rm -rf "$node" && mv "$node.tmp" "$node"
fi
say "containerd $(cat "$node/containerd.version"), runc $(cat "$node/runc.version") (Debian)"
"$repo/tests/cluster/images.sh" "$cache/images" >/dev/null
CLUSTER_TAG=dev2 CLUSTER_IMAGES='agent operator' "$repo/tests/cluster/images.sh" "$cache/images" >/dev/null
say "images in $cache/images: $(cd "$cache/images" && ls ./*.tar | tr '\n' ' ')"
