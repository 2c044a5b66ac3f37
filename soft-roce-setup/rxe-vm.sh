#!/usr/bin/env bash
# rxe-vm.sh - run one host command inside a throw-away qemu VM (TCG, no KVM)
# whose Debian kernel has soft-RoCE: device rxe0 on dummy0 (10.77.0.1).
#
#   rxe-vm.sh [--workdir DIR] [--timeout SEC] [-v] -- COMMAND [ARGS...]
#   rxe-vm.sh --prepare         download the kernel, build the initramfs
#   rxe-vm.sh --check           ibv_devinfo + a loopback ib_write_lat
#
# The host's / is the VM's root (read-only, tmpfs overlay); DIR (default: the
# current directory) is shared read-write at the same path, so host-built
# binaries run unchanged and their result files come back. COMMAND's output
# streams to this script's stdout/stderr; the exit status is COMMAND's, 124
# if the VM hit the timeout, 125 if the harness failed. See README.md.
set -euo pipefail

VERSION=1                                  # bump to rebuild cached initramfs
SELF=$(readlink -f "$0")
CACHE=${RFX_RXE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/rfx-rxe-vm}
MEM=${RFX_RXE_MEM:-2048}
SMP=${RFX_RXE_SMP:-2}                      # 1 vCPU: every wake-up waits a tick
TIMEOUT=${RFX_RXE_TIMEOUT:-900}
# Under TCG an x86-64-v2 model is 2-3x faster than -cpu max (no AVX paths in
# glibc); binaries must not be built with target-cpu=native.
CPU=${RFX_RXE_CPU:-qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+aes,+pclmulqdq}
# The guest kernel finds TCG's TSC "unsynchronized" and falls back to HPET,
# where a clock read (clock_gettime, Instant::now) costs ~1 us instead of
# ~30 ns: TCG's TSC comes from one virtual clock for all vCPUs, so trust it.
CLOCK=${RFX_RXE_CLOCK-tsc=reliable clocksource=tsc}
VM_IP=10.77.0.1
MODULES="virtio_pci virtio_rng 9p 9pnet_virtio overlay ib_core ib_uverbs
  rdma_ucm rdma_cm rdma_rxe udp_tunnel ip6_udp_tunnel crc32_generic dummy"
PKGS="qemu-system-x86 busybox-static kmod iproute2 rdma-core ibverbs-providers
  ibverbs-utils perftest"

PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
say() { echo "[rxe-vm] $*" >&2; }
fail() { say "error: $*"; exit 125; }
stamp() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(stamp)" 'BEGIN { printf "%.1f", b - a }'; }

#############################################################################
# Inside the VM (the host's bash, after switch_root), from the control dir.
#############################################################################

vm_off() { sync; echo o > /proc/sysrq-trigger; sleep 20; }

vm_main() {
  set +e
  local ctl=/run/rfx-ctl
  exec < /dev/null > "$ctl/console" 2>&1
  # shellcheck disable=SC1091
  . "$ctl/vars" || { echo "no vars"; vm_off; }
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  mkdir -p /dev/pts /dev/shm
  mount -t devpts devpts /dev/pts
  mount -t tmpfs -o mode=1777 shm /dev/shm
  # cgroup v2 (unified): the executor sandbox puts each lease's limits
  # there (the host side of CI runs hybrid v1, so v2 is exercised here).
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "no cgroup2 in this kernel"
  ln -sf /proc/self/fd /dev/fd
  hostname rfx-rxe
  ip link set lo up
  mkdir -p "/lib/modules/$KVER" && mount --bind "$KMODS" "/lib/modules/$KVER"
  if [ "$WORKDIR" != / ]; then
    mkdir -p "$WORKDIR"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap work "$WORKDIR" ||
      { echo "workdir mount failed" > "$ctl/error"; vm_off; }
  fi
  ip link add dummy0 type dummy 2>/dev/null
  ip addr add "$VM_IP/24" dev dummy0 && ip link set dummy0 up
  rdma link add rxe0 type rxe netdev dummy0 ||
    { echo "rdma link add failed" > "$ctl/error"; vm_off; }
  # The GID table fills in asynchronously: wait (bounded) for the IPv4 one.
  local want gid="" f i
  want=$(printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' ${VM_IP//./ })
  for i in $(seq 200); do
    for f in /sys/class/infiniband/rxe0/ports/1/gids/*; do
      [ "$(cat "$f" 2> /dev/null)" = "$want" ] && { gid=${f##*/}; break 2; }
    done
    sleep 0.05
  done
  [ -n "$gid" ] || { echo "no IPv4 GID on rxe0" > "$ctl/error"; vm_off; }
  ulimit -l unlimited
  local -a argv
  mapfile -d '' -t argv < "$ctl/argv"
  date +%s.%N > "$ctl/started"
  (
    cd "$WORKDIR" || exit 125
    export HOME=$VM_HOME PATH=$VM_PATH RFX_RXE_VM=1 RXE_DEV=rxe0 RXE_IP=$VM_IP \
      RXE_GID_INDEX=$gid
    exec "${argv[@]}"
  ) > "$ctl/stdout" 2> "$ctl/stderr"
  echo $? > "$ctl/rc.new" && mv "$ctl/rc.new" "$ctl/rc"
  vm_off
}

vm_check() {
  set +e
  local rc=0 size port=18600 s
  ibv_devinfo -d "$RXE_DEV" || rc=1
  for size in 8 4096; do
    timeout 60 ib_write_lat -d "$RXE_DEV" -x "$RXE_GID_INDEX" -s "$size" -n 2000 -F -p $port \
      > /tmp/srv.log 2>&1 &
    s=$!
    for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
    timeout 60 ib_write_lat -d "$RXE_DEV" -x "$RXE_GID_INDEX" -s "$size" -n 2000 -F -p $port \
      "$RXE_IP" || rc=1
    wait "$s" || rc=1
    port=$((port + 1))
  done
  [ $rc = 0 ] && echo "rxe-vm check OK" || echo "rxe-vm check FAILED"
  return $rc
}

#############################################################################
# On the host.
#############################################################################

require() {
  local c miss=""
  for c in "$@"; do command -v "$c" > /dev/null 2>&1 || miss="$miss $c"; done
  [ -z "$miss" ] || fail "missing:$miss (apt-get install -y $(echo $PKGS))"
}

# Kernel + modules from Debian's linux-image package, and an initramfs of
# static busybox + the RDMA/9p modules. Reused until VERSION changes.
prepare() {
  local src=${RFX_RXE_KERNEL_DEB:-linux-image-amd64} have=""
  mkdir -p "$CACHE"
  exec 8> "$CACHE/lock"
  flock -w 600 8 || fail "cache lock busy: $CACHE/lock"
  [ -f "$CACHE/ready" ] && have=$(cat "$CACHE/ready")
  if [ "$have" = "$VERSION $src" ] && [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initrd" ]; then
    KVER=$(cat "$CACHE/kver"); exec 8>&-; return
  fi
  require busybox modprobe depmod dpkg-deb apt-get
  ldd "$(command -v busybox)" > /dev/null 2>&1 && fail "busybox must be static (busybox-static)"
  local t0 tmp deb pkg
  t0=$(stamp)
  rm -rf "$CACHE"/tmp.* "$CACHE/root" "$CACHE/ready"
  tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
  if [ -f "$src" ]; then
    deb=$src
  else
    pkg=$(apt-cache depends "$src" 2> /dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [ -n "$pkg" ] || pkg=$src
    say "downloading $pkg"
    (cd "$tmp" && apt-get download "$pkg" > dl.log 2>&1) || { cat "$tmp/dl.log" >&2; fail "apt-get download $pkg"; }
    deb=$(echo "$tmp"/*.deb)
  fi
  dpkg-deb -x "$deb" "$tmp/root" || fail "dpkg-deb -x $deb"
  rm -f "$tmp"/*.deb
  KVER=$(ls "$tmp/root/lib/modules" | head -n 1)
  [ -f "$tmp/root/boot/vmlinuz-$KVER" ] || fail "no kernel image in $deb"
  local kmod="$tmp/root/lib/modules/$KVER/kernel"
  rm -rf "$kmod/sound" "$kmod"/drivers/{gpu,media,net/wireless,usb,staging,bluetooth,iio,hid,input,isdn}
  depmod -b "$tmp/root" "$KVER" || fail depmod
  local ird="$tmp/initramfs" m opts p
  mkdir -p "$ird"/{bin,dev,proc,sys,ro,rw,root,ko}
  cp "$(command -v busybox)" "$ird/bin/"
  for m in $MODULES; do
    modprobe -C /dev/null -d "$tmp/root" -S "$KVER" --show-depends "$m" || fail "module $m"
  done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r p; do
    cp "$p" "$ird/ko/"
    opts=""; [ "${p##*/}" = dummy.ko ] && opts=numdummies=0
    echo "${p##*/} $opts" >> "$ird/ko/order"
  done
  cat > "$ird/init" << 'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
while read -r m o; do insmod "/ko/$m" $o || echo "insmod $m failed"; done < /ko/order
o=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o ro,cache=loose,$o host /ro || { echo "host / mount failed"; poweroff -f; }
mount -t tmpfs rw /rw && mkdir /rw/up /rw/work
mount -t overlay -o lowerdir=/ro,upperdir=/rw/up,workdir=/rw/work root /root || poweroff -f
mount -t tmpfs -o mode=755 run /root/run && mkdir /root/run/rfx-ctl
mount -t 9p -o $o ctl /root/run/rfx-ctl || poweroff -f
for d in dev proc sys; do mount --move /$d /root/$d; done
exec switch_root /root /bin/bash /run/rfx-ctl/rxe-vm.sh --in-vm
EOF
  chmod 755 "$ird/init"
  (cd "$ird" && find . | busybox cpio -o -H newc 2> /dev/null) > "$tmp/initrd" || fail cpio
  rm -rf "$ird"
  mv "$tmp/root/boot/vmlinuz-$KVER" "$tmp/vmlinuz"
  for f in vmlinuz initrd; do mv "$tmp/$f" "$CACHE/$f"; done
  rm -rf "$CACHE/root" && mv "$tmp/root" "$CACHE/root" && rm -rf "$tmp"
  echo "$KVER" > "$CACHE/kver"
  echo "$VERSION $src" > "$CACHE/ready"
  exec 8>&-
  say "kernel $KVER ready in $(since "$t0") s ($CACHE)"
}

# Streams a file that the guest appends to over 9p until the VM is gone.
follow() {
  tail -n +1 -s 0.2 -F --pid="$2" "$1" 2> /dev/null
}

run_vm() {
  require qemu-system-x86_64 timeout tail
  local run t0 qpid rc=125
  run=$(mktemp -d "$CACHE/run.XXXXXX")
  RUN=$run
  cp "$SELF" "$run/rxe-vm.sh"
  printf '%s\0' "$@" > "$run/argv"
  : > "$run/stdout"; : > "$run/stderr"; : > "$run/console"
  {
    printf 'WORKDIR=%q\nKVER=%q\nKMODS=%q\nVM_IP=%q\n' "$WORKDIR" "$KVER" \
      "$CACHE/root/lib/modules/$KVER" "$VM_IP"
    printf 'VM_PATH=%q\nVM_HOME=%q\n' "$PATH" "${HOME:-/root}"
  } > "$run/vars"
  local -a q=(qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
    -accel "${RFX_RXE_ACCEL:-tcg,thread=multi}" -M pc -cpu "$CPU" -smp "$SMP" -m "$MEM"
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd"
    -append "console=ttyS0 quiet loglevel=3 panic=-1 $CLOCK"
    -serial "file:$run/serial.log"
    -fsdev "local,id=h,path=/,security_model=none,readonly=on,multidevs=remap"
    -device virtio-9p-pci,fsdev=h,mount_tag=host
    -fsdev "local,id=c,path=${run//,/,,},security_model=none"
    -device virtio-9p-pci,fsdev=c,mount_tag=ctl
    -device virtio-rng-pci)
  [ "$WORKDIR" = / ] || q+=(-fsdev "local,id=w,path=${WORKDIR//,/,,},security_model=none,multidevs=remap"
    -device virtio-9p-pci,fsdev=w,mount_tag=work)
  t0=$(stamp)
  timeout -k 5 "$TIMEOUT" "${q[@]}" > "$run/qemu.log" 2>&1 &
  qpid=$!
  QPID=$qpid
  follow "$run/stdout" "$qpid" &
  local f1=$!
  follow "$run/stderr" "$qpid" >&2 &
  local f2=$!
  local qrc=0
  wait "$qpid" || qrc=$?
  QPID=
  # tail exits on its own once qemu is gone (--pid); bound it anyway.
  for _ in $(seq 30); do kill -0 "$f1" 2> /dev/null || kill -0 "$f2" 2> /dev/null || break; sleep 0.1; done
  kill "$f1" "$f2" 2> /dev/null || true
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    say "timeout: VM killed after $TIMEOUT s"; rc=124
  elif [ -f "$run/rc" ]; then
    rc=$(cat "$run/rc")
  else
    say "the VM stopped without an exit status (qemu rc $qrc)"
  fi
  [ -s "$run/error" ] && say "guest: $(cat "$run/error")"
  if [ "$rc" = 125 ] || [ "$VERBOSE" -ge 2 ]; then
    say "--- qemu:"; cat "$run/qemu.log" >&2 || true
    say "--- guest console:"; tail -n 30 "$run/console" "$run/serial.log" >&2 || true
  fi
  if [ "$VERBOSE" -ge 1 ]; then
    local boot="?"
    [ -f "$run/started" ] && boot=$(awk -v a="$t0" -v b="$(cat "$run/started")" 'BEGIN { printf "%.1f", b - a }')
    say "kernel $KVER: boot ${boot} s, total $(since "$t0") s, exit status $rc"
  fi
  RC=$rc
}

cleanup() {
  [ -n "${QPID:-}" ] && kill "$QPID" 2> /dev/null
  [ -n "${RUN:-}" ] && [ -z "${RFX_RXE_KEEP:-}" ] && rm -rf "$RUN"
  return 0
}

main() {
  local mode=run
  WORKDIR=$PWD VERBOSE=0
  while [ $# -gt 0 ]; do
    case $1 in
      --workdir) WORKDIR=${2:?--workdir DIR}; shift 2 ;;
      --timeout) TIMEOUT=${2:?--timeout SEC}; shift 2 ;;
      -v) VERBOSE=$((VERBOSE + 1)); shift ;;
      -vv) VERBOSE=2; shift ;;
      --prepare) mode=prepare; shift ;;
      --check) mode=check; shift ;;
      -h|--help) sed -n '2,14p' "$SELF"; exit 0 ;;
      --) shift; break ;;
      *) fail "unknown option $1 (see --help)" ;;
    esac
  done
  WORKDIR=$(cd "$WORKDIR" && pwd -P) || fail "no such directory"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  prepare
  case $mode in
    prepare) exit 0 ;;
    check) set -- bash /run/rfx-ctl/rxe-vm.sh --check-in-vm; VERBOSE=$((VERBOSE > 0 ? VERBOSE : 1)) ;;
    run) [ $# -gt 0 ] || fail "no command (see --help)" ;;
  esac
  run_vm "$@"
  exit "$RC"
}

case ${1:-} in
  --in-vm) vm_main; exit 0 ;;
  --check-in-vm) vm_check; exit ;;
esac
main "$@"
