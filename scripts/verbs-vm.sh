#!/usr/bin/env bash
# verbs-vm.sh - the verbs checks of rfx in ONE boot of the soft-RoCE VM
# (soft-roce-setup/rxe-vm.sh):
#   1. the fabric conformance suite for the verbs provider, the provider's
#      own device tests, and collectives between processes over verbs
#      (large messages lent and read by RDMA READ),
#   2. an end-to-end run: `rfx demo --transports verbs` (lease manager,
#      executor manager, executor process, invocations over verbs),
#   3. MPI programs over verbs: OSU 7.4's benchmarks, unmodified, with their
#      validation on, under `rfx --transport verbs run` (2 and 4 ranks;
#      scripts/osu-over.sh): the collectives over RDMA,
#   4. `rfx-bench invoke --transport verbs` (invocation round trips) and
#      `rfx-bench transport --transport verbs` (rfx's write_imm ping-pong
#      beside the raw WRITE_WITH_IMM ping-pong, the loop of
#      `ib_write_lat --write_with_imm`), and perftest's plain `ib_write_lat`,
#      in the same VM session: JSON + a table with ratios to both baselines.
#      And one-sided reads: `rfx-bench transport --transport verbs --op read`
#      (the client times `Endpoint::read`, an RDMA READ) against perftest's
#      `ib_read_lat` at 8 B, 4 KiB, 64 KiB and 1 MiB.
#
#   scripts/verbs-vm.sh               build on the host, then run in the VM
#   RFX_VERBS_RUNS=N                  benchmark repetitions (median), default 3
#   RFX_VERBS_ITERS=N                 round trips per benchmark run, default 3000
#                                     (a tenth, at least 100, for 1 MiB reads)
#   RFX_VERBS_STEPS=LIST              steps to run (conformance,demo,mpi,bench: all;
#                                     `reads` compares reads that land in the caller's
#                                     memory with the bounce buffer, not in the default)
#   RFX_TEST_SKIP_MPI=1               no mpi step (it needs MPICH's mpicc_abi on the
#                                     host to build OSU, as tests/mpi.rs does)
#
# The goal's baseline is `ib_write_lat --write_with_imm`, which Debian 12's
# perftest (4.5) lacks: its loop runs in-repo as the raw verbs baseline of
# `rfx-bench transport` (fabric/src/verbs/baseline.rs; it matched upstream
# perftest's binary in one VM session, README). Plain `ib_write_lat` (RDMA
# WRITE, the receiver polls memory: no receive completion) is shown too.
# ib_read_lat's t_typical is a whole READ round trip (perftest halves only
# the write/send ping-pongs), like rfx's read figure.
# Results: target/verbs-vm/{summary.json,summary.txt,*.json,*.log}.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
OUT=$ROOT/target/verbs-vm
RUNS=${RFX_VERBS_RUNS:-3}
ITERS=${RFX_VERBS_ITERS:-3000}
BIG_ITERS=$(( ITERS / 10 > 100 ? ITERS / 10 : 100 ))
STEPS=${RFX_VERBS_STEPS:-conformance,demo,mpi,bench}
# The VM runs copies of what was built (the target directory may be rebuilt
# by someone else with other features while the VM runs).
BIN=$OUT/bin
step() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { printf '\n== [verbs-vm] %s\n' "$*"; }

#############################################################################
# In the VM (cwd = ROOT, env RXE_DEV, RXE_GID_INDEX, RXE_IP from rxe-vm.sh).
#############################################################################

# Median of numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'; }

# One loopback perftest latency pair (server on CPU 1, client on CPU 0):
# tool $1 (ib_write_lat, ib_read_lat), size $2, port $3, iterations $4
# (default $ITERS): prints t_typical (us; one-way for writes, the whole
# round trip for reads).
perf_lat() {
  local tool=$1 size=$2 port=$3 n=${4:-$ITERS} srv
  taskset -c 1 timeout 120 "$tool" -d "$RXE_DEV" -x "$RXE_GID_INDEX" -s "$size" \
    -n "$n" -F -p "$port" > "$OUT/$tool.srv.$size.$port.log" 2>&1 &
  srv=$!
  for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
  taskset -c 0 timeout 120 "$tool" -d "$RXE_DEV" -x "$RXE_GID_INDEX" -s "$size" \
    -n "$n" -F -p "$port" "$RXE_IP" > "$OUT/$tool.$size.$port.log" 2>&1 || true
  wait "$srv" || true
  awk -v s="$size" '$1 == s && NF >= 7 { print $5 }' "$OUT/$tool.$size.$port.log"
}
write_lat() { perf_lat ib_write_lat "$@"; }

# p50 (us) of the rows of an `rfx-bench transport --op read` JSON report:
# prints "read_MODE size p50".
read_p50s() {
  awk '
    /"results":/ { rows = 1 }
    rows && /"mode":/ { gsub(/[",]/, "", $2); mode = $2 }
    rows && /"size":/ { gsub(/,/, "", $2); size = $2 }
    rows && /"rfx": \{/ { inrfx = 1 }
    rows && inrfx && /"p50_us":/ { gsub(/,/, "", $2); print "read_" mode, size, $2; inrfx = 0 }
  ' "$1"
}

# p50 (us) of rows of an rfx-bench JSON report: prints "key size object p50".
p50s() {
  awk '
    /"function":/ { gsub(/[",]/, "", $2); fn = $2 }
    /"size":/ { gsub(/,/, "", $2); size = $2 }
    /"(invoke|transport_pingpong|rfx|raw)": \{/ { gsub(/[":{]/, "", $1); obj = $1 }
    /"p50_us":/ { gsub(/,/, "", $2); print (fn == "" ? "transport" : fn), size, obj, $2 }
  ' "$1"
}

guest() {
  local fail=0 t0 bin lib
  t0=$(date +%s)
  mkdir -p "$OUT"
  echo "device $RXE_DEV, GID index $RXE_GID_INDEX, $(nproc) vCPUs"
  bin=$BIN/conformance
  lib=$BIN/librfx_example_functions.so

  if step conformance; then
    log "1/4 conformance suite, provider verbs"
    if ! timeout 300 "$bin" verbs:: --test-threads=1 2>&1 | tee "$OUT/conformance.log" | grep -E "^test |test result|panicked"; then
      fail=1
    fi
    grep -q "test result: ok" "$OUT/conformance.log" || fail=1
    if ! timeout 120 "$BIN/fabric-unit" verbs::device_tests 2>&1 | tee "$OUT/device-tests.log" | grep -E "^test |test result|panicked"; then
      fail=1
    fi
    grep -q "test result: ok. [1-9]" "$OUT/device-tests.log" || fail=1
    if ! timeout 300 "$BIN/collectives" --exact large_messages_are_lent_over_verbs --test-threads=1 2>&1 |
        tee "$OUT/collectives.log" | grep -E "^test |test result|panicked"; then
      fail=1
    fi
    grep -q "test result: ok. 1 passed" "$OUT/collectives.log" || fail=1
  fi

  if step demo; then
    log "2/4 end to end: rfx demo --transports verbs"
    if ! timeout -k 10 240 "$BIN/rfx" demo --transports verbs --lib "$lib" --iters 2000 \
        > "$OUT/demo.log" 2>&1; then
      fail=1
    fi
    cat "$OUT/demo.log"
  fi

  if step mpi; then
    log "3/4 MPI programs over verbs: OSU 7.4 with validation, 2 and 4 ranks"
    # 4 ranks on 2 emulated vCPUs: up to 256 KiB (1 MiB took ~150 s).
    if ! RFX_OSU_OUT=$OUT/osu-logs RFX_OSU_MAX_MANY=262144 bash "$ROOT/scripts/osu-over.sh" run verbs \
        "$BIN/rfx" "$BIN/libmpi_abi.so" "$ROOT/target/osu-over"; then
      fail=1
    fi
  fi
  if step reads; then
    log "reads into unregistered memory: landing there (RFX_VERBS_LANDING_MIN=1) against the bounce buffer (=0), interleaved"
    # read: Endpoint::read of an exposed region; read-lent: lend (a
    # registration), read the loan, end it, all timed.
    local rr op mode
    : > "$OUT/reads.txt"
    for rr in $(seq "$RUNS"); do
      for op in read read-lent; do
        for mode in land bounce; do
          local min=1
          [ "$mode" = bounce ] && min=0
          rm -f "$OUT/reads.$op.$mode.$rr.json"
          RFX_VERBS_LANDING_MIN=$min timeout 240 "$BIN/rfx-bench" transport --transport verbs \
            --op "$op" --mode hot --sizes 64k,256k,1m,4m --iters "$BIG_ITERS" --warmup 30 \
            --cpus 0,1 --json "$OUT/reads.$op.$mode.$rr.json" > "$OUT/reads.$op.$mode.$rr.log" 2>&1 || fail=1
          [ -s "$OUT/reads.$op.$mode.$rr.json" ] &&
            read_p50s "$OUT/reads.$op.$mode.$rr.json" | awk -v k="$op.$mode" '{ print k, $2, $3 }' >> "$OUT/reads.txt"
        done
      done
    done
    echo "p50 us, median of $RUNS runs: op.mode size p50"
    local key sz
    for key in read.land read.bounce read-lent.land read-lent.bounce; do
      for sz in 65536 262144 1048576 4194304; do
        echo "$key $sz $(awk -v k="$key" -v s="$sz" '$1 == k && $2 == s { print $3 }' "$OUT/reads.txt" | median)"
      done
    done | tee "$OUT/reads-summary.txt"
  fi
  step bench || { echo "verbs-vm: guest part took $(( $(date +%s) - t0 )) s"; return "$fail"; }

  log "4/4 benchmarks: $RUNS runs of $ITERS round trips; raw write_with_imm and ib_write_lat in the same session"
  local r size port=18700
  : > "$OUT/raw.txt"
  for r in $(seq "$RUNS"); do
    for size in 8 4096; do
      echo "ib_write_lat $size $(write_lat "$size" "$port")" >> "$OUT/raw.txt"
      port=$((port + 1))
    done
    rm -f "$OUT/invoke.$r.json"
    timeout 240 "$BIN/rfx-bench" invoke --transport verbs --mode hot \
      --sizes 8,4k --iters "$ITERS" --warmup 300 --cpus 0,1 --lib "$lib" \
      --json "$OUT/invoke.$r.json" > "$OUT/invoke.$r.log" 2>&1 || fail=1
    p50s "$OUT/invoke.$r.json" | awk '$3 == "invoke" { print $1, $2, $4 }' >> "$OUT/raw.txt" || true
    # rfx's write_imm ping-pong and the raw WRITE_WITH_IMM one, side by side.
    rm -f "$OUT/transport.$r.json"
    timeout 240 "$BIN/rfx-bench" transport --transport verbs --mode hot \
      --sizes 8,4k --iters "$ITERS" --warmup 300 --cpus 0,1 \
      --json "$OUT/transport.$r.json" > "$OUT/transport.$r.log" 2>&1 || fail=1
    p50s "$OUT/transport.$r.json" | awk '
      $3 == "rfx" { print "transport", $2, $4 }
      $3 == "raw" { print "write_imm", $2, $4 }' >> "$OUT/raw.txt" || true
    # Warm executors: both sides asleep between invocations, and a client
    # that busy-polls for its result while the executor sleeps (rFaaS's
    # warm mode).
    rm -f "$OUT/warm.$r.json" "$OUT/warm_exec.$r.json"
    timeout 240 "$BIN/rfx-bench" invoke --transport verbs --mode warm \
      --sizes 8 --iters "$ITERS" --warmup 300 --cpus 0,1 --lib "$lib" \
      --json "$OUT/warm.$r.json" > "$OUT/warm.$r.log" 2>&1 || fail=1
    p50s "$OUT/warm.$r.json" | awk '
      $1 == "noop" && $3 == "invoke" { print "warm", $2, $4 }
      $1 == "noop" && $3 == "transport_pingpong" { print "warm_rt", $2, $4 }' >> "$OUT/raw.txt" || true
    timeout 240 "$BIN/rfx-bench" invoke --transport verbs --mode hot --executor-mode warm \
      --sizes 8 --iters "$ITERS" --warmup 300 --cpus 0,1 --lib "$lib" \
      --json "$OUT/warm_exec.$r.json" > "$OUT/warm_exec.$r.log" 2>&1 || fail=1
    p50s "$OUT/warm_exec.$r.json" | awk '
      $1 == "noop" && $3 == "invoke" { print "warm_exec", $2, $4 }' >> "$OUT/raw.txt" || true
  done
  log "4/4 one-sided reads: rfx-bench transport --op read and ib_read_lat"
  for r in $(seq "$RUNS"); do
    for size in 8 4096 65536; do
      echo "ib_read_lat $size $(perf_lat ib_read_lat "$size" "$port")" >> "$OUT/raw.txt"
      port=$((port + 1))
    done
    echo "ib_read_lat 1048576 $(perf_lat ib_read_lat 1048576 "$port" "$BIG_ITERS")" >> "$OUT/raw.txt"
    port=$((port + 1))
    # hot: the server busy-polls its endpoint meanwhile; warm: it sleeps
    # (like ib_read_lat's passive side). The reader always spins.
    rm -f "$OUT/read.$r.small.json" "$OUT/read.$r.big.json"
    timeout 240 "$BIN/rfx-bench" transport --transport verbs --op read --mode hot,warm \
      --sizes 8,4k,64k --iters "$ITERS" --warmup 300 --cpus 0,1 \
      --json "$OUT/read.$r.small.json" > "$OUT/read.$r.small.log" 2>&1 || fail=1
    timeout 240 "$BIN/rfx-bench" transport --transport verbs --op read --mode hot,warm \
      --sizes 1m --iters "$BIG_ITERS" --warmup 30 --cpus 0,1 \
      --json "$OUT/read.$r.big.json" > "$OUT/read.$r.big.log" 2>&1 || fail=1
    for f in "$OUT/read.$r.small.json" "$OUT/read.$r.big.json"; do
      [ -s "$f" ] && read_p50s "$f" >> "$OUT/raw.txt"
    done
  done
  # A rendezvous's read of memory that is not registered: lend (register),
  # RDMA READ, end the loan, all timed, beside rfx's read of an exposed
  # region in the same run (what a collective would pay per large message).
  timeout 240 "$BIN/rfx-bench" transport --transport verbs --op read-lent --mode hot \
    --sizes 4k,64k,256k,1m,4m --iters "$BIG_ITERS" --warmup 30 --cpus 0,1 \
    --json "$OUT/read-lent.json" > "$OUT/read-lent.log" 2>&1 || fail=1
  cat "$OUT/invoke.1.log" "$OUT/transport.1.log" "$OUT/read.1.small.log" "$OUT/read.1.big.log" \
    "$OUT/read-lent.log" 2> /dev/null || true
  summarize > "$OUT/summary.txt" || fail=1
  cat "$OUT/summary.txt"
  echo "verbs-vm: guest part took $(( $(date +%s) - t0 )) s"
  return "$fail"
}

# Medians over the runs, and the table and JSON with the ratios.
summarize() {
  local m8 m4k w8 w4k t8 t4k n8 e4k
  med() { awk -v k="$1" -v s="$2" '$1 == k && $2 == s { print $3 }' "$OUT/raw.txt" | median; }
  m8=$(med ib_write_lat 8); m4k=$(med ib_write_lat 4096)
  w8=$(med write_imm 8); w4k=$(med write_imm 4096)
  t8=$(med transport 8); t4k=$(med transport 4096)
  n8=$(med noop 8); e4k=$(med echo 4096)
  local wb wr we
  wb=$(med warm 8); wr=$(med warm_rt 8); we=$(med warm_exec 8)
  # Reads: "key=median,..." per size, for awk.
  local rd="" k sz
  for k in ib_read_lat read_hot read_warm; do
    for sz in 8 4096 65536 1048576; do rd+="$k:$sz=$(med "$k" "$sz") "; done
  done
  awk -v m8="$m8" -v m4k="$m4k" -v w8="$w8" -v w4k="$w4k" -v t8="$t8" -v t4k="$t4k" -v n8="$n8" -v e4k="$e4k" \
      -v rd="$rd" -v big="$BIG_ITERS" -v wb="$wb" -v wr="$wr" -v we="$we" \
      -v runs="$RUNS" -v iters="$ITERS" -v json="$OUT/summary.json" '
    function r(a, b) { return (b > 0 && a > 0) ? a / b : -1 }
    function num(v) { return (v == "nan" || v == "") ? -1 : v }
    BEGIN {
      n = split(rd, kv, " ")
      for (i = 1; i <= n; i++) { split(kv[i], p, "="); R[p[1]] = num(p[2]) }
      ns = split("8 4096 65536 1048576", S, " ")
      rtt8 = 2 * m8; rtt4k = 2 * m4k
      printf "soft-RoCE (rxe0 in a qemu TCG VM), medians of %d runs x %d round trips, p50 us\n", runs, iters
      printf "baselines: raw WRITE_WITH_IMM ping-pong (the loop of ib_write_lat --write_with_imm,\n"
      printf "  in-repo: Debian 12 perftest 4.5 lacks the flag) and plain ib_write_lat (RDMA WRITE,\n"
      printf "  the receiver polls memory; RTT = 2 x t_typical)\n"
      printf "%-34s %10s %10s\n", "", "8 B", "4 KiB"
      printf "%-34s %10.2f %10.2f\n", "raw WRITE_WITH_IMM round trip", w8, w4k
      printf "%-34s %10.2f %10.2f\n", "ib_write_lat round trip (plain)", rtt8, rtt4k
      printf "%-34s %10.2f %10.2f\n", "rfx verbs write_imm round trip", t8, t4k
      printf "%-34s %10.2f %10.2f\n", "rfx invoke (noop 8 B, echo 4 KiB)", n8, e4k
      printf "%-34s %9.2fx %9.2fx\n", "transport / raw write_with_imm", r(t8, w8), r(t4k, w4k)
      printf "%-34s %9.2fx %9.2fx   (goal <= 1.2x)\n", "invoke / raw write_with_imm", r(n8, w8), r(e4k, w4k)
      printf "%-34s %9.2fx %9.2fx\n", "transport / plain ib_write_lat", r(t8, rtt8), r(t4k, rtt4k)
      printf "%-34s %9.2fx %9.2fx\n", "invoke / plain ib_write_lat", r(n8, rtt8), r(e4k, rtt4k)
      # One wake-up: what the warm round trip (both sides woken once) adds
      # to the hot one, halved.
      wake = (wr - t8) / 2
      printf "\nwarm executors, noop 8 B, p50 us: both asleep %.2f (warm write_imm round trip %.2f);\n", wb, wr
      printf "  client polls, executor asleep %.2f = %.2fx of hot + one wake-up (%.2f + %.2f; goal <= 1.5x)\n", we, r(we, n8 + wake), n8, wake
      printf "\none-sided reads, p50 us (ib_read_lat t_typical is a whole READ round trip;\n"
      printf "1 MiB: %d iterations; rfx server hot = busy polling, warm = asleep)\n", big
      printf "%-34s %10s %10s %10s %10s\n", "", "8 B", "4 KiB", "64 KiB", "1 MiB"
      split("ib_read_lat read_hot read_warm", K, " ")
      L["ib_read_lat"] = "ib_read_lat"; L["read_hot"] = "rfx verbs read (server hot)"
      L["read_warm"] = "rfx verbs read (server warm)"
      for (k = 1; k <= 3; k++) {
        printf "%-34s", L[K[k]]
        for (j = 1; j <= ns; j++) printf " %10.2f", R[K[k] ":" S[j]]
        printf "\n"
      }
      for (k = 2; k <= 3; k++) {
        printf "%-34s", (k == 2 ? "read hot / ib_read_lat" : "read warm / ib_read_lat")
        for (j = 1; j <= ns; j++) printf " %9.2fx", r(R[K[k] ":" S[j]], R["ib_read_lat:" S[j]])
        printf "\n"
      }
      printf "{\n  \"bench\": \"verbs-vm\",\n  \"device\": \"rxe0 (soft-RoCE, qemu TCG)\",\n" > json
      printf "  \"baseline\": \"raw WRITE_WITH_IMM ping-pong (ib_write_lat --write_with_imm loop, in-repo); plain ib_write_lat (perftest 4.5) rtt = 2 x t_typical\",\n" > json
      printf "  \"runs\": %d,\n  \"iters\": %d,\n", runs, iters > json
      printf "  \"p50_us\": {\"write_with_imm_rtt\": {\"8\": %s, \"4096\": %s},\n", w8, w4k > json
      printf "    \"ib_write_lat_rtt\": {\"8\": %s, \"4096\": %s},\n", rtt8, rtt4k > json
      printf "    \"transport\": {\"8\": %s, \"4096\": %s},\n", t8, t4k > json
      printf "    \"invoke\": {\"noop_8\": %s, \"echo_4096\": %s},\n", n8, e4k > json
      printf "    \"warm\": {\"noop_8_both_asleep\": %s, \"write_imm_rtt\": %s, \"noop_8_client_polls\": %s, \"ratio_to_hot_plus_wake\": %.3f},\n", wb, wr, we, r(we, n8 + wake) > json
      for (k = 1; k <= 3; k++) {
        printf "    \"%s\": {", K[k] > json
        for (j = 1; j <= ns; j++) printf "%s\"%s\": %s", (j > 1 ? ", " : ""), S[j], R[K[k] ":" S[j]] > json
        printf "}%s\n", (k < 3 ? "," : "},") > json
      }
      printf "  \"ratios\": {\"transport_8\": %.3f, \"transport_4096\": %.3f, \"invoke_8\": %.3f, \"invoke_4096\": %.3f,\n", r(t8, w8), r(t4k, w4k), r(n8, w8), r(e4k, w4k) > json
      printf "    \"transport_8_plain\": %.3f, \"transport_4096_plain\": %.3f, \"invoke_8_plain\": %.3f, \"invoke_4096_plain\": %.3f,\n", r(t8, rtt8), r(t4k, rtt4k), r(n8, rtt8), r(e4k, rtt4k) > json
      for (k = 2; k <= 3; k++) {
        for (j = 1; j <= ns; j++) {
          printf "    \"%s_%s\": %.3f%s", K[k], S[j], r(R[K[k] ":" S[j]], R["ib_read_lat:" S[j]]), (k == 3 && j == ns ? "},\n" : ",\n") > json
        }
      }
      printf "  \"read_baseline\": \"ib_read_lat (perftest 4.5), t_typical = whole READ round trip\",\n" > json
      printf "  \"read_big_iters\": %d,\n", big > json
      printf "  \"goal\": 1.2\n}\n" > json
    }'
}

#############################################################################
# On the host: build once, then one VM boot.
#############################################################################

host() {
  local t0 cbin dbin collbin lib
  t0=$(date +%s)
  cd "$ROOT"
  mkdir -p "$OUT"
  log "building with --features verbs (conformance tests, rfx, rfx-bench, example functions)"
  cbin=$(cargo test -p rfx-fabric --features verbs --test conformance --no-run --message-format=json 2> "$OUT/build-tests.log" |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  [ -x "$cbin" ] || { cat "$OUT/build-tests.log" >&2; echo "no conformance binary" >&2; return 1; }
  # The provider's own device tests (zero-copy writes from registered memory).
  dbin=$(cargo test -p rfx-fabric --features verbs --lib --no-run --message-format=json 2>> "$OUT/build-tests.log" |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  [ -x "$dbin" ] || { cat "$OUT/build-tests.log" >&2; echo "no fabric unit-test binary" >&2; return 1; }
  # Collectives between processes over verbs (large messages lent).
  collbin=$(cargo test -p rfx-collectives --features verbs --test collectives --no-run --message-format=json 2>> "$OUT/build-tests.log" |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  [ -x "$collbin" ] || { cat "$OUT/build-tests.log" >&2; echo "no collectives test binary" >&2; return 1; }
  # One invocation, so that both binaries share one feature set (one build);
  # RFX_RELEASE_FEATURES (e.g. `verbs,ofi`, set by scripts/test.sh) lets the
  # ofi checks reuse the same release build.
  local feats="" f
  for f in $(echo "${RFX_RELEASE_FEATURES:-verbs}" | tr , ' '); do feats+="rfx/$f,rfx-bench/$f,"; done
  # rfx-mpi in the same build: its libmpi_abi.so gets the same features.
  cargo build --release -p rfx -p rfx-bench -p rfx-mpi --features "${feats%,}"
  cargo build --release --quiet --manifest-path examples/functions/Cargo.toml \
    --target-dir target/examples-functions
  lib=$ROOT/target/examples-functions/release/librfx_example_functions.so
  [ -f "$lib" ] || { echo "no $lib" >&2; return 1; }
  rm -rf "$BIN" && mkdir -p "$BIN"
  cp "$cbin" "$BIN/conformance"
  cp "$dbin" "$BIN/fabric-unit"
  cp "$collbin" "$BIN/collectives"
  cp "$ROOT/target/release/rfx" "$ROOT/target/release/rfx-bench" "$lib" \
    "$ROOT/target/release/libmpi_abi.so" "$BIN/"
  if step mpi; then
    if [ "${RFX_TEST_SKIP_MPI:-0}" = 1 ] || [ "${RFX_SKIP_MPI:-0}" = 1 ]; then
      echo "mpi step skipped (RFX_TEST_SKIP_MPI=1)"
      STEPS=${STEPS//mpi/}
    else
      "$ROOT/scripts/osu-over.sh" build "$ROOT/target/osu-over"
    fi
  fi
  echo "built in $(( $(date +%s) - t0 )) s"
  log "booting the soft-RoCE VM"
  local rc=0
  RFX_RXE_TIMEOUT=${RFX_RXE_TIMEOUT:-1200} "$ROOT/soft-roce-setup/rxe-vm.sh" -v \
    --workdir "$ROOT" -- env RFX_VERBS_RUNS="$RUNS" RFX_VERBS_ITERS="$ITERS" \
    RFX_VERBS_STEPS="$STEPS" bash "$ROOT/scripts/verbs-vm.sh" --guest || rc=$?
  echo "verbs-vm: exit $rc after $(( $(date +%s) - t0 )) s; results in $OUT"
  return "$rc"
}

case ${1:-} in
  --guest) guest ;;
  *) host ;;
esac
