#!/usr/bin/env bash
# Runs every check of rfx on a fresh Debian machine: installs what is
# missing, then fmt, clippy, all tests (nextest when present), doctests and
# a short smoke run of the transport benchmark. What CI runs (.ci/run).
#
#   scripts/test.sh            everything
#   RFX_TEST_SKIP_APT=1 ...    skip the apt step (offline machines)
#   RFX_TEST_SKIP_VERBS=1 ...  skip the verbs section (soft-RoCE VM)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

# --- system packages -------------------------------------------------------
need_pkgs=()
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
if [ "${RFX_TEST_SKIP_APT:-0}" != 1 ] && [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

# --- rust toolchain pieces ---------------------------------------------------
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

log "doctests"
cargo test --workspace --doc

log "benchmark smoke run (correctness of the bench path, not figures)"
cargo run -q -p rfx-bench -- transport --sizes 8,64k --iters 200 --warmup 20 --json target/bench-smoke.json
test -s target/bench-smoke.json

# --- verbs (soft-RoCE VM) ---------------------------------------------------
# The verbs provider: clippy with the feature on the host, then the
# conformance suite, an end-to-end `rfx demo` and the benchmarks against
# ib_write_lat in one boot of a qemu VM with soft-RoCE (scripts/verbs-vm.sh,
# soft-roce-setup/). RFX_TEST_SKIP_VERBS=1 skips this section.
if [ "${RFX_TEST_SKIP_VERBS:-0}" != 1 ]; then
    verbs_pkgs=(qemu-system-x86 busybox-static kmod iproute2 rdma-core ibverbs-providers
        ibverbs-utils perftest libibverbs-dev librdmacm-dev libclang-dev pkg-config)
    if [ "${RFX_TEST_SKIP_APT:-0}" != 1 ]; then
        missing=()
        for p in "${verbs_pkgs[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            log "installing ${missing[*]} (verbs)"
            SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
            $SUDO apt-get update -q
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
        fi
    fi
    log "verbs: clippy --features verbs"
    cargo clippy -p rfx-fabric --all-targets --features verbs -- -D warnings
    log "verbs: unit tests (no device needed)"
    cargo test -p rfx-fabric --features verbs --lib -q verbs::
    log "verbs: conformance + end to end + benchmarks in the soft-RoCE VM"
    timeout 900 scripts/verbs-vm.sh
fi
# --- end verbs ---------------------------------------------------------------

log "all checks passed in $(( $(date +%s) - start )) s"
