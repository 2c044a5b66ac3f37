#!/usr/bin/env bash
# The GPU checks of rfx (docs/gpu.md): the CUDA backend's contract and
# kernels, device collectives with 2-4 ranks sharing one GPU, a device
# function (SAXPY) through the executor's staging, and the figures
# (`rfx-bench device --device cuda`). CI has no GPU: this runs on a machine
# with one NVIDIA GPU (an H100 or H200), in two phases, because that machine
# reaches no package registry:
#
#   scripts/gpu-test.sh build   here, with cargo: everything --features cuda,
#                               stripped into target/gpu/ (carry that folder)
#   scripts/gpu-test.sh run     on the GPU machine: runs target/gpu/*, writes
#                               the logs and device.json to ${OUT:-target/gpu/out}
#
# Each step is bounded; the whole run takes a few minutes. A step that fails
# fails the run (after the others ran).
set -uo pipefail
cd "$(dirname "$0")/.."
B=target/gpu

# The executable of test target $2 of package $1, built --release --features cuda.
test_exe() {
    cargo test --release -p "$1" --features cuda --test "$2" --no-run --message-format=json 2>/dev/null \
        | python3 -c '
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and j["target"]["name"] == sys.argv[1]:
        print(j["executable"])' "$2" | tail -n 1
}

case "${1:-}" in
build)
    set -e
    rm -rf "$B" && mkdir -p "$B"
    cargo build --release -p rfx-bench --features cuda
    cp target/release/rfx-bench "$B/"
    cargo test --release -p rfx-device --features cuda --test cuda --no-run
    cp "$(test_exe rfx-device cuda)" "$B/device-cuda"
    cargo test --release -p rfx-collectives --features cuda --test collectives --no-run
    cp "$(test_exe rfx-collectives collectives)" "$B/collectives"
    cargo test --release -p rfx-executors --features cuda --test gpu --no-run
    cp "$(test_exe rfx-executors gpu)" "$B/executor-gpu"
    cc -shared -fPIC -Wall -Werror -I examples/c examples/c/gpu_functions.c -o "$B/libgpu_functions.so"
    strip --strip-debug "$B"/*
    du -sh "$B"
    ;;
run)
    out=${OUT:-$B/out}
    mkdir -p "$out"
    fail=0
    step() {
        local name=$1 limit=$2
        shift 2
        echo "== $name"
        if ! timeout "$limit" "$@" > "$out/$name.txt" 2>&1; then
            echo "FAILED: $name (see $name.txt)"
            fail=1
        fi
        tail -n 25 "$out/$name.txt"
    }
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi"
    export RFX_TEST_EXPECT_GPU=1 RUST_BACKTRACE=1
    step device-tests 120 "$B/device-cuda" --test-threads 1
    step function-test 120 env RFX_GPU_FUNCTIONS_LIB="$B/libgpu_functions.so" "$B/executor-gpu"
    step collectives-test 240 env RFX_COLL_TEST_DEVICE=cuda \
        "$B/collectives" device_buffers_pipelined_through_pinned_slots --test-threads 1
    step bench 300 "$B/rfx-bench" device --device cuda --ranks 2,4 \
        --sizes 4k,64k,1m,16m,256m --kernel-sizes 1m,16m,256m --json "$out/device.json"
    exit $fail
    ;;
*)
    echo "usage: scripts/gpu-test.sh build|run" >&2
    exit 2
    ;;
esac
