#!/bin/sh
# Builds the C test programs against the standard ABI's mpi.h and runs each
# on rfx and on MPICH (the reference) with 2, 3 and 4 ranks.
#
#   mpi/tests/c/run.sh [rfx|mpich|both] [program...]
#
# Environment: MPICC (default mpicc_abi on PATH), MPIEXEC (MPICH's mpiexec),
# RFX (the rfx binary), RFX_LIB (a folder holding rfx's libmpi_abi.so.1),
# BUILD (where binaries go), RANKS (default "2 3 4").
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
which=${1:-both}
[ $# -gt 0 ] && shift
progs=${*:-"env p2p p2p_nb coll icoll comm types ops errors"}
MPICC=${MPICC:-mpicc_abi}
MPIEXEC=${MPIEXEC:-mpiexec}
RFX=${RFX:-$root/target/release/rfx}
RFX_LIB=${RFX_LIB:-/tmp/mt/rlib}
BUILD=${BUILD:-/tmp/rfx-mpi-c-tests}
RANKS=${RANKS:-"2 3 4"}
mkdir -p "$BUILD"
fails=0
for p in $progs; do
    $MPICC -std=c11 -O1 -Wall -Wextra -Werror -o "$BUILD/$p" "$here/$p.c" -lm || {
        echo "BUILD FAIL $p"
        fails=$((fails + 1))
        continue
    }
    for n in $RANKS; do
        if [ "$which" != mpich ]; then
            if LD_LIBRARY_PATH=$RFX_LIB timeout 120 "$RFX" run -n "$n" --timeout-s 100 "$BUILD/$p"; then
                echo "pass rfx $p -n $n"
            else
                echo "FAIL rfx $p -n $n"
                fails=$((fails + 1))
            fi
        fi
        if [ "$which" != rfx ]; then
            if timeout 120 "$MPIEXEC" -n "$n" "$BUILD/$p"; then
                echo "pass mpich $p -n $n"
            else
                echo "FAIL mpich $p -n $n"
                fails=$((fails + 1))
            fi
        fi
    done
done
echo "$fails failure(s)"
[ "$fails" -eq 0 ]
