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
# AB_OTHERS: further commits to time beside the two, each a folder made by `make_baseline.sh COMMIT .baseline-NAME`
# (carried too): built at once with the others (the cores shared), timed in turn after the tree in every round
# (bandwidth rows and grid), each in a table against the baseline of its own ($OUT/ab_bench_NAME.jsonl). Its tests
# are not run (AB_TESTS runs the tree's): put the branch with the tests to run in the working tree.
#
#   device run: AB_KEYS="/auto/1024/32 /auto/2048/32" AB_TESTS='*Wide*' bash scripts/device/bandwidth_ab.sh
#               AB_KEYS= AB_GRID="4096:1 16384:8" AB_CONFIG=configs/llava-1.5-7b.json \
#                 bash scripts/device/bandwidth_ab.sh
#               (here: make_baseline.sh main; make_baseline.sh s32-rows-3stage .baseline-stages; carry both)
#               AB_OTHERS=".baseline-stages" AB_KEYS= AB_GRID="32768:8 16384:8" bash scripts/device/bandwidth_ab.sh
set -uo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
die() { echo "bandwidth_ab: $*" >&2; exit 2; }
test -f .deps/ready || die "missing .deps: run scripts/device/prepare.sh here and carry it"
test -f .baseline/BASELINE_COMMIT ||
  die "missing .baseline: run scripts/device/make_baseline.sh COMMIT here and carry it"
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
others=()  # (folder, name) of each AB_OTHERS entry
for d in ${AB_OTHERS:-}; do
  d="${d%/}"
  [[ "$d" =~ ^\.baseline-[A-Za-z0-9_-]+$ && -f "$d/BASELINE_COMMIT" ]] ||
    die "AB_OTHERS: '$d' is not a folder made by make_baseline.sh COMMIT .baseline-NAME (carry it)"
  others+=("$d")
done
t0=$SECONDS
builds=$(( 2 + ${#others[@]} ))
jobs=$(( $(nproc) / builds > 1 ? $(nproc) / builds : 1 ))
targets=(test_kernels)
[[ -n "${AB_GRID:-}" ]] && targets+=(vlm2mla)
build() {  # source dir, build dir, log name
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVLM2MLA_TOKENIZER=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/prefix/usr" \
    -DVLM2MLA_GTEST_SOURCE="$root/.deps/prefix/usr/src/googletest" >"$out/ab_configure_$3.log" 2>&1 &&
    cmake --build "$2" --target "${targets[@]}" -j"$jobs" >"$out/ab_build_$3.log" 2>&1
}
build .baseline build-baseline baseline & pid=$!
other_pids=()
for d in "${others[@]}"; do
  build "$d" "build-${d#.baseline-}" "${d#.baseline-}" & other_pids+=($!)
done
build . build-device tree
rc_tree=$?
wait $pid
rc_base=$?
results=(tree:$rc_tree baseline:$rc_base)
for i in "${!others[@]}"; do
  wait "${other_pids[$i]}"
  results+=("${others[$i]#.baseline-}:$?")
done
for n in "${results[@]}"; do
  if [[ "${n#*:}" != 0 ]]; then
    echo "bandwidth_ab: the ${n%:*} build failed"
    grep -E "error|FAILED" "$out/ab_build_${n%:*}.log" | head -30
    exit 4
  fi
done
echo "built: $((SECONDS - t0)) s (baseline $(cut -c1-12 .baseline/BASELINE_COMMIT)$(for d in "${others[@]}"; do
  printf ', %s %s' "${d#.baseline-}" "$(cut -c1-12 "$d/BASELINE_COMMIT")"; done))"
if [[ -n "${AB_TESTS:-}" ]]; then
  timeout 400 build-device/tests/test_kernels --gtest_filter="$AB_TESTS" > "$out/ab_tests.log" 2>&1
  rc=$?
  grep -E "^\[ *(FAILED|PASSED) |Failure" "$out/ab_tests.log" | head -30
  [[ $rc -eq 0 ]] || { echo "bandwidth_ab: tests failed (rc=$rc): stopping"; exit 5; }
fi
# every build in turn within each round: the baseline, the tree, then AB_OTHERS' in their order
names=(baseline tree)
for d in "${others[@]}"; do names+=("${d#.baseline-}"); done
build_dir() {  # a name's build folder
  case "$1" in baseline) echo build-baseline ;; tree) echo build-device ;; *) echo "build-$1" ;; esac
}
keys=(${AB_KEYS-/auto/1024/32 /auto/2048/32})
for key in "${keys[@]}"; do
  kname="${key//[^A-Za-z0-9_]/_}"
  for which in "${names[@]}"; do
    VLM2MLA_BANDWIDTH_ONLY="$key" timeout 200 "$(build_dir "$which")/tests/test_kernels" --gtest_also_run_disabled_tests \
      --gtest_filter='*Bandwidth*' > "$out/ab_${which}_$kname.log" 2>&1 || echo "bandwidth_ab: $which $key: rc=$?"
  done
done
if [[ ${#keys[@]} -gt 0 ]]; then
  tables=()
  for which in "${names[@]}"; do
    logs=()
    for key in "${keys[@]}"; do logs+=("$out/ab_${which}_${key//[^A-Za-z0-9_]/_}.log"); done
    cat "${logs[@]}" > "$out/ab_$which.log"
    tables+=("$which=$out/ab_$which.log")
  done
  grep "device copy" "$out/ab_tree.log" | head -1
  python3 "$here/bandwidth_table.py" "${tables[@]}"
fi
if [[ -n "${AB_GRID:-}" ]]; then
  for which in "${names[@]}"; do : > "$out/ab_bench_$which.jsonl"; done
  for cb in $AB_GRID; do
    for which in "${names[@]}"; do
      BENCH_MLA_BIN="$(build_dir "$which")/vlm2mla" BENCH_MLA_GRID="$cb" \
        BENCH_MLA_VARIANTS="${AB_VARIANTS:-mla:32:bf16 mla:32:int4}" \
        BENCH_MLA_CONFIG="${AB_CONFIG:-configs/qwen2.5-vl-7b.json}" BENCH_MLA_TOKENS="${AB_TOKENS:-16}" \
        BENCH_MLA_SYNTHETIC=1 BENCH_MLA_OUT=ab_bench_one.jsonl bash "$here/bench_mla.sh" > /dev/null 2>&1
      cat "$out/ab_bench_one.jsonl" >> "$out/ab_bench_$which.jsonl"
    done
  done
  rm -f "$out/ab_bench_one.jsonl"
  for which in "${names[@]:1}"; do
    commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo 'the working tree')"
    [[ $which != tree ]] && commit="$(cut -c1-12 ".baseline-$which/BASELINE_COMMIT")"
    echo "== decode steps: $which ($commit) against the baseline ($(cut -c1-12 .baseline/BASELINE_COMMIT))"
    python3 "$here/round_table.py" "$out/ab_bench_$which.jsonl" --against "$out/ab_bench_baseline.jsonl"
  done
fi
echo "total: $((SECONDS - t0)) s"
