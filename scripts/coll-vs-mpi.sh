#!/usr/bin/env bash
# rfx collectives side by side with Open MPI on this machine: installs Open
# MPI when missing, builds the OSU-style MPI benchmark (bench/mpi/coll_lat.c)
# and rfx-bench, then runs `rfx-bench coll --mpi` (both implementations, one
# after the other, same operations, sizes, rank counts and method) and
# writes the table and out/coll.json.
#
#   scripts/coll-vs-mpi.sh                       # 2 and 4 ranks, 8 B .. 1 MiB
#   scripts/coll-vs-mpi.sh --ranks 2 --ops allreduce --sizes 8,1m
#
# Open MPI runs with its shared-memory transport (btl self,vader), bound to
# cores when every rank has one (--bind-to core), floating otherwise; rfx
# ranks are pinned by the same rule. Extra arguments go to `rfx-bench coll`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mpicc >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        openmpi-bin libopenmpi-dev build-essential
fi

mkdir -p target out
mpicc -O2 -Wall -o target/coll_lat bench/mpi/coll_lat.c
cargo build -q --release -p rfx-bench
mpirun --version | head -1
exec target/release/rfx-bench coll --mpi target/coll_lat --json out/coll.json "$@"
