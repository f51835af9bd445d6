#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool; carry .deps from scripts/device/prepare.sh): one device call's round of
# checks after a change, stopping at the first failure so that no device time goes to benchmarking a build
# that did not compile or a kernel that failed its tests:
#   1. scripts/device/kernels.sh --build-only, then the kernel tests (test_kernels; ROUND_KERNEL_FILTER, a
#      gtest filter, default all) and, with ROUND_BANDWIDTH=1, the kernels' bandwidth benchmark, once per
#      setting of ROUND_BANDWIDTH_ENV (VAR=VALUE words; a setting of several variables joins them with commas,
#      A=1,B=1) if given, side by side (bandwidth_table.py);
#   2. the model, parity and conversion targets, and their CUDA tests (ROUND_CTEST, a ctest regex, default
#      "Cuda|Fused|Switch|StaticDecode|MlaRuntime"; ROUND_CTEST= skips them);
#   3. the decode benchmark (scripts/device/bench_mla.sh) over ROUND_GRID ("context:batch", default
#      "4096:1 32768:8") and ROUND_VARIANTS (default "gqa mla:32:bf16 mla:32:int4"), once per setting of
#      ROUND_ENV (space-separated VAR=VALUE words, each run on its own, several variables joined by commas as
#      above; default: one run as the environment is; a setting given again runs again, its file suffixed _run2,
#      _run3, ...), with ROUND_TOKENS new tokens (default 16); ROUND_GRID=
#      skips it. bench_mla.sh's other variables pass through (BENCH_MLA_SYNTHETIC=1 for long contexts of large
#      batches, BENCH_MLA_DECODE, BENCH_MLA_IMAGE).
#   4. with ROUND_LARGEST ("variant:batch" words, e.g. "gqa:64 mla:32:bf16:256 mla:32:int4:768"): each variant at
#      its batch at ROUND_LARGEST_CONTEXT (default 32768) over a synthetic cache, ROUND_LARGEST_TOKENS new tokens
#      (default 16), one at a time (the largest batches that fit), with tokens/s against the first word's and the
#      peak memory; once per ROUND_ENV setting, as the grid (round_largest.jsonl, or round_largest_SETTING.jsonl).
# Steps at 32k varied by up to ~1.5x in their first ten or so while generate copied its [b, s] history every step
# (until 86ec205); since, their quartiles lie within ~3% of the median: give medians 32 or more tokens
# (ROUND_TOKENS) when comparing settings within a few percent.
# Cold, the defaults take ~5-6 minutes (builds ~2-3, tests ~3, each bench run ~1; measured 2026-11-29: 307-376 s),
# the largest batches ~20 s more: within one call's 600 s with one or two ROUND_ENV settings; narrow the grid
# or the tests (ROUND_KERNEL_FILTER, ROUND_CTEST) for more.
# Prints a table per run (round_table.py): median ms per step, the floor, their ratio, the kernel launches of
# a captured step, the decode kernels taken. Everything also lands in $OUT (0-all.tar.gz holds it all).
#
#   device run: ROUND_ENV="VLM2MLA_FUSED_CACHE_WRITE=0 VLM2MLA_FUSED_CACHE_WRITE=1" bash scripts/device/round.sh
#               ROUND_LARGEST="gqa:64 mla:32:bf16:256 mla:32:int4:768" bash scripts/device/round.sh
#               ROUND_GRID= ROUND_CTEST= ROUND_LARGEST="mla:32:int4:768" \
#                 ROUND_ENV="VLM2MLA_DECODE_COMBINE=block VLM2MLA_DECODE_COMBINE=warp" bash scripts/device/round.sh
set -uo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
t0=$SECONDS
bash "$here/kernels.sh" --build-only > "$out/round_build.log" 2>&1 || { tail -40 "$out/round_build.log"; exit 4; }
echo "kernels built: $((SECONDS - t0)) s"
bin=build-device/tests/test_kernels
timeout 400 "$bin" --gtest_filter="${ROUND_KERNEL_FILTER:-*}" > "$out/round_kernels.log" 2>&1
rc=$?
grep -E "^\[ *(FAILED|PASSED) |Failure" "$out/round_kernels.log" | head -30
[[ $rc -eq 0 ]] || { echo "kernel tests failed (rc=$rc): stopping"; exit 5; }
if [[ "${ROUND_BANDWIDTH:-0}" == 1 && -n "${ROUND_BANDWIDTH_ENV:-}" ]]; then
  logs=()
  for setting in $ROUND_BANDWIDTH_ENV; do
    log="round_bandwidth_${setting//[^A-Za-z0-9_]/_}.log"
    IFS=, read -r -a vars <<< "$setting"
    env "${vars[@]}" timeout 200 "$bin" --gtest_also_run_disabled_tests --gtest_filter='*Bandwidth*' > "$out/$log" 2>&1
    label=""
    for v in "${vars[@]}"; do label+="${label:+/}${v#*=}"; done
    logs+=("$label=$out/$log")
  done
  grep "device copy" "$out/$log"
  python3 "$here/bandwidth_table.py" "${logs[@]}"
elif [[ "${ROUND_BANDWIDTH:-0}" == 1 ]]; then
  timeout 200 "$bin" --gtest_also_run_disabled_tests --gtest_filter='*Bandwidth*' > "$out/round_bandwidth.log" 2>&1
  grep -E "bandwidth|gemv" "$out/round_bandwidth.log" | head -80
fi
echo "kernel tests: $((SECONDS - t0)) s"
if [[ -n "${ROUND_CTEST-Cuda|Fused|Switch|StaticDecode|MlaRuntime}" ]]; then
  cmake --build build-device --target vlm2mla test_convert test_parity test_model -j"$(nproc)" > "$out/round_build2.log" 2>&1 \
    || { grep -E "error|FAILED" "$out/round_build2.log" | head -30; exit 6; }
  (cd build-device && VLM2MLA_SKIP_NODE_TESTS=1 timeout 300 ctest -R "${ROUND_CTEST-Cuda|Fused|Switch|StaticDecode|MlaRuntime}" \
    -E "MlaDecodeCuda" -j8 --output-on-failure > "$out/round_ctest.log" 2>&1)
  rc=$?
  grep -E "tests passed|tests failed|\(Failed\)|\[fused|\[gemv" "$out/round_ctest.log" | head -30
  [[ $rc -eq 0 ]] || { echo "model tests failed (rc=$rc): stopping"; exit 7; }
  echo "model tests: $((SECONDS - t0)) s"
else
  cmake --build build-device --target vlm2mla -j"$(nproc)" > "$out/round_build2.log" 2>&1 \
    || { grep -E "error|FAILED" "$out/round_build2.log" | head -30; exit 6; }
fi
read -r -a settings <<< "${ROUND_ENV:-}"
[[ ${#settings[@]} -gt 0 ]] || settings=("")
[[ -n "${ROUND_GRID-4096:1 32768:8}" ]] || settings=()
# a setting's second and later runs (ROUND_ENV="A B A B") in files of their own: _run2, _run3, ...
declare -A runs_of=()
suffix=""
next_run() {  # sets suffix for a run of key $1
  runs_of["$1"]=$(( ${runs_of["$1"]:-0} + 1 ))
  suffix=""
  if (( runs_of["$1"] > 1 )); then suffix="_run${runs_of["$1"]}"; fi
}
for setting in "${settings[@]}"; do
  name="${setting:-as-is}"
  next_run "bench $name"
  file="round_bench_${name//[^A-Za-z0-9_]/_}${suffix}.jsonl"
  IFS=, read -r -a vars <<< "$setting"
  env "${vars[@]}" BENCH_MLA_GRID="${ROUND_GRID-4096:1 32768:8}" \
    BENCH_MLA_VARIANTS="${ROUND_VARIANTS:-gqa mla:32:bf16 mla:32:int4}" BENCH_MLA_TOKENS="${ROUND_TOKENS:-16}" \
    BENCH_MLA_OUT="$file" bash "$here/bench_mla.sh" > /dev/null 2>&1
  echo "== $name"
  python3 "$here/round_table.py" "$out/$file"
done
if [[ -n "${ROUND_LARGEST:-}" ]]; then
  # once per ROUND_ENV setting too (as the grid), each setting's runs in a file of their own
  read -r -a largest_settings <<< "${ROUND_ENV:-}"
  [[ ${#largest_settings[@]} -gt 0 ]] || largest_settings=("")
  for setting in "${largest_settings[@]}"; do
    name="${setting:-as-is}"
    next_run "largest $name"
    file="round_largest${setting:+_${name//[^A-Za-z0-9_]/_}}${suffix}.jsonl"
    IFS=, read -r -a vars <<< "$setting"
    : > "$out/$file"
    for vb in $ROUND_LARGEST; do
      env "${vars[@]}" BENCH_MLA_SYNTHETIC=1 BENCH_MLA_TOKENS="${ROUND_LARGEST_TOKENS:-16}" \
        BENCH_MLA_GRID="${ROUND_LARGEST_CONTEXT:-32768}:${vb##*:}" BENCH_MLA_VARIANTS="${vb%:*}" \
        BENCH_MLA_OUT=round_largest_one.jsonl bash "$here/bench_mla.sh" > /dev/null 2>&1
      cat "$out/round_largest_one.jsonl" >> "$out/$file"
    done
    rm -f "$out/round_largest_one.jsonl"
    echo "== largest batches ($name)"
    python3 "$here/round_table.py" --largest "$out/$file"
  done
fi
echo "total: $((SECONDS - t0)) s"
