#!/usr/bin/env bash
# Installs everything the lab and the tests need on a fresh machine of this kind (Debian, root):
# Debian packages (qemu, Debian's kernel for the VM, busybox, iproute2, tcpdump, ...), the Go-built
# tools (kube-apiserver, etcd, kubectl, helm, cnitool) and the Rust workspace. Idempotent and cached.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

pkgs=(qemu-system-x86 linux-image-amd64 busybox-static tcpdump cpio iputils-ping nftables iproute2
      iperf3 tcpreplay openssl kmod curl procps psmisc jq umoci)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { say "need root to install: ${missing[*]}"; exit 1; }
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
ls /boot/vmlinuz-* >/dev/null 2>&1 || { say "no kernel in /boot after installing linux-image-amd64"; exit 1; }

say "building the lab's Go tools (cached while the pins are unchanged)"
tools=$("$repo/tests/tools/build.sh" | tail -n 1)
say "tools: $tools"

say "building the Rust workspace (debug)"
(cd "$repo" && cargo build --workspace --bins --quiet)
echo "$tools"
