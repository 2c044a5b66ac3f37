#!/usr/bin/env bash
# Runs every check of rfx on a fresh Debian machine: installs what is
# missing, then fmt, clippy, all tests (nextest when present), doctests and
# a short smoke run of the transport benchmark. What CI runs (.ci/run).
#
#   scripts/test.sh            everything
#   RFX_TEST_SKIP_APT=1 ...    skip the apt step (offline machines)
#   RFX_TEST_SKIP_VERBS=1 ...  skip the verbs section (soft-RoCE VM)
#   RFX_TEST_SKIP_OFI=1 ...    skip the ofi section (libfabric)
#   RFX_TEST_SKIP_SLURM=1 ...  do not install Slurm (tests/slurm.rs then skips)
#   RFX_TEST_SKIP_CONTAINERS=1 no podman (tests/container.rs then skips)
#   RFX_TEST_SKIP_MPI=1 ...    no MPICH ABI toolchain (tests/mpi.rs then skips)
#   RFX_TEST_SKIP_PYTHON=1 ... skip the Python package (python/) and its tests
#   RFX_TEST_SKIP_PROMETHEUS=1 no prometheus/promtool (tests/metrics.rs then skips)
#   RFX_TEST_SKIP_PTXAS=1 ...  no ptxas from pip (device/tests/ptx.rs then skips)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

# --- system packages (one apt run for every section) --------------------------
want_pkgs=(build-essential pkg-config iproute2)
release_features=()
if [ "${RFX_TEST_SKIP_VERBS:-0}" != 1 ]; then
    want_pkgs+=(qemu-system-x86 busybox-static kmod rdma-core ibverbs-providers ibverbs-utils
        perftest libibverbs-dev librdmacm-dev libclang-dev)
    release_features+=(verbs)
fi
if [ "${RFX_TEST_SKIP_OFI:-0}" != 1 ]; then
    want_pkgs+=(libfabric-dev libfabric-bin libclang-dev)
    release_features+=(ofi)
fi
# rfx under a one-node Slurm (tests/slurm.rs): with the packages installed
# here, a Slurm that cannot start fails the run instead of skipping.
if [ "${RFX_TEST_SKIP_SLURM:-0}" != 1 ] && [ "$(id -u)" -eq 0 ]; then
    want_pkgs+=(slurmctld slurmd slurm-client munge)
    export RFX_REQUIRE_SLURM=1
fi
# Executors in containers (tests/container.rs): rootful podman with runc
# (crun refuses hybrid cgroups), and a static busybox for the test image.
if [ "${RFX_TEST_SKIP_CONTAINERS:-0}" != 1 ] && [ "$(id -u)" -eq 0 ]; then
    want_pkgs+=(podman runc uidmap busybox-static)
fi
# MPI programs built against the standard ABI (tests/mpi.rs): python3-venv for
# MPICH's ABI toolchain from PyPI (below).
if [ "${RFX_TEST_SKIP_MPI:-0}" != 1 ] || [ "${RFX_TEST_SKIP_PYTHON:-0}" != 1 ] \
    || [ "${RFX_TEST_SKIP_PTXAS:-0}" != 1 ]; then
    want_pkgs+=(python3-venv)
fi
# Prometheus metrics (tests/metrics.rs): promtool checks them, a real
# Prometheus scrapes them.
if [ "${RFX_TEST_SKIP_PROMETHEUS:-0}" != 1 ]; then
    want_pkgs+=(prometheus)
fi
# The Python host (python/host) embeds CPython: it links libpython.
if [ "${RFX_TEST_SKIP_PYTHON:-0}" != 1 ]; then
    want_pkgs+=(libpython3-dev)
fi
# The verbs and ofi checks share one release build with both features.
RFX_RELEASE_FEATURES=$(IFS=,; echo "${release_features[*]}")
export RFX_RELEASE_FEATURES
need_pkgs=()
for p in "${want_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs+=("$p")
done
if [ "${RFX_TEST_SKIP_APT:-0}" != 1 ] && [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
    # The tests run their own Prometheus; not the package's service.
    if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
        $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

# --- rust toolchain pieces ---------------------------------------------------
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# --- MPI standard ABI toolchain ----------------------------------------------
# MPICH 5.0.2's wheel brings mpicc_abi, mpi_abi.h, its own libmpi_abi.so.1 and
# mpiexec: tests/mpi.rs builds the C tests and OSU (../shared/third-party)
# with it and runs them on rfx and on MPICH.
if [ "${RFX_TEST_SKIP_MPI:-0}" != 1 ]; then
    log "MPICH's standard-ABI toolchain (pip, into target/mpi-venv)"
    [ -x target/mpi-venv/bin/pip ] || python3 -m venv target/mpi-venv
    target/mpi-venv/bin/pip install -q --disable-pip-version-check mpich==5.0.2
    export PATH="$PWD/target/mpi-venv/bin:$PATH"
else
    export RFX_SKIP_MPI=1
fi

# --- CUDA kernels -------------------------------------------------------------
# No GPU here: NVIDIA's ptxas (from the nvidia-cuda-nvcc-cu12 wheel) checks
# that the kernels' PTX assembles (device/tests/ptx.rs); the GPU itself is
# tested by scripts/gpu-test.sh on a GPU machine.
if [ "${RFX_TEST_SKIP_PTXAS:-0}" != 1 ]; then
    log "ptxas (pip, into target/cuda-venv)"
    [ -x target/cuda-venv/bin/pip ] || python3 -m venv target/cuda-venv
    target/cuda-venv/bin/pip install -q --disable-pip-version-check nvidia-cuda-nvcc-cu12==12.9.86
    RFX_PTXAS=$(find target/cuda-venv -path '*cuda_nvcc/bin/ptxas' | head -n 1)
    export RFX_PTXAS="$PWD/$RFX_PTXAS"
else
    export RFX_TEST_SKIP_PTXAS=1
fi

export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "crates by role: a tenant's build links neither the executor, the manager nor the lease manager"
cargo clippy -p rfx-executors --no-default-features --lib -- -D warnings
cargo clippy -p rfx-executors --no-default-features --features executor --lib -- -D warnings
cargo clippy -p rfx-leases --no-default-features --lib -- -D warnings
server_side=$(cargo tree -p rfx-executors --no-default-features -e normal --prefix none \
    | grep -E '^(redb|seccompiler|landlock|libloading|prometheus-client|tiny_http) ' || true)
if [ -n "$server_side" ]; then
    echo "rfx-executors without features still depends on: $server_side" >&2
    exit 1
fi

log "cuda feature without a GPU: clippy, and opening a GPU fails cleanly"
cargo clippy -p rfx-device -p rfx-collectives -p rfx-executors -p rfx-bench -p rfx --all-targets \
    --features cuda -- -D warnings
RFX_TEST_SKIP_CUDA=1 cargo test -q -p rfx-device --features cuda --test cuda
RFX_TEST_SKIP_CUDA=1 cargo test -q -p rfx-executors --features cuda --test gpu

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

# --- python ----------------------------------------------------------------
# The rfx Python package (python/: PyO3, an abi3 wheel built by maturin)
# into target/py-venv, and the executors' Python host (python/host, next
# to rfx in target/release), then their tests against a real LocalCluster
# and `rfx run -n N python3 ...`. RFX_TEST_SKIP_PYTHON=1 skips this section.
if [ "${RFX_TEST_SKIP_PYTHON:-0}" != 1 ]; then
    log "python: fmt, clippy, pip install ./python, the Python host, pytest"
    [ -x target/py-venv/bin/pip ] || python3 -m venv target/py-venv
    target/py-venv/bin/pip install -q --disable-pip-version-check "maturin>=1.7,<2" "pytest>=7" numpy
    export PYO3_PYTHON="$PWD/target/py-venv/bin/python"
    cargo fmt --manifest-path python/Cargo.toml -- --check
    CARGO_TARGET_DIR="$PWD/target" cargo clippy --manifest-path python/Cargo.toml --all-targets -- -D warnings
    cargo fmt --manifest-path python/host/Cargo.toml -- --check
    CARGO_TARGET_DIR="$PWD/target" cargo clippy --manifest-path python/host/Cargo.toml --all-targets -- -D warnings
    CARGO_TARGET_DIR="$PWD/target" target/py-venv/bin/pip install -q --disable-pip-version-check ./python
    cargo build -q --release --bin rfx
    CARGO_TARGET_DIR="$PWD/target" cargo build -q --release --manifest-path python/host/Cargo.toml
    (cd python/tests && RFX_BIN="$PWD/../../target/release/rfx" \
        timeout 900 ../../target/py-venv/bin/python -m pytest -q -p no:cacheprovider .)
fi
# --- end python --------------------------------------------------------------

# --- verbs (soft-RoCE VM) ---------------------------------------------------
# The verbs provider: clippy with the feature on the host, then the
# conformance suite, an end-to-end `rfx demo` and the benchmarks against
# ib_write_lat in one boot of a qemu VM with soft-RoCE (scripts/verbs-vm.sh,
# soft-roce-setup/). RFX_TEST_SKIP_VERBS=1 skips this section.
if [ "${RFX_TEST_SKIP_VERBS:-0}" != 1 ]; then
    log "verbs: clippy --features verbs"
    cargo clippy -p rfx-fabric --all-targets --features verbs -- -D warnings
    log "verbs: unit tests (no device needed)"
    cargo test -p rfx-fabric --features verbs --lib -q verbs::
    log "verbs: conformance + end to end + benchmarks in the soft-RoCE VM"
    timeout 1500 scripts/verbs-vm.sh
fi
# --- end verbs ---------------------------------------------------------------

# --- ofi (libfabric) ---------------------------------------------------------
# The ofi provider on the host (libfabric's tcp;ofi_rxm and shm need no
# VM): clippy and tests with --features ofi (conformance on both
# providers), then rfx-bench against fi_pingpong, same run, ratios printed,
# JSON in target/ofi-bench-*.json (scripts/ofi-test.sh, ~2-4 min).
# RFX_TEST_SKIP_OFI=1 skips this section.
if [ "${RFX_TEST_SKIP_OFI:-0}" != 1 ]; then
    log "ofi: clippy, tests and fi_pingpong comparison"
    timeout 900 scripts/ofi-test.sh
fi
# --- end ofi -----------------------------------------------------------------


log "all checks passed in $(( $(date +%s) - start )) s"
