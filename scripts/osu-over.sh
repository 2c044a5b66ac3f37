#!/usr/bin/env bash
# MPI programs over a given rfx transport: OSU 7.4's benchmarks, unmodified,
# with their validation on (`-c`), under `rfx --transport T run` with rfx's
# libmpi_abi.so. tests/mpi.rs runs the same set on the default transport
# (shm on one host); this runs it where a transport needs a build feature
# or a device: ofi on the host (scripts/ofi-test.sh), verbs in the
# soft-RoCE VM (scripts/verbs-vm.sh). Fails on any failed validation, a
# benchmark that validated nothing, or a rank that failed.
#
#   scripts/osu-over.sh build DEST            build OSU into DEST (host; needs
#                                             mpicc_abi: target/mpi-venv)
#   scripts/osu-over.sh run T RFX LIB OSU     run the checks over transport T
#                                             with binaries RFX and LIB, OSU
#                                             built into the folder OSU
#   RFX_OSU_RANKS="2 4"                       rank counts of the collectives
#   RFX_OSU_MAX=1048576                       largest message (bytes)
#   RFX_OSU_MAX_MANY=RFX_OSU_MAX              largest message beyond 2 ranks
#   RFX_OSU_OUT=DIR                           keep each run's output in DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)

build() {
  local dest=$1 cc
  cc=$(command -v mpicc_abi || true)
  [ -n "$cc" ] || [ ! -x "$ROOT/target/mpi-venv/bin/mpicc_abi" ] || cc=$ROOT/target/mpi-venv/bin/mpicc_abi
  if [ -z "$cc" ]; then
    echo "osu-over: mpicc_abi not found (pip install mpich==5.0.2 into target/mpi-venv," \
      "as scripts/test.sh does)" >&2
    return 1
  fi
  local src=${RFX_OSU_DIR:-$ROOT/../shared/third-party/osu-micro-benchmarks-7.4}
  [ -f "$src/configure" ] || { echo "osu-over: OSU 7.4 is not at $src (set RFX_OSU_DIR)" >&2; return 1; }
  "$ROOT/scripts/osu-build.sh" "$src" "$dest" "$cc" "$(dirname "$cc")/mpicxx_abi"
}

# One benchmark: name, ranks, then OSU's arguments.
one() {
  local name=$1 n=$2 sub out rc=0
  shift 2
  case $name in
    osu_latency | osu_bw) sub=c/mpi/pt2pt/standard ;;
    *) sub=c/mpi/collective/blocking ;;
  esac
  out=$OUT_DIR/$name.$n.log
  RFX_MPI_LIB=$LIB timeout 300 "$RFX" --transport "$T" run --timeout-s 240 -n "$n" \
    "$OSU/$sub/$name" "$@" > "$out" 2>&1 || rc=$?
  local pass fail
  pass=$(grep -c "Pass" "$out" || true)
  fail=$(grep -c "Fail" "$out" || true)
  if [ "$rc" != 0 ] || [ "$fail" != 0 ] || ! grep -q "# OSU MPI" "$out" \
    || { [ "$name" != osu_barrier ] && [ "$pass" = 0 ]; }; then
    printf '%-14s %d ranks over %s: FAILED (exit %s, %s sizes failed validation)\n' \
      "$name" "$n" "$T" "$rc" "$fail"
    tail -n 20 "$out"
    return 1
  fi
  printf '%-14s %d ranks over %s: ok (%s sizes validated)\n' "$name" "$n" "$T" "$pass"
}

run() {
  T=$1 RFX=$2 LIB=$3 OSU=$4
  local max=${RFX_OSU_MAX:-1048576} fail=0 n name
  OUT_DIR=${RFX_OSU_OUT:-$(mktemp -d)}
  mkdir -p "$OUT_DIR"
  local args=(-c -m "1:$max" -i 10 -x 2)
  one osu_latency 2 "${args[@]}" || fail=1
  one osu_bw 2 "${args[@]}" -W 8 || fail=1
  for n in ${RFX_OSU_RANKS:-2 4}; do
    [ "$n" -le 2 ] || args=(-c -m "1:${RFX_OSU_MAX_MANY:-$max}" -i 10 -x 2)
    one osu_barrier "$n" -i 50 -x 5 || fail=1
    for name in osu_bcast osu_reduce osu_allreduce osu_gather osu_scatter osu_allgather osu_alltoall; do
      one "$name" "$n" "${args[@]}" || fail=1
    done
  done
  return "$fail"
}

case ${1:-} in
  build) build "$2" ;;
  run) run "$2" "$3" "$4" "$5" ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
