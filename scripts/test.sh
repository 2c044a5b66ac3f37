#!/usr/bin/env bash
# Runs every check of rfx on a fresh Debian machine: installs what is
# missing, then fmt, clippy, all tests (nextest when present), doctests and
# a short smoke run of the transport benchmark. What CI runs (.ci/run).
#
#   scripts/test.sh            everything
#   RFX_TEST_SKIP_APT=1 ...    skip the apt step (offline machines)
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

log "all checks passed in $(( $(date +%s) - start )) s"
