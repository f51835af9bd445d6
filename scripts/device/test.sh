#!/usr/bin/env bash
# Run ON THE GPU MACHINE (through the device tool, carrying .deps from scripts/device/prepare.sh):
# builds vlm2mla against the torch wheel's libtorch with CUDA and runs the whole test suite, the
# CUDA and tokenizer tests included. Logs go to $OUT (or ./device-out).
#
#   device run: bash scripts/device/test.sh          (carry: [".deps"])
#
# Optional subsets: VLM2MLA_BUILD_TARGETS="vlm2mla test_cli" builds only those targets (default: all);
# VLM2MLA_CTEST_ARGS="-R ^Tokenizer" adds ctest arguments. The CUDA parity printout at the end runs
# only when test_parity was built.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
test -f .deps/ready || { echo "missing .deps: run scripts/device/prepare.sh here and carry .deps" >&2; exit 2; }
# The tokenizer's PCRE2, utf8proc and SentencePiece come from .deps, found through
# scripts/device/pkg-config (the carried pkgconf over .deps/prefix alone). CMake's build-tree RPATH
# (RUNPATH) points vlm2mla, the tests and the dlopen'd SentencePiece plugin (build-device/
# libvlm2mla_spm.so, found beside the binary) at .deps' shared objects: no LD_LIBRARY_PATH is needed,
# for the tests' discovery at build time nor for build-device/vlm2mla later (scripts/device/bench*.sh).
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/prefix/usr" \
  -DPKG_CONFIG_EXECUTABLE="$root/scripts/device/pkg-config" \
  -DVLM2MLA_GTEST_SOURCE="$root/.deps/prefix/usr/src/googletest" 2>&1 | tee "$out/configure.log" | tail -5
read -r -a targets <<< "${VLM2MLA_BUILD_TARGETS:-all}"
cmake --build build-device -j"$(nproc)" --target "${targets[@]}" 2>&1 | tee "$out/build.log" |
  grep -E "error|warning: unused|FAILED" || true
test -x build-device/vlm2mla
# The tokenizer parity tests compare against node (tests/tokenizer_parity, `npm ci`); the GPU machine
# has no node, and node_modules is git-ignored (not carried): they are skipped there (GTEST_SKIP,
# reported by ctest as skipped), not failed.
if ! command -v node >/dev/null 2>&1 || [[ ! -d tests/tokenizer_parity/node_modules ]]; then
  export VLM2MLA_SKIP_NODE_TESTS=1
fi
read -r -a ctest_args <<< "${VLM2MLA_CTEST_ARGS:-}"
(cd build-device && ctest --output-on-failure -j8 "${ctest_args[@]}" 2>&1 | tee "$out/ctest.log" | tail -25)
# The CUDA parity tests print their measured bf16 errors:
if [[ -x build-device/tests/test_parity ]]; then
  build-device/tests/test_parity --gtest_filter='*Cuda*:*Fused*' 2>&1 | tee "$out/cuda_parity.log" | grep -E "bf16|OK|FAILED|PASSED"
fi
