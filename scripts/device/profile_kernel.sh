#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool; carry .deps): Nsight Compute over the decode kernel alone, one
# launch per configuration of the bandwidth test (tests/kernels, MlaDecodeCuda.DISABLED_Bandwidth).
# PROFILE_KEYS: space-separated VLM2MLA_BANDWIDTH_ONLY keys ("store/n_mod/mods/b/t/variant/r_kv/h_q", any part);
# PROFILE_KERNELS: a regex of the kernels profiled (default the split kernel alone; e.g.
# 'mla_(decode_(rows|tc|combine)|rope_scores)_kernel' for all of a call's kernels), PROFILE_LAUNCHES how many
# matching launches after the first four (default 1; 3 for the three kernels of one external-RoPE-scores call);
# PROFILE_SECTIONS: ncu sections (default: speed of light, warp states, scheduler, instructions, occupancy,
# memory, source counters). Reports go to $OUT/ncu_<key>.txt. Builds test_kernels first when missing.
# PROFILE_SOURCE=1 also keeps each report ($OUT/ncu_<key>.ncu-rep) and prints its source page as SASS with
# the executed instructions of every line ($OUT/ncu_sass_<key>.csv): where a kernel's instructions go;
# sass_mix.py sums them by opcode and address range and lists where the warps wait (stall reasons, the
# instructions drawing the most stall samples) in $OUT/ncu_sass_mix_<key>.txt. (ncu 2026.x's CSV of the
# source page as CUDA lines carries the file's text without the counters, 2026-11-29: not written.)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ncu="$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)"
[[ -n "$ncu" ]] || { echo "profile_kernel: no ncu on this machine" >&2; exit 2; }
bin=build-device/tests/test_kernels
if [[ ! -x "$bin" ]]; then
  bash "$(dirname "${BASH_SOURCE[0]}")/kernels.sh" --build-only || exit 3
fi
sections=(${PROFILE_SECTIONS:-SpeedOfLight WarpStateStats SchedulerStats InstructionStats Occupancy MemoryWorkloadAnalysis SourceCounters})
sec_args=()
for s in "${sections[@]}"; do sec_args+=(--section "$s"); done
for key in ${PROFILE_KEYS:-bf16/1/random/32/32768/auto/128 int4/1/random/32/32768/auto/128}; do
  name="${key//\//_}"
  # skip the warm-up launches: the second timed launch of the configuration's split kernel
  rep=()
  [[ "${PROFILE_SOURCE:-0}" == 1 ]] && rep=(-f -o "$out/ncu_$name")
  VLM2MLA_BANDWIDTH_ONLY="$key" timeout 300 "$ncu" "${sec_args[@]}" "${rep[@]}" \
    --kernel-name regex:"${PROFILE_KERNELS:-mla_decode_(rows|tc)_kernel}" --launch-skip 4 \
    --launch-count "${PROFILE_LAUNCHES:-1}" "$bin" \
    --gtest_also_run_disabled_tests --gtest_filter='*Bandwidth*' > "$out/ncu_$name.txt" 2>&1
  echo "== $key (rc=$?)"
  if [[ "${PROFILE_SOURCE:-0}" == 1 ]]; then
    "$ncu" -i "$out/ncu_$name.ncu-rep" --page details >> "$out/ncu_$name.txt" 2>&1
    "$ncu" -i "$out/ncu_$name.ncu-rep" --page source --csv --print-source sass > "$out/ncu_sass_$name.csv" 2>&1
    python3 "$(dirname "${BASH_SOURCE[0]}")/sass_mix.py" "$out/ncu_sass_$name.csv" --stalls 12 \
      > "$out/ncu_sass_mix_$name.txt" 2>&1
    head -12 "$out/ncu_sass_mix_$name.txt"
    tail -14 "$out/ncu_sass_mix_$name.txt"
  fi
  grep -E "^\s+(Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Registers Per Thread|Achieved Occupancy|Issue Slots Busy|No Eligible|Active Warps Per Scheduler|Eligible Warps Per Scheduler|Warp Cycles Per Issued Instruction|Executed Ipc Active|Executed Instructions  )" "$out/ncu_$name.txt" | head -$((20 * ${PROFILE_LAUNCHES:-1}))
  grep -iE "stall|est. speedup" "$out/ncu_$name.txt" | head -12
done
