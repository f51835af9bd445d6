#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool; carry .deps from scripts/device/prepare.sh): builds only the
# kernel test (tests/kernels) against the torch wheel's CUDA libtorch, then runs the CPU and CUDA kernel
# tests, the bandwidth benchmark and a compute-sanitizer pass over the small cases (MLA decode, RoPE).
# Logs go to $OUT.
#
#   device run: bash scripts/device/kernels.sh          (carry: [".deps"]; --build-only: just build)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
test -f .deps/ready || { echo "missing .deps: run scripts/device/prepare.sh here and carry .deps" >&2; exit 2; }
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
t0=$SECONDS
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DVLM2MLA_TOKENIZER=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/prefix/usr" \
  -DVLM2MLA_GTEST_SOURCE="$root/.deps/prefix/usr/src/googletest" >"$out/configure.log" 2>&1 \
  || { tail -40 "$out/configure.log"; exit 3; }
grep -E "vlm2mla:|CUDA" "$out/configure.log"
cmake --build build-device --target test_kernels -j"$(nproc)" >"$out/build.log" 2>&1 \
  || { grep -E "error|FAILED" "$out/build.log" | head -40; exit 4; }
echo "configure + build: $((SECONDS - t0)) s"
[[ "${1:-}" == --build-only ]] && exit 0
bin=build-device/tests/test_kernels
timeout 300 "$bin" 2>&1 | tee "$out/test.log" | grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) |mla_decode|Failure|rel err" | head -80
timeout 200 "$bin" --gtest_also_run_disabled_tests --gtest_filter='*Bandwidth*' 2>&1 | tee "$out/bench.log" | grep -E "bandwidth|FAILED|Failure"
if command -v compute-sanitizer >/dev/null; then
  timeout 200 compute-sanitizer --tool memcheck --print-limit 20 "$bin" --gtest_filter='*SmallCases*:FusedRopeCuda.EqualsTheLibtorchStepsBitForBit' \
    >"$out/memcheck.log" 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|Invalid|misaligned|out of bounds" "$out/memcheck.log" | head -20
fi
echo "total: $((SECONDS - t0)) s"
