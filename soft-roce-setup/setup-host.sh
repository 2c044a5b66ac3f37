#!/usr/bin/env bash
# setup-host.sh - make a real Linux host (kernel with rdma_rxe) an RDMA host
# for rfx's verbs provider: soft-RoCE device on a network interface, user
# space verbs libraries, and a memlock limit that lets processes register
# memory.
#
#   sudo soft-roce-setup/setup-host.sh [--netdev IFACE] [--name rxe0]
#   soft-roce-setup/setup-host.sh --check [--name rxe0]   report, change nothing
#   sudo soft-roce-setup/setup-host.sh --remove [--name rxe0]
#
# IFACE defaults to the interface of the default route. Exit status of
# --check: 0 when everything rfx needs is there, 1 otherwise.
set -euo pipefail

NAME=rxe0
NETDEV=""
MODE=setup
MEMLOCK_CONF=/etc/security/limits.d/90-rfx-rdma.conf
PKGS="rdma-core ibverbs-providers ibverbs-utils perftest iproute2 kmod"

say() { echo "[setup-host] $*"; }
die() { echo "[setup-host] error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --netdev) NETDEV=${2:?--netdev IFACE}; shift 2 ;;
    --name) NAME=${2:?--name DEV}; shift 2 ;;
    --check) MODE=check; shift ;;
    --remove) MODE=remove; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
PATH=$PATH:/usr/sbin:/sbin

default_netdev() {
  ip -o route show default 2> /dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }'
}

check() {
  local ok=0 f
  if [ -d /sys/module/rdma_rxe ] || modinfo rdma_rxe > /dev/null 2>&1; then
    say "ok: kernel module rdma_rxe $( [ -d /sys/module/rdma_rxe ] && echo loaded || echo available)"
  else
    say "MISSING: kernel module rdma_rxe (this kernel has no soft-RoCE; use rxe-vm.sh)"; ok=1
  fi
  for f in libibverbs.so.1 librdmacm.so.1 librxe-rdmav34.so; do
    if ldconfig -p 2> /dev/null | grep -q "$f" || ls /usr/lib/*/libibverbs/"$f" > /dev/null 2>&1; then
      say "ok: $f"
    else
      say "MISSING: $f (apt-get install $PKGS)"; ok=1
    fi
  done
  if command -v rdma > /dev/null && rdma link show "$NAME/1" > /dev/null 2>&1; then
    say "ok: $(rdma link show "$NAME/1")"
    if [ -d "/sys/class/infiniband/$NAME/ports/1/gids" ]; then
      say "ok: GIDs $(grep -v '^0000:0000:0000:0000:0000:0000:0000:0000$' /sys/class/infiniband/"$NAME"/ports/1/gids/* 2> /dev/null | wc -l)"
    fi
  else
    say "MISSING: RDMA link $NAME (run: sudo $0 --netdev IFACE)"; ok=1
  fi
  local lim
  lim=$(ulimit -l)
  if [ "$lim" = unlimited ] || [ "$lim" -ge 65536 ]; then
    say "ok: memlock limit $lim KiB"
  else
    say "LOW: memlock limit $lim KiB (each rfx verbs endpoint pins ~0.5 MiB plus exposed regions; log in again after setup, or ulimit -l unlimited)"
    ok=1
  fi
  if command -v ibv_devices > /dev/null; then ibv_devices || true; fi
  [ $ok = 0 ] && say "check passed" || say "check failed"
  return $ok
}

setup() {
  [ "$(id -u)" = 0 ] || die "run as root (or use --check)"
  NETDEV=${NETDEV:-$(default_netdev)}
  [ -n "$NETDEV" ] || die "no default route: pass --netdev IFACE"
  ip link show "$NETDEV" > /dev/null 2>&1 || die "no interface $NETDEV"
  if ! command -v rdma > /dev/null || ! command -v ibv_devices > /dev/null; then
    say "installing $PKGS"
    apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS
  fi
  modprobe rdma_rxe || die "modprobe rdma_rxe failed: the kernel has no soft-RoCE"
  modprobe ib_uverbs || true
  if rdma link show "$NAME/1" > /dev/null 2>&1; then
    say "$NAME exists: $(rdma link show "$NAME/1")"
  else
    rdma link add "$NAME" type rxe netdev "$NETDEV" || die "rdma link add $NAME failed"
    say "added $NAME on $NETDEV"
  fi
  # Give the GID table a moment (it fills asynchronously).
  for _ in $(seq 50); do
    ls "/sys/class/infiniband/$NAME/ports/1/gids/1" > /dev/null 2>&1 && break
    sleep 0.1
  done
  if [ ! -f "$MEMLOCK_CONF" ]; then
    printf '# rfx verbs provider: registered memory is pinned\n*\tsoft\tmemlock\tunlimited\n*\thard\tmemlock\tunlimited\n' > "$MEMLOCK_CONF"
    say "wrote $MEMLOCK_CONF (applies to new logins)"
  fi
  ulimit -l unlimited 2> /dev/null || true
  check
}

remove() {
  [ "$(id -u)" = 0 ] || die "run as root"
  rdma link delete "$NAME" 2> /dev/null && say "removed $NAME" || say "no $NAME"
}

case $MODE in
  check) check ;;
  setup) setup ;;
  remove) remove ;;
esac
