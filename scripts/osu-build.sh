#!/usr/bin/env bash
# Builds the OSU Micro-Benchmarks rfx measures and tests against, from an
# unmodified source tree, with a given MPI compiler, into DEST:
#
#   scripts/osu-build.sh SRC DEST CC CXX
#
# SRC is never written (CI mounts ../shared read-only): it is copied to DEST
# first. The copy's times are the copy's, so the generated files are given
# times after their sources, or make would try to rerun automake. Builds
# single targets: a plain `make` also builds what rfx does not use. A DEST
# already built (DEST/.rfx-built naming the same CC) is left as it is.
set -euo pipefail
src=$(realpath "$1") dest=$(realpath -m "$2") cc=$3 cxx=$4
stamp="$dest/.rfx-built"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$cc" ]; then
    exit 0
fi
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -r "$src" "$dest"
cd "$dest"
find . -type f -exec touch -d 2020-01-01 {} +
touch -d 2020-01-02 aclocal.m4
find . \( -name Makefile.in -o -name configure -o -name config.h.in \) -exec touch -d 2020-01-03 {} +
./configure CC="$cc" CXX="$cxx" > configure.log 2>&1 || { tail -30 configure.log >&2; exit 1; }
{
    make -j2 -C c/mpi/pt2pt/standard osu_latency osu_bw
    make -j2 -C c/mpi/collective/blocking osu_bcast osu_reduce osu_allreduce osu_barrier \
        osu_gather osu_scatter osu_allgather osu_alltoall
} > make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
echo "$cc" > "$stamp"
