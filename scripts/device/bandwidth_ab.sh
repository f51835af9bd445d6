#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool; carry [".deps", ".baseline"], .baseline from scripts/device/make_baseline.sh):
# the decode kernels' bandwidth rows of the working tree beside those of the baseline commit, in one call: both
# test_kernels built (at once, half the cores each), then for every key of AB_KEYS (VLM2MLA_BANDWIDTH_ONLY keys,
# space-separated; default the LLaVA-1.5 scores-first rows) the baseline's rows and this tree's, alternately, and
# one table of both (bandwidth_table.py: the last column is this tree's time over the baseline's). AB_TESTS, a
# gtest filter, first runs those tests of this tree (default none). AB_GRID ("context:batch" words) also builds
# both binaries and times decode steps (bench_mla.sh) of both, alternately per grid entry: AB_VARIANTS (default
# "mla:32:bf16 mla:32:int4"), AB_CONFIG (default configs/qwen2.5-vl-7b.json), AB_TOKENS (default 16), over a
# synthetic cache; one table with the baseline's median and the ratio (round_table.py --against). AB_KEYS= skips
# the bandwidth rows. Logs in $OUT/ab_*.log, steps in $OUT/ab_bench_{baseline,tree}.jsonl.
#
#   device run: AB_KEYS="/auto/1024/32 /auto/2048/32" AB_TESTS='*Wide*' bash scripts/device/bandwidth_ab.sh
#               AB_KEYS= AB_GRID="4096:1 16384:8" AB_CONFIG=configs/llava-1.5-7b.json \
#                 bash scripts/device/bandwidth_ab.sh
set -uo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
die() { echo "bandwidth_ab: $*" >&2; exit 2; }
test -f .deps/ready || die "missing .deps: run scripts/device/prepare.sh here and carry it"
test -f .baseline/BASELINE_COMMIT ||
  die "missing .baseline: run scripts/device/make_baseline.sh COMMIT here and carry it"
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
t0=$SECONDS
jobs=$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))
targets=(test_kernels)
[[ -n "${AB_GRID:-}" ]] && targets+=(vlm2mla)
build() {  # source dir, build dir, log name
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVLM2MLA_TOKENIZER=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/prefix/usr" \
    -DVLM2MLA_GTEST_SOURCE="$root/.deps/prefix/usr/src/googletest" >"$out/ab_configure_$3.log" 2>&1 &&
    cmake --build "$2" --target "${targets[@]}" -j"$jobs" >"$out/ab_build_$3.log" 2>&1
}
build .baseline build-baseline baseline & pid=$!
build . build-device tree
rc_tree=$?
wait $pid
rc_base=$?
for n in tree:$rc_tree baseline:$rc_base; do
  if [[ "${n#*:}" != 0 ]]; then
    echo "bandwidth_ab: the ${n%:*} build failed"
    grep -E "error|FAILED" "$out/ab_build_${n%:*}.log" | head -30
    exit 4
  fi
done
echo "both built: $((SECONDS - t0)) s (baseline $(cut -c1-12 .baseline/BASELINE_COMMIT))"
if [[ -n "${AB_TESTS:-}" ]]; then
  timeout 400 build-device/tests/test_kernels --gtest_filter="$AB_TESTS" > "$out/ab_tests.log" 2>&1
  rc=$?
  grep -E "^\[ *(FAILED|PASSED) |Failure" "$out/ab_tests.log" | head -30
  [[ $rc -eq 0 ]] || { echo "bandwidth_ab: tests failed (rc=$rc): stopping"; exit 5; }
fi
base_logs=() tree_logs=()
for key in ${AB_KEYS-/auto/1024/32 /auto/2048/32}; do
  name="${key//[^A-Za-z0-9_]/_}"
  for which in baseline tree; do
    bin=build-device/tests/test_kernels
    [[ $which == baseline ]] && bin=build-baseline/tests/test_kernels
    VLM2MLA_BANDWIDTH_ONLY="$key" timeout 200 "$bin" --gtest_also_run_disabled_tests --gtest_filter='*Bandwidth*' \
      > "$out/ab_${which}_$name.log" 2>&1 || echo "bandwidth_ab: $which $key: rc=$?"
  done
  base_logs+=("$out/ab_baseline_$name.log") tree_logs+=("$out/ab_tree_$name.log")
done
if [[ ${#tree_logs[@]} -gt 0 ]]; then
  cat "${base_logs[@]}" > "$out/ab_baseline.log"
  cat "${tree_logs[@]}" > "$out/ab_tree.log"
  grep "device copy" "$out/ab_tree.log" | head -1
  python3 "$here/bandwidth_table.py" "baseline=$out/ab_baseline.log" "tree=$out/ab_tree.log"
fi
if [[ -n "${AB_GRID:-}" ]]; then
  : > "$out/ab_bench_baseline.jsonl"
  : > "$out/ab_bench_tree.jsonl"
  for cb in $AB_GRID; do
    for which in baseline tree; do
      bin=build-device/vlm2mla
      [[ $which == baseline ]] && bin=build-baseline/vlm2mla
      BENCH_MLA_BIN="$bin" BENCH_MLA_GRID="$cb" BENCH_MLA_VARIANTS="${AB_VARIANTS:-mla:32:bf16 mla:32:int4}" \
        BENCH_MLA_CONFIG="${AB_CONFIG:-configs/qwen2.5-vl-7b.json}" BENCH_MLA_TOKENS="${AB_TOKENS:-16}" \
        BENCH_MLA_SYNTHETIC=1 BENCH_MLA_OUT=ab_bench_one.jsonl bash "$here/bench_mla.sh" > /dev/null 2>&1
      cat "$out/ab_bench_one.jsonl" >> "$out/ab_bench_$which.jsonl"
    done
  done
  rm -f "$out/ab_bench_one.jsonl"
  echo "== decode steps: this tree against the baseline ($(cut -c1-12 .baseline/BASELINE_COMMIT))"
  python3 "$here/round_table.py" "$out/ab_bench_tree.jsonl" --against "$out/ab_bench_baseline.jsonl"
fi
echo "total: $((SECONDS - t0)) s"
