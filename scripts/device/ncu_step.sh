#!/usr/bin/env bash
# Run ON THE GPU MACHINE after the vlm2mla target is built in build-device/ (e.g. by round.sh): Nsight Compute over
# chosen kernels of a model's decode steps (bench over a synthetic cache, static steps, the steps alone recorded:
# VLM2MLA_CUDA_PROFILE=1), where profile_kernel.sh profiles the decode kernel of the kernel benchmark instead.
# NCU_CASES: "variant:context:batch[:decode]" words as profile_decode.sh's (variant gqa or mla:D:CACHE; static steps
# unless a decode mode is named; default "mla:32:bf16:4096:1"); NCU_KERNELS: a regex of the kernels (default the
# decode kernels and their combine); NCU_LAUNCHES: how many matching launches (default 3: one layer's pure, main
# and combine launches); NCU_SECTIONS: ncu sections (default: speed of light, launch statistics, occupancy, warp
# states, scheduler).
# NCU_TAG names the outputs ($OUT/ncu_step_<case>[_<tag>].txt). With NCU_SOURCE=1 the first matching launch is
# also kept as a report and its source page summed by sass_mix.py (opcodes, and where the warps wait):
# $OUT/ncu_step_<case>[_<tag>]_mix.txt, the page with its CUDA lines in ..._cuda_sass.csv.gz. Prints each launch's
# kernel, grid, duration and issue figures.
#
#   device run: NCU_CASES="mla:32:int4:4096:1" bash scripts/device/ncu_step.sh
#               VLM2MLA_DECODE_MAX_TILES=1 NCU_TAG=max1 bash scripts/device/ncu_step.sh
set -uo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
ncu="$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)"
[[ -n "$ncu" ]] || { echo "ncu_step: no ncu on this machine" >&2; exit 2; }
[[ -x build-device/vlm2mla ]] || { echo "ncu_step: build build-device/vlm2mla first (round.sh builds it)" >&2; exit 3; }
sections=(${NCU_SECTIONS:-SpeedOfLight LaunchStats Occupancy WarpStateStats SchedulerStats})
sec_args=()
for s in "${sections[@]}"; do sec_args+=(--section "$s"); done
for c in ${NCU_CASES:-mla:32:bf16:4096:1}; do
  bench_case_args "$c" 3
  args=("${case_args[@]}")
  name="ncu_step_${c//:/_}${NCU_TAG:+_$NCU_TAG}"
  VLM2MLA_CUDA_PROFILE=1 timeout 300 "$ncu" --profile-from-start off "${sec_args[@]}" \
    --kernel-name regex:"${NCU_KERNELS:-mla_decode_(rows|tc|combine)}" --launch-count "${NCU_LAUNCHES:-3}" \
    build-device/vlm2mla -q bench "${args[@]}" > "$out/$name.txt" 2>&1
  echo "== $c${NCU_TAG:+ ($NCU_TAG)} (rc=$?)"
  figures="Duration|Grid Size|Elapsed Cycles|SM Active Cycles|Achieved Occupancy|Eligible Warps Per Scheduler"
  figures+="|Warp Cycles Per Issued Instruction"
  grep -E "^  [a-z].*\(.*\)x\(|^\s+($figures) " "$out/$name.txt" |
    sed -E 's/^  (void )?([A-Za-z0-9_:]+)[^ ]*.*\(([0-9]+, [0-9]+, [0-9]+)\)x.*/  \2 grid (\3)/'
  if [[ "${NCU_SOURCE:-0}" == 1 ]]; then
    VLM2MLA_CUDA_PROFILE=1 timeout 300 "$ncu" --profile-from-start off --section SourceCounters --section WarpStateStats \
      --import-source no -f -o "/tmp/$name" --kernel-name regex:"${NCU_KERNELS:-mla_decode_(rows|tc|combine)}" \
      --launch-count 1 build-device/vlm2mla -q bench "${args[@]}" > /dev/null 2>&1
    "$ncu" -i "/tmp/$name.ncu-rep" --page source --csv --print-source sass > "/tmp/${name}_sass.csv" 2>&1
    python3 "$here/sass_mix.py" "/tmp/${name}_sass.csv" --stalls 16 > "$out/${name}_mix.txt" 2>&1
    # the SASS with its CUDA lines beside it (-lineinfo), to read the hot addresses' source from
    "$ncu" -i "/tmp/$name.ncu-rep" --page source --csv --print-source cuda,sass 2>&1 | gzip > "$out/${name}_cuda_sass.csv.gz"
    head -40 "$out/${name}_mix.txt"
  fi
done
