#!/usr/bin/env bash
# tests/vm/run.sh [-v] CASE.sh [CASE.sh ...]
#
# Boots ONE qemu VM (Debian's kernel, software emulation) with a busybox initramfs carrying iproute2,
# tcpdump, ping, nft, iperf3, tcpreplay and the ESP/AEAD modules, shares the repository at /repo (read-only 9p;
# the workspace's debug binaries are at /repo/target/debug) and an output folder at /out (writable),
# runs each case script in turn from a clean slate, then powers off.
#
# A case passes when it exits 0. Its output is printed after the run (with -v: streamed live from the
# console too). Exit status: 0 when every case passed; 1 otherwise, including a failed boot (the console
# log's tail is printed then). Nothing is left running: qemu runs under a timeout and is killed on exit.
#
# Environment: VM_TIMEOUT (seconds for the whole run, default 300 + 600 per case), VM_MEM (MiB, 1024),
# VM_SMP (2), CIPHERLANE_LAB (work folder, .cache/lab). If the lab API server runs (tests/lab/apiserver.sh),
# cases find a kubeconfig for it at /out/kubeconfig (server https://10.0.2.2:PORT).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
lab=${CIPHERLANE_LAB:-$repo/.cache/lab}
work=$lab/vm
say() { printf '\033[1m[vm]\033[0m %s\n' "$*" >&2; }
verbose=0
[ "${1:-}" = -v ] && { verbose=1; shift; }
[ $# -gt 0 ] || { sed -n '2,17p' "$0" >&2; exit 2; }

for c in qemu-system-x86_64 busybox tcpdump cpio ping nft iperf3 tcpreplay depmod; do
  command -v "$c" >/dev/null || { say "FATAL: $c is missing: run tests/setup.sh first"; exit 1; }
done
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { say "FATAL: no /boot/vmlinuz-*: run tests/setup.sh (installs linux-image-amd64)"; exit 1; }
kver=${kernel#/boot/vmlinuz-}

cases=()
for c in "$@"; do
  p=$(cd "$(dirname "$c")" && pwd)/$(basename "$c")
  [ -f "$p" ] || { say "no such case: $c"; exit 2; }
  case $p in "$repo"/*) cases+=("${p#"$repo"/}") ;; *) say "cases must live in the repository: $c"; exit 2 ;; esac
done

# --- initramfs ---------------------------------------------------------------------------------
root=$work/root
rm -rf "$root" "$work/out"; mkdir -p "$root"/{bin,sbin,proc,sys,dev,run,tmp,etc,repo,out,var} "$work/out"
cp "$(command -v busybox)" "$root/bin/busybox"
ln -sf /bin/busybox "$root/sbin/modprobe"   # the kernel loads crypto templates through /sbin/modprobe
copy_bin() { # FILE DEST: a binary and the shared libraries it needs
  cp -L "$1" "$root$2"
  local l
  for l in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
    [ -e "$root$l" ] || { mkdir -p "$root$(dirname "$l")"; cp -L "$l" "$root$l"; }
  done
}
copy_bin "$(command -v ip)" /sbin/ip
copy_bin "$(command -v tcpdump)" /sbin/tcpdump
copy_bin "$(command -v ping)" /sbin/ping
copy_bin "$(command -v nft)" /sbin/nft
copy_bin "$(command -v iperf3)" /sbin/iperf3
copy_bin "$(command -v tcpreplay)" /sbin/tcpreplay   # replays captured ESP (replay-protection cases)
# the workspace's binaries run from /repo/target/debug: give them their libraries
for b in "$repo"/target/debug/cipherlane* "$repo"/target/release/cipherlane*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  for l in $(ldd "$b" 2>/dev/null | grep -o '/[^ ]*'); do
    [ -e "$root$l" ] || { mkdir -p "$root$(dirname "$l")"; cp -L "$l" "$root$l"; }
  done
done
printf "root:x:0:0:root:/:/bin/sh\ntcpdump:x:0:0:tcpdump:/:/bin/false\n" >"$root/etc/passwd"; echo "root:x:0:" >"$root/etc/group"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"
mods="drbg veth bridge esp4 xfrm_user xfrm4_tunnel gcm ctr ghash_generic seqiv echainiv chacha20poly1305
      virtio_pci virtio_net 9pnet_virtio 9p nf_tables nft_nat nft_masq nft_chain_nat nf_conntrack
      sch_netem overlay nft_ct nft_fib_inet nft_numgen nft_reject_inet nft_reject_ipv4 nft_fib_ipv4 nft_limit nft_objref nft_hash"
for m in $mods; do modprobe -S "$kver" --show-depends "$m" 2>/dev/null || true; done | awk '/^insmod/{print $2}' | sort -u |
  while read -r f; do mkdir -p "$root$(dirname "$f")"; cp "$f" "$root$f"; done
cp /lib/modules/"$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$root" "$kver"

printf '%s\n' "${cases[@]}" > "$work/out/cases.txt"
# settings for the cases: every BENCH_* and CASE_* variable of the caller
env | grep -E '^(BENCH|CASE)_[A-Z0-9_]*=' | sed "s/'/'\\\\''/g; s/=\(.*\)/='\1'/; s/^/export /" > "$work/out/case.env" || true
if [ -f "$lab/pki/ca.crt" ] && [ -f "$lab/kube-apiserver.pid" ] && kill -0 "$(cat "$lab/kube-apiserver.pid")" 2>/dev/null; then
  "$repo/tests/lab/apiserver.sh" vm-kubeconfig "$work/out/kubeconfig"
  # a real control plane (apiserver.sh start-cluster): the identities of the cluster's kubelets and kube-proxy
  if [ -f "$lab/kube-controller-manager.pid" ] && kill -0 "$(cat "$lab/kube-controller-manager.pid")" 2>/dev/null; then
    mkdir -p "$work/out/cluster"; cp "$lab/pki/ca.crt" "$work/out/cluster/ca.crt"
    for n in a b c d e; do
      "$repo/tests/lab/apiserver.sh" vm-identity "$work/out/cluster/node-$n.kubeconfig" "system:node:node-$n" system:nodes
    done
    "$repo/tests/lab/apiserver.sh" vm-identity "$work/out/cluster/kube-proxy.kubeconfig" system:kube-proxy
  fi
fi

cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmpfs /run
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /var; mkdir -p /var/run /var/lib
for m in $(echo $mods); do modprobe \$m || echo "modprobe \$m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro repo /repo || echo "VM-FATAL: 9p repo mount failed"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /out || echo "VM-FATAL: 9p out mount failed"
ip link set lo up
# user-mode networking: the host's loopback is 10.0.2.2. Only the connected /24, no default route,
# so nothing in the VM can reach any other address.
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
echo 1 > /proc/sys/net/ipv4/ip_forward
echo "=== vm ready: \$(uname -r) ==="
n=0
while read -r case; do
  n=\$((n+1)); name=\$(basename "\$case" .sh)
  echo "=== case \$name ==="
  : > /out/\$name.log
  ( . /out/case.env; cd /tmp && REPO=/repo CIPHERLANE_BIN=${VM_BIN:-/repo/target/debug} OUT=/out CASE_NAME="\$name" \
      timeout ${VM_CASE_TIMEOUT:-600} sh /repo/\$case ) >> /out/\$name.log 2>&1 &
  cpid=\$!
  # with -v the case's lines reach the console as they happen (the demo's progress); a file, not a
  # pipe, because processes a case leaves in the background would hold a pipe open
  tp=
  if [ ${verbose} = 1 ]; then tail -n +1 -f /out/\$name.log & tp=\$!; fi
  wait \$cpid
  rc=\$?
  [ -z "\$tp" ] || { sleep 1; kill \$tp 2>/dev/null; }
  echo "\$rc" > /out/\$name.rc
  echo "=== case \$name exit \$rc ==="
  sh /repo/tests/vm/reset.sh >> /out/\$name.log 2>&1
done < /out/cases.txt
sync
echo "=== vm done ==="
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initrd.gz"

# --- boot ----------------------------------------------------------------------------------------
timeout_s=${VM_TIMEOUT:-$((300 + 600 * ${#cases[@]}))}
say "booting $kver (tcg, ${VM_SMP:-2} vCPU, ${VM_MEM:-1024} MiB) for ${#cases[@]} case(s): ${cases[*]}"
start=$(date +%s)
qemu_pid=
cleanup() { [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null || true; }
trap cleanup EXIT
: > "$work/console.log"
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -m "${VM_MEM:-1024}" -smp "${VM_SMP:-2}" -nographic -no-reboot \
  -kernel "$kernel" -initrd "$work/initrd.gz" -append "console=ttyS0 quiet loglevel=3 panic=-1" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
  -virtfs local,path="$repo",mount_tag=repo,security_model=none,readonly=on \
  -virtfs local,path="$work/out",mount_tag=out,security_model=none \
  >"$work/console.log" 2>&1 </dev/null &
qemu_pid=$!
stream=
if [ $verbose = 1 ]; then
  tail -n +1 -f "$work/console.log" --pid "$qemu_pid" | stdbuf -oL tr -d '\r' | grep -av --line-buffered '^\[ *[0-9.]*\]' >&2 &
  stream=$!
fi
wait "$qemu_pid" || true
[ -z "$stream" ] || wait "$stream" 2>/dev/null || true   # the live stream ends with qemu; let it finish first
qemu_pid=
sleep 0.2
say "VM ran for $(( $(date +%s) - start ))s"

if ! grep -aq '=== vm ready' "$work/console.log"; then
  say "FAIL: the VM did not boot; last lines of $work/console.log:"
  tail -n 40 "$work/console.log" | tr -d '\r' >&2
  exit 1
fi
grep -a 'VM-FATAL' "$work/console.log" | tr -d '\r' >&2 && exit 1

failed=0; passed=0
for c in "${cases[@]}"; do
  name=$(basename "$c" .sh)
  if [ $verbose = 0 ]; then
    printf '\n----- %s -----\n' "$name"
    cat "$work/out/$name.log" 2>/dev/null || true
  fi
  rc=$(cat "$work/out/$name.rc" 2>/dev/null || echo "none")
  if [ "$rc" = 0 ]; then
    echo "PASS vm/$name"; passed=$((passed + 1))
  else
    echo "FAIL vm/$name (exit $rc; log $work/out/$name.log)"; failed=$((failed + 1))
    if [ "$rc" = none ]; then tail -n 30 "$work/console.log" | tr -d '\r'; fi
  fi
done
echo "vm: $passed passed, $failed failed"
[ $failed = 0 ]
