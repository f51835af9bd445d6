#!/usr/bin/env bash
# Run ON THE GPU MACHINE (device tool; carry .deps): builds the kernel test, shows whether ptxas kept the wgmma
# kernel's MMAs asynchronous (a WARPGROUP.DEPBAR after every HGMMA means it serialized them) and its loops' static
# instruction mix (sass_loops.py, all instances in $out/wgmma_sass_loops.txt), runs the wgmma kernel's tests, then
# its bandwidth rows once per layout (producers:consumers, WGMMA_LAYOUTS, default "2:2 none:2": kAuto's two, 2p2c at
# one sequence and 0p2c from two; 1:2 and 1:3 too), then the warp-rows kernel's (its twin; kAuto's before session
# 37) at the same sizes. Logs go to $OUT (the bandwidth rows also to wgmma_bandwidth.txt: a call's output tail may
# not hold them all).
#
#   device run: bash scripts/device/wgmma.sh            (carry: [".deps"]; WGMMA_ONLY: bandwidth keys, see below;
#   WGMMA_SASS_FILTER: the instance whose loops are printed, default kernelILi2ELi0E, the 0p2c one)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash scripts/device/kernels.sh --build-only >"$out/wgmma_build.txt" 2>&1 || { tail -30 "$out/wgmma_build.txt"; exit 4; }
grep "configure + build" "$out/wgmma_build.txt"
bin=build-device/tests/test_kernels
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass build-device/libvlm2mla_cuda_sm90a.a >"$out/wgmma.sass" 2>&1
  echo "SASS: $(grep -c HGMMA "$out/wgmma.sass") HGMMA, $(grep -c 'WARPGROUP.DEPBAR' "$out/wgmma.sass") WARPGROUP.DEPBAR"
  # each instance's size, spills and largest loops with their opcode mix (the default layout's printed)
  python3 scripts/device/sass_loops.py "$out/wgmma.sass" --filter mla_decode_wgmma_kernel >"$out/wgmma_sass_loops.txt" 2>&1
  python3 scripts/device/sass_loops.py "$out/wgmma.sass" --filter "${WGMMA_SASS_FILTER:-kernelILi2ELi0E}" --loops 2 --top 8 2>&1 |
    cut -c1-160
fi
timeout 240 "$bin" --gtest_filter="${WGMMA_TESTS:-MlaDecodeCuda.Wgmma*:MlaDecodeOps.*}" 2>&1 | tee "$out/wgmma_test.log" |
  grep -E "^\[ *(FAILED|SKIPPED|PASSED) |^\[=|mla_decode wgmma|Failure|rel err" | head -40
# the bandwidth rows: the wgmma ones in each layout, then the warp-rows kernel's at the same sizes
for layout in ${WGMMA_LAYOUTS:-2:2 none:2}; do
  IFS=: read -r producers consumers <<< "$layout"
  VLM2MLA_DECODE_WGMMA_PRODUCERS=$producers VLM2MLA_DECODE_WGMMA_CONSUMERS=$consumers VLM2MLA_BANDWIDTH_ONLY=/wgmma/ \
    timeout 150 "$bin" --gtest_also_run_disabled_tests \
    --gtest_filter='*DISABLED_Bandwidth' 2>&1 | grep -E "^\[bandwidth\] int4|Failure" | tee -a "$out/wgmma_bandwidth.txt"
done
for k in ${WGMMA_ONLY:-/rows/}; do
  VLM2MLA_BANDWIDTH_ONLY=$k timeout 100 "$bin" --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_Bandwidth' 2>&1 |
    grep -E "^\[bandwidth\] int4|Failure" | grep -v ">=" | tee -a "$out/wgmma_bandwidth.txt"
done
