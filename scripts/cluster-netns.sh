#!/usr/bin/env bash
# A cluster of "hosts" on this machine: one network namespace per host, each
# with a veth pair into a bridge in the root namespace (which holds the
# bridge address, .1, so tools and clients there reach every host). Each
# namespace is its own host for rfx (host identity = boot id + network
# namespace), so connections between them select tcp, never shm.
#
#   scripts/cluster-netns.sh up [N]         create hosts 0..N (default N=2: h0 for the
#                                           lease manager, h1..hN for executor managers)
#   scripts/cluster-netns.sh down           remove them (idempotent; kills what runs inside)
#   scripts/cluster-netns.sh exec H CMD...  run CMD in host H (index, name or address)
#   scripts/cluster-netns.sh addr H         print host H's address
#   scripts/cluster-netns.sh hosts          list "name address" of every host
#   scripts/cluster-netns.sh start [N]      up, then a lease manager on h0:7600 and an
#                                           executor manager on each of h1..hN:7700
#                                           (logs and pids in $RFX_NETNS_STATE)
#   scripts/cluster-netns.sh check          exit 0 if namespaces can be created here
#
# Environment: RFX_NETNS_PREFIX (default rfx; names are PREFIX-h0.., PREFIX-br,
# PREFIX-v0..), RFX_NETNS_SUBNET (first three octets, default 10.77.0),
# RFX_NETNS_STATE (default /tmp/PREFIX-netns), RFX_BIN (the rfx binary, for
# `start`; default target/debug/rfx), RFX_CLUSTER_KEY (for `start`).
# Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2. Touches only the
# namespaces and links named with its prefix.
set -euo pipefail

prefix=${RFX_NETNS_PREFIX:-rfx}
subnet=${RFX_NETNS_SUBNET:-10.77.0}
state=${RFX_NETNS_STATE:-/tmp/$prefix-netns}
bridge="$prefix-br"
[ ${#bridge} -le 15 ] || { echo "RFX_NETNS_PREFIX too long for interface names" >&2; exit 2; }

ns_name() { echo "$prefix-h$1"; }
ns_addr() { echo "$subnet.$((10 + $1))"; }

# Host argument (index, namespace name or address) -> index.
host_index() {
    local h=$1 i
    if [[ $h =~ ^[0-9]+$ ]]; then echo "$h"; return; fi
    if [[ $h == "$prefix-h"* ]]; then echo "${h#"$prefix-h"}"; return; fi
    if [[ $h == "$subnet".* ]]; then i=${h##*.}; echo $((i - 10)); return; fi
    echo "unknown host $h" >&2; exit 2
}

ours() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$prefix-h[0-9]+$" || true; }

up() {
    local n=${1:-2} i ns veth
    ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
    ip addr replace "$subnet.1/24" dev "$bridge"
    ip link set "$bridge" up
    for i in $(seq 0 "$n"); do
        ns=$(ns_name "$i"); veth="$prefix-v$i"
        ip netns list | awk '{print $1}' | grep -qx "$ns" || ip netns add "$ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip link add "$veth" type veth peer name eth0 netns "$ns"
        fi
        ip link set "$veth" master "$bridge" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr replace "$(ns_addr "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
}

down() {
    local ns pid
    for ns in $(ours); do
        # Stop whatever still runs inside (our managers, their executors).
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    done
    sleep 0.3
    for ns in $(ours); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    # Root-side veth ends vanish with their peers; remove stragglers and the bridge.
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^$prefix-v[0-9]+$" || true); do
        ip link del "$l" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    rm -rf "$state"
}

start() {
    local n=${1:-2} i rfx=${RFX_BIN:-target/debug/rfx} lm
    : "${RFX_CLUSTER_KEY:?set RFX_CLUSTER_KEY}"
    up "$n"
    mkdir -p "$state"
    lm="$(ns_addr 0):7600"
    ip netns exec "$(ns_name 0)" "$rfx" lease-manager --listen "$lm" --db "$state/leases.redb" \
        >"$state/lease-manager.log" 2>&1 &
    echo $! >"$state/lease-manager.pid"
    # Executor managers register at start: wait (bounded) until it listens.
    for _ in $(seq 100); do
        ip netns exec "$(ns_name 0)" ss -Hltn "sport = :7600" | grep -q . && break
        sleep 0.1
    done
    for i in $(seq 1 "$n"); do
        ip netns exec "$(ns_name "$i")" "$rfx" executor-manager --sandbox off --lease-manager "$lm" \
            --listen "$(ns_addr "$i"):7700" --cores 2 --gpu 0 >"$state/em$i.log" 2>&1 &
        echo $! >"$state/em$i.pid"
    done
    echo "lease manager at $lm; executor managers at $(for i in $(seq 1 "$n"); do printf '%s:7700 ' "$(ns_addr "$i")"; done)"
}

cmd=${1:-}; shift || true
case "$cmd" in
    up) up "${1:-2}" ;;
    down) down ;;
    start) start "${1:-2}" ;;
    exec)
        [ $# -ge 2 ] || { echo "usage: $0 exec HOST CMD..." >&2; exit 2; }
        i=$(host_index "$1"); shift
        exec ip netns exec "$(ns_name "$i")" "$@" ;;
    addr) ns_addr "$(host_index "$1")" ;;
    hosts) for ns in $(ours); do i=${ns##*-h}; echo "$ns $(ns_addr "$i")"; done ;;
    check)
        probe="$prefix-probe$$"
        ip netns add "$probe" 2>/dev/null || { echo "cannot create network namespaces (need root / CAP_SYS_ADMIN)"; exit 1; }
        ip netns del "$probe"
        ip link add "$prefix-pb" type bridge 2>/dev/null || { echo "cannot create a bridge (need CAP_NET_ADMIN)"; exit 1; }
        ip link del "$prefix-pb" ;;
    *) sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
