#!/usr/bin/env bash
# Bounded load test of rfx (issue 9): many tenants and client threads lease a
# core, find its executor, invoke `echo` pipelined (unique payloads, every
# result checked) and release, for a fixed time, against one lease manager
# and several executor managers started as child processes on loopback.
# Prints counts (invocations, errors, lost and wrong results: these must be
# 0) and latency percentiles under load; writes JSON.
#
#   scripts/load.sh                      20 s, 3 hosts x 4 cores, 4 tenants x 2 clients
#   scripts/load.sh --duration-s 60 --hosts 4 --tenants 8 --transport tcp
#   RFX_LOAD_JSON=out/load.json scripts/load.sh
#
# Any other flag is passed to `rfx-bench load` (see `rfx-bench load --help`).
# Exit status non-zero if anything was lost, wrong or failed.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${RFX_LOAD_PROFILE:-release}
json=${RFX_LOAD_JSON:-out/load.json}
flag=(--release); [ "$profile" = debug ] && flag=()
cargo build -q "${flag[@]}" -p rfx -p rfx-bench
bin=target/$profile
# The bench builds examples/functions (release) itself unless --lib is given.
mkdir -p "$(dirname "$json")"
exec timeout 600 "$bin/rfx-bench" load --rfx "$bin/rfx" --json "$json" "$@"
