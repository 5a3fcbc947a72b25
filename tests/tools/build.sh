#!/usr/bin/env bash
# Builds the lab's real tools (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, kubectl, etcd, helm, cnitool) from the pinned
# Go module versions in go.mod/go.sum. Output: $CIPHERLANE_CACHE/tools/<hash of the pins>/bin,
# reused while the pins are unchanged. Prints the bin folder on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CIPHERLANE_CACHE:-$repo/.cache}
pins=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
out=$cache/tools/$pins/bin
tools=(kube-apiserver kubectl etcd helm cnitool kube-controller-manager kube-scheduler kubelet kube-proxy)
done_all=1
for t in "${tools[@]}"; do [ -x "$out/$t" ] || done_all=0; done
if [ $done_all = 1 ]; then echo "$out"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: go is not installed; the lab needs Go to build its tools" >&2; exit 1; }
mkdir -p "$out.tmp" "$cache/go-build"
export GOCACHE=$cache/go-build GOFLAGS=-mod=readonly CGO_ENABLED=0
cd "$here"
echo "building the lab's tools into $out (first time: several minutes)" >&2
kver=$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod)   # e.g. v1.34.4: report it as the servers' version
minor=$(echo "$kver" | cut -d. -f2)
vflags="-X k8s.io/component-base/version.gitVersion=$kver -X k8s.io/component-base/version.gitMajor=1"
vflags="$vflags -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
vflags="$vflags -X k8s.io/client-go/pkg/version.gitVersion=$kver -X k8s.io/client-go/pkg/version.gitMajor=1"
vflags="$vflags -X k8s.io/client-go/pkg/version.gitMinor=$minor"
# helm's default Kubernetes version (without a cluster: helm template/lint) is the pinned one, not 1.20
vflags="$vflags -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
go build -trimpath -ldflags="-s -w $vflags" -o "$out.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
  helm.sh/helm/v3/cmd/helm github.com/containernetworking/cni/cnitool
go build -trimpath -ldflags='-s -w' -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
