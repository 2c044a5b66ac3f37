#!/usr/bin/env bash
# A one-node Slurm on this machine, for tests and trying the batch script:
# a private slurm.conf, munged, slurmctld and slurmd in a state directory,
# no systemd, no cgroups (Debian 12's slurm-wlm 22.05: apt-get install
# slurmctld slurmd slurm-client munge). Run as root.
#
#   scripts/slurm/local-slurm.sh up DIR     start (bounded: fails if the node is not idle in 30 s)
#   scripts/slurm/local-slurm.sh down DIR   stop everything started from DIR (idempotent)
#   scripts/slurm/local-slurm.sh env DIR    print `export SLURM_CONF=...` for srun/sbatch
#
# Then: SLURM_CONF=DIR/slurm.conf srun -O -n 2 PROGRAM   (-O: more tasks than CPUs)
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,12p' "$0" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/slurm.conf"

stop_pidfile() {
    local f=$1 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

case "$cmd" in
up)
    for b in slurmctld slurmd munged srun; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || { echo "local-slurm: $b not installed" >&2; exit 3; }
    done
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
    chown munge: "$dir/munge" 2>/dev/null || true
    chmod 700 "$dir/munge"
    node=$(slurmd -C | head -1)
    nodename=$(echo "$node" | sed -n 's/^NodeName=\([^ ]*\).*/\1/p')
    # munged with its own socket, as user munge (Debian's key in /etc/munge).
    runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.sock" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" --force
    for i in $(seq 1 50); do [ -S "$dir/munge/munge.sock" ] && break; sleep 0.1; done
    cp "$dir/munge/munged.pid" "$dir/munged.pid"
    cat >"$conf" <<CONF
ClusterName=rfxlocal
SlurmctldHost=$nodename
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=${RFX_SLURMCTLD_PORT:-6817}
SlurmdPort=${RFX_SLURMD_PORT:-6818}
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    export SLURM_CONF="$conf"
    slurmctld -D -i -f "$conf" >"$dir/log/slurmctld.out" 2>&1 &
    echo $! >"$dir/slurmctld.pid.own"
    slurmd -D -f "$conf" >"$dir/log/slurmd.out" 2>&1 &
    echo $! >"$dir/slurmd.pid.own"
    for i in $(seq 1 300); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; then
            echo "local-slurm: node $nodename idle; export SLURM_CONF=$conf"
            exit 0
        fi
        sleep 0.1
    done
    echo "local-slurm: node not idle within 30 s" >&2
    tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 2>/dev/null || true
    exit 1
    ;;
down)
    stop_pidfile "$dir/slurmd.pid.own"
    stop_pidfile "$dir/slurmctld.pid.own"
    stop_pidfile "$dir/munged.pid"
    ;;
env) echo "export SLURM_CONF=$conf" ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
