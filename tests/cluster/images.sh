#!/usr/bin/env bash
# tests/cluster/images.sh [OUT_DIR]
#
# Builds the lab cluster's images without Docker and without a registry, as OCI archives (Debian's
# umoci), for `ctr -n k8s.io images import --base-name NAME FILE` on each node:
#   agent-TAG.tar   cipherlane.lab/cipherlane/cipherlane-agent:$CLUSTER_TAG      the layout of deploy/Dockerfile's
#   operator-TAG.tar cipherlane.lab/cipherlane/cipherlane-operator:$CLUSTER_TAG   agent and operator targets
#   pause.tar     registry.k8s.io/pause:3.10      the sandbox image (k8s' pause.c, static)
#   kubectl.tar   registry.k8s.io/kubectl:v1.34.4 the chart's uninstall hooks (static kubectl from the lab's tools)
#   workload.tar  cipherlane.lab/workload:1       busybox-static + iperf3 for test pods
# The Rust binaries come from target/debug (stripped copies; glibc and the libraries they need go into
# the image, since this machine has no musl target). CLUSTER_TAG (default dev1) names the agent and
# operator tag; a second tag is a second build (the upgrade test). CLUSTER_IMAGES lists the images to
# build (default: agent operator pause kubectl workload). Prints OUT_DIR last.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/.cache/cluster/images}
tag=${CLUSTER_TAG:-dev1}
bin=${CIPHERLANE_BIN_DIR:-$repo/target/debug}
say() { printf '\033[1m[images]\033[0m %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
command -v umoci >/dev/null || die "umoci is missing: run tests/setup.sh (Debian package umoci)"
for b in cipherlane-agent cipherlane cipherlane-operator; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing: cargo build --workspace --bins"
done
tools=$("$repo/tests/tools/build.sh" | tail -n 1)
kver=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$repo/tests/tools/go.mod")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

add_libs() { # ROOTFS FILE...: the shared libraries (and the loader) the files need
  local r=$1 l; shift
  for l in $(ldd "$@" 2>/dev/null | awk '/=> \// {print $3} /^\t\// {print $1}' | sort -u); do
    [ -e "$r$l" ] || { mkdir -p "$r$(dirname "$l")"; cp -L "$l" "$r$l"; }
  done
}

# image NAME TAG FILE USER ENTRYPOINT CMD POPULATE: POPULATE ROOTFS fills the root filesystem
image() {
  local name=$1 itag=$2 file=$3 user=$4 entry=$5 cmd=$6 populate=$7 l=$work/$3.layout b=$work/$3.bundle
  umoci init --layout "$l"
  umoci new --image "$l:$itag"
  umoci unpack --image "$l:$itag" "$b" >/dev/null
  "$populate" "$b/rootfs"
  umoci repack --image "$l:$itag" "$b" >/dev/null
  local args=(--image "$l:$itag" --config.user "$user" --config.entrypoint "$entry"
              --author cipherlane-lab --config.workingdir / --config.label "org.opencontainers.image.version=$itag")
  [ -n "$cmd" ] && args+=(--config.cmd "$cmd")
  umoci config "${args[@]}"
  umoci gc --layout "$l"
  tar -C "$l" -cf "$out/$file.tar.tmp" . && mv "$out/$file.tar.tmp" "$out/$file.tar"
  echo "$name" > "$out/$file.name"
  say "$name:$itag -> $out/$file.tar ($(du -h "$out/$file.tar" | cut -f1))"
}

base_fs() { mkdir -p "$1"/{etc,tmp,usr/local/bin}; chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$1/etc/group"; }
agent_fs() { base_fs "$1"
  strip -o "$1/usr/local/bin/cipherlane-agent" "$bin/cipherlane-agent"
  strip -o "$1/usr/local/bin/cipherlane" "$bin/cipherlane"
  add_libs "$1" "$bin/cipherlane-agent" "$bin/cipherlane"; }
operator_fs() { base_fs "$1"
  strip -o "$1/usr/local/bin/cipherlane-operator" "$bin/cipherlane-operator"
  add_libs "$1" "$bin/cipherlane-operator"; }
pause_fs() { gcc -static -O2 -o "$1/pause" "$(go env GOMODCACHE)/k8s.io/kubernetes@$kver/build/pause/linux/pause.c" && strip "$1/pause"; }
kubectl_fs() { base_fs "$1"; mkdir -p "$1/bin"; cp "$tools/kubectl" "$1/bin/kubectl"; }
workload_fs() { base_fs "$1"; mkdir -p "$1/bin"
  cp "$(command -v busybox)" "$1/bin/busybox"
  for a in sh ping nc wget httpd sleep cat echo ip hostname ls date grep; do ln -sf busybox "$1/bin/$a"; done
  cp -L "$(command -v iperf3)" "$1/bin/iperf3"; add_libs "$1" "$(command -v iperf3)"; }

want() { case " ${CLUSTER_IMAGES:-agent operator pause kubectl workload} " in *" $1 "*) return 0 ;; esac; return 1; }
want agent && image cipherlane.lab/cipherlane/cipherlane-agent "$tag" "agent-$tag" 0:0 /usr/local/bin/cipherlane-agent run agent_fs
want operator && image cipherlane.lab/cipherlane/cipherlane-operator "$tag" "operator-$tag" 65532:65532 /usr/local/bin/cipherlane-operator "" operator_fs
want pause && image registry.k8s.io/pause 3.10 pause 65535:65535 /pause "" pause_fs
want kubectl && image registry.k8s.io/kubectl "$kver" kubectl 65532:65532 /bin/kubectl "" kubectl_fs
want workload && image cipherlane.lab/workload 1 workload 0:0 /bin/sh "" workload_fs
echo "$out"
