#!/usr/bin/env bash
# Finds or installs the baselines `rfx-bench all` compares rfx with, and
# says what it found:
#   - sockperf (Debian package sockperf): the TCP baseline; without it, the
#     in-repo raw TCP ping-pong (bench/src/baseline/tcp.rs) is the baseline;
#   - libfabric's fi_pingpong (libfabric-bin): the ofi baseline, used when
#     rfx-bench is built with --features ofi;
#   - perftest's ib_write_lat: needs an RDMA device, so it runs only in the
#     soft-RoCE VM (scripts/verbs-vm.sh);
#   - Open MPI + bench/mpi/coll_lat.c, built to target/coll_lat: the
#     collectives baseline;
#   - MPICH's standard-ABI toolchain (pip install mpich==5.0.2, into
#     target/mpi-venv) and the OSU source beside the repository: the OSU
#     runs of `rfx-bench mpi` (rfx, MPICH and Open MPI side by side);
#   - process spawn: cold-start measures a trivial spawn as its floor
#     (nothing to install).
# The raw shm ping-pong is in-repo too (bench/src/baseline/shm.rs).
#
#   scripts/baselines.sh             install what is missing (apt), build coll_lat
#   RFX_BASELINES_NO_APT=1 scripts/baselines.sh   only look
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(sockperf libfabric-bin perftest openmpi-bin libopenmpi-dev build-essential python3-venv)
if [ "${RFX_BASELINES_NO_APT:-0}" != 1 ]; then
    missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "baselines: installing ${missing[*]}"
        $SUDO apt-get update -q
        for p in "${missing[@]}"; do
            # One at a time: a package this release lacks must not stop the others.
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$p" \
                || echo "baselines: could not install $p"
        done
    fi
fi

status=0
say() { printf '%-14s %-8s %s\n' "$1" "$2" "$3"; }
echo "baseline       status   note"
if command -v sockperf >/dev/null 2>&1; then
    say sockperf found "$(sockperf --version 2>&1 | grep -o 'version [^ ]*' | head -1)"
else
    say sockperf missing "tcp is judged against the in-repo raw TCP ping-pong instead"
fi
say "raw tcp/shm" found "in-repo ping-pongs (bench/src/baseline/), always measured"
if command -v fi_pingpong >/dev/null 2>&1; then
    say fi_pingpong found "used by rfx-bench built with --features ofi (transport --transport ofi)"
else
    say fi_pingpong missing "apt-get install libfabric-bin"
fi
if command -v ib_write_lat >/dev/null 2>&1; then
    say ib_write_lat found "runs only in the soft-RoCE VM: scripts/verbs-vm.sh"
else
    say ib_write_lat missing "apt-get install perftest; runs only in the soft-RoCE VM: scripts/verbs-vm.sh"
fi
if command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1; then
    mkdir -p target
    if mpicc -O2 -Wall -o target/coll_lat bench/mpi/coll_lat.c; then
        say mpi found "$(mpirun --version 2>&1 | head -1); built target/coll_lat"
    else
        say mpi missing "mpicc failed to build bench/mpi/coll_lat.c"
        status=1
    fi
else
    say mpi missing "apt-get install openmpi-bin libopenmpi-dev"
fi
if [ -x target/mpi-venv/bin/mpicc_abi ] || { [ "${RFX_BASELINES_NO_APT:-0}" != 1 ] \
        && { [ -x target/mpi-venv/bin/pip ] || python3 -m venv target/mpi-venv; } \
        && target/mpi-venv/bin/pip install -q --disable-pip-version-check mpich==5.0.2; }; then
    say mpich-abi found "target/mpi-venv/bin/mpicc_abi (rfx-bench mpi finds it there)"
else
    say mpich-abi missing "python3 -m venv target/mpi-venv && target/mpi-venv/bin/pip install mpich==5.0.2"
fi
if [ -f ../shared/third-party/osu-micro-benchmarks-7.4/configure ] || [ -n "${RFX_OSU_DIR:-}" ]; then
    say osu found "${RFX_OSU_DIR:-../shared/third-party/osu-micro-benchmarks-7.4}"
else
    say osu missing "the OSU 7.4 source: ../shared/third-party/osu-micro-benchmarks-7.4 or RFX_OSU_DIR"
fi
say spawn found "cold-start's floor: fork+exec+wait of /bin/true, measured in the same run"
exit $status
