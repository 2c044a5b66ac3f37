#!/usr/bin/env bash
# The ofi (libfabric) transport on this host, no VM needed: libfabric's
# `tcp;ofi_rxm` and `shm` providers run on plain Linux.
#
#  1. installs libfabric-dev libfabric-bin libclang-dev pkg-config if missing
#     (apt-get update first; RFX_TEST_SKIP_APT=1 skips);
#  2. clippy (-D warnings) and the tests of libfabric-sys and of rfx-fabric
#     with --features ofi: the smoke test of the bindings, the unit tests and
#     the whole conformance suite (ofi on both providers, plus tcp and shm),
#     and collectives between processes over tcp;ofi_rxm (loans);
#  3. `rfx-bench transport --transport ofi` (release, busy polling, 8 B and
#     64 KiB) for each provider against libfabric's own `fi_pingpong` over
#     the same provider, in the same run, on the same CPUs: ratios printed,
#     JSON in target/ofi-bench-<provider>.json; then one-sided reads
#     (`--op read`, no raw baseline), JSON in target/ofi-bench-read-<provider>.json,
#     and reads of loans (`--op read-lent`, tcp only: shm does not lend);
#  4. MPI programs over ofi: OSU 7.4 with validation under `rfx --transport
#     ofi run`, each provider, 2 and 4 ranks (scripts/osu-over.sh).
#
#   scripts/ofi-test.sh
#   RFX_OFI_BENCH=0 scripts/ofi-test.sh         tests only
#   RFX_OFI_PROVIDERS="shm" scripts/ofi-test.sh providers benchmarked
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== ofi: %s\n' "$*"; }
start=$(date +%s)
export CARGO_TERM_COLOR=never

# --- packages ------------------------------------------------------------------
need=()
pkg-config --exists libfabric 2>/dev/null || need+=(libfabric-dev)
command -v fi_pingpong >/dev/null 2>&1 || need+=(libfabric-bin)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "${RFX_TEST_SKIP_APT:-0}" = 1 ]; then
        echo "ofi: missing ${need[*]} and RFX_TEST_SKIP_APT=1" >&2
        exit 1
    fi
    log "installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
pkg-config --modversion libfabric | sed 's/^/libfabric /'

# --- lint and tests ------------------------------------------------------------
log "clippy (libfabric-sys, rfx-fabric --features ofi)"
timeout 600 cargo clippy -p libfabric-sys -p rfx-fabric --all-targets --features rfx-fabric/ofi -- -D warnings

log "tests (libfabric-sys smoke, rfx-fabric unit + conformance with ofi)"
# The smoke test must run: bindings generated empty (no libfabric at build
# time) must not pass as a green run here.
smoke=$(timeout 300 cargo test -p libfabric-sys -- --nocapture 2>&1) \
    || { echo "$smoke"; exit 1; }
echo "$smoke" | grep -E "^libfabric runtime|^first match" || true
echo "$smoke" | grep -q "^libfabric runtime version" \
    || { echo "$smoke"; echo "ofi: libfabric-sys smoke test did not run" >&2; exit 1; }
if cargo nextest --version >/dev/null 2>&1; then
    timeout 600 cargo nextest run -p rfx-fabric --features ofi --no-fail-fast
else
    timeout 600 cargo test -p rfx-fabric --features ofi --no-fail-fast
fi
log "collectives between processes over ofi (tcp;ofi_rxm): large messages lent and read by fi_read"
timeout 600 cargo test -p rfx-collectives --features ofi --test collectives -- \
    --exact large_messages_are_lent_over_ofi

# --- benchmark against fi_pingpong ---------------------------------------------
if [ "${RFX_OFI_BENCH:-1}" != 0 ]; then
    # RFX_RELEASE_FEATURES (e.g. `verbs,ofi`, set by scripts/test.sh) shares
    # one release build with the verbs checks.
    feats=""
    for f in $(echo "${RFX_RELEASE_FEATURES:-ofi}" | tr , ' '); do feats+="rfx/$f,rfx-bench/$f,"; done
    log "building rfx, rfx-bench and libmpi_abi.so (release, --features ${feats%,})"
    timeout 900 cargo build -q --release -p rfx -p rfx-bench -p rfx-mpi --features "${feats%,}"
    for prov in ${RFX_OFI_PROVIDERS:-"tcp;ofi_rxm" shm}; do
        tag=${prov%%;*}
        log "benchmark: $prov, rfx write_imm round trip vs fi_pingpong (x = rfx p50 / fi_pingpong mean)"
        RFX_OFI_PROVIDER="$prov" timeout 300 ./target/release/rfx-bench transport \
            --transport ofi --mode hot --sizes 8,64k \
            --iters "${RFX_OFI_BENCH_ITERS:-5000}" --warmup 500 \
            --json "target/ofi-bench-$tag.json"
        log "benchmark: $prov, rfx one-sided read (fi_read into a staging buffer, then a copy)"
        RFX_OFI_PROVIDER="$prov" timeout 300 ./target/release/rfx-bench transport \
            --transport ofi --op read --mode hot --sizes 8,64k \
            --iters "${RFX_OFI_BENCH_ITERS:-5000}" --warmup 500 \
            --json "target/ofi-bench-read-$tag.json"
        if [ "$tag" != shm ]; then
            log "benchmark: $prov, a loan read: fi_mr_reg, fi_read into the reader's buffer, fi_close, all timed"
            RFX_OFI_PROVIDER="$prov" timeout 300 ./target/release/rfx-bench transport \
                --transport ofi --op read-lent --mode hot --sizes 64k,1m \
                --iters 500 --warmup 50 \
                --json "target/ofi-bench-read-lent-$tag.json"
        fi
    done
fi

# --- MPI programs over ofi ------------------------------------------------------
# OSU 7.4, unmodified, validation on, under `rfx --transport ofi run` with
# libmpi_abi.so built with ofi: the collectives over each libfabric provider
# (scripts/osu-over.sh; tests/mpi.rs runs the same set over shm). Needs
# MPICH's mpicc_abi to build OSU; RFX_TEST_SKIP_MPI=1 skips it.
if [ "${RFX_OFI_BENCH:-1}" != 0 ]; then
    if [ "${RFX_TEST_SKIP_MPI:-0}" = 1 ] || [ "${RFX_SKIP_MPI:-0}" = 1 ]; then
        log "MPI programs over ofi: skipped (RFX_TEST_SKIP_MPI=1)"
    else
        scripts/osu-over.sh build target/osu-over
        for prov in "tcp;ofi_rxm" shm; do
            log "MPI programs over ofi ($prov): OSU 7.4 with validation, 2 and 4 ranks"
            RFX_OFI_PROVIDER="$prov" RFX_OSU_OUT="target/osu-over-logs/${prov%%;*}" \
                scripts/osu-over.sh run ofi "$PWD/target/release/rfx" \
                "$PWD/target/release/libmpi_abi.so" target/osu-over
        done
    fi
fi

# --- across "hosts": network namespaces, tcp;ofi_rxm ------------------------------
# A lease manager and an executor manager in their own namespaces
# (scripts/cluster-netns.sh), a lease, and invocations forced over ofi from
# the root namespace: the ofi provider between hosts, end to end. Needs root;
# RFX_OFI_NETNS=0 skips it.
if [ "${RFX_OFI_BENCH:-1}" != 0 ] && [ "${RFX_OFI_NETNS:-1}" != 0 ] && [ "$(id -u)" -eq 0 ] \
    && scripts/cluster-netns.sh check >/dev/null 2>&1; then
    log "ofi across network namespaces (tcp;ofi_rxm): lease, invoke"
    (
        set -euo pipefail
        export RFX_NETNS_PREFIX=rfxofi RFX_NETNS_SUBNET=10.78.0 RFX_NETNS_STATE=/tmp/rfxofi-netns
        export RFX_BIN=$PWD/target/release/rfx RFX_OFI_PROVIDER="tcp;ofi_rxm"
        RFX_CLUSTER_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
        export RFX_CLUSTER_KEY
        trap 'scripts/cluster-netns.sh down >/dev/null 2>&1 || true' EXIT
        scripts/cluster-netns.sh start 1
        lm="$(scripts/cluster-netns.sh addr 0):7600"
        cargo build -q --release --manifest-path examples/functions/Cargo.toml \
            --target-dir target/examples-functions
        lib=$PWD/target/examples-functions/release/librfx_example_functions.so
        for _ in $(seq 100); do
            "$RFX_BIN" tenant add ofi --lease-manager "$lm" --json >/tmp/rfxofi-tenant.json 2>/dev/null && break
            sleep 0.1
        done
        RFX_TENANT_TOKEN=$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' /tmp/rfxofi-tenant.json)
        export RFX_TENANT_TOKEN
        id=""
        for _ in $(seq 100); do
            id=$("$RFX_BIN" lease create --cores 1 --lease-manager "$lm" --json 2>/dev/null \
                | sed -n 's/^ *"id": *\([0-9]*\).*/\1/p' | head -n 1) && [ -n "$id" ] && break
            sleep 0.1
        done
        [ -n "$id" ] || { echo "no lease granted"; exit 1; }
        for msg in hello-over-ofi "$(head -c 3000 /dev/zero | tr '\0' x)"; do
            out=$(printf '%s' "$msg" | timeout 60 "$RFX_BIN" --transport ofi invoke --lease "$id" \
                --lease-manager "$lm" --lib "$lib" --function echo --input -)
            [ "$out" = "$msg" ] || { echo "echo over ofi returned ${#out} bytes, sent ${#msg}"; exit 1; }
        done
        "$RFX_BIN" lease release "$id" --lease-manager "$lm" >/dev/null
        echo "ofi across namespaces: lease $id, echo over tcp;ofi_rxm ok"
    )
fi

log "done in $(( $(date +%s) - start )) s"
