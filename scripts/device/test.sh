#!/usr/bin/env bash
# Run ON THE GPU MACHINE (through the device tool, carrying .deps from scripts/device/prepare.sh):
# builds vlm2mla against the torch wheel's libtorch with CUDA and runs the whole test suite, the
# CUDA tests included. Logs go to $OUT (or ./device-out).
#
#   device run: bash scripts/device/test.sh          (carry: [".deps"])
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/device-out}"
mkdir -p "$out"
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
test -f .deps/ready || { echo "missing .deps: run scripts/device/prepare.sh here and carry .deps" >&2; exit 2; }
# Tokenizers off: the GPU machine has no PCRE2/utf8proc/SentencePiece (nor node for their parity).
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DVLM2MLA_TOKENIZER=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/prefix/usr" \
  -DVLM2MLA_GTEST_SOURCE="$root/.deps/prefix/usr/src/googletest" 2>&1 | tee "$out/configure.log" | tail -5
cmake --build build-device -j"$(nproc)" 2>&1 | tee "$out/build.log" | grep -E "error|warning: unused|FAILED" || true
test -x build-device/vlm2mla
(cd build-device && ctest --output-on-failure -j8 2>&1 | tee "$out/ctest.log" | tail -25)
# The CUDA parity tests print their measured bf16 errors:
build-device/tests/test_parity --gtest_filter='*Cuda*:*Fused*' 2>&1 | tee "$out/cuda_parity.log" | grep -E "bf16|OK|FAILED|PASSED"
