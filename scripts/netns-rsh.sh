#!/usr/bin/env bash
# A remote shell for `rfx run --hosts` (RFX_RSH) over the network
# namespaces of scripts/cluster-netns.sh: `netns-rsh.sh ADDRESS CMD...` runs
# CMD in the namespace that owns ADDRESS, as `ssh ADDRESS CMD...` would on a
# real cluster: the words joined by spaces, run by a shell, stdin passed on.
#
#   RFX_RSH=scripts/netns-rsh.sh rfx run -n 4 --hosts 10.77.0.11,10.77.0.12 prog
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 ADDRESS CMD..." >&2; exit 2; }
addr=$1; shift
for ns in $(ip netns list | awk '{print $1}'); do
    if ip -n "$ns" -o -4 addr show 2>/dev/null | grep -q " inet $addr/"; then
        exec ip netns exec "$ns" sh -c "$*"
    fi
done
echo "netns-rsh: no network namespace has address $addr" >&2
exit 255
