#!/usr/bin/env bash
# Runs every test: installs and builds as needed, syntax-checks the host code only a CUDA libtorch compiles
# (scripts/check_cuda_host.sh), fuzzes the safetensors header parser for a bounded time, then runs the ctest
# suite (unit, parity with the transformers fixtures, CLI bad input).
#
#   scripts/test.sh                 (FUZZ_SECONDS=60 by default; FUZZ_SECONDS=0 skips the fuzzer)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
bash scripts/check_cuda_host.sh
fuzz_seconds="${FUZZ_SECONDS:-60}"
if (( fuzz_seconds > 0 )); then
  bash scripts/fuzz.sh "$fuzz_seconds"
fi
cd build && ctest --output-on-failure -j"$(nproc)"
