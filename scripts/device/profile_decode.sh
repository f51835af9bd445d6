#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device/test.sh built build-device/: where a decode step's GPU
# time goes, per kernel, with Nsight Systems (when the machine has nsys). The decode steps alone are
# recorded (VLM2MLA_CUDA_PROFILE=1 makes generate bracket them with cudaProfilerStart/Stop).
# PROFILE_CASES: "variant:context:batch:decode" list (variant gqa or mla:D:CACHE). Summaries go to
# $OUT/profile_<case>.txt.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/device-out}"
mkdir -p "$out"
nsys="$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)"
if [[ -z "$nsys" ]]; then echo "profile_decode: no nsys on this machine" >&2; exit 0; fi
for c in ${PROFILE_CASES:-gqa:32768:8:static mla:32:bf16:32768:8:static}; do
  IFS=: read -r -a f <<< "$c"
  args=(--random-weights configs/qwen2.5-vl-7b.json --new-tokens 6 --warmup 0 --prefill-chunk 8192 --device cuda
        --dtype bfloat16)
  if [[ "${f[0]}" == mla ]]; then
    args+=(--mla-kv-rank "${f[1]}" --mla-rope-dims 32 --kv-cache "${f[2]}" --kv-group 32 --kv-window 128)
    f=("${f[@]:3}")
  else
    f=("${f[@]:1}")
  fi
  args+=(--context "${f[0]}" --batch "${f[1]}" --decode "${f[2]}")
  name="${c//:/_}"
  VLM2MLA_CUDA_PROFILE=1 "$nsys" profile --capture-range=cudaProfilerApi --capture-range-end=stop \
    --cuda-graph-trace=node -o "/tmp/prof_$name" --force-overwrite true \
    build-device/vlm2mla -q bench "${args[@]}" > "$out/profile_$name.txt" 2>&1
  "$nsys" stats --report cuda_gpu_kern_sum --format csv "/tmp/prof_$name.nsys-rep" 2>/dev/null |
    python3 -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin) if len(r) > 8]
head, body = rows[0], rows[1:]
t = head.index("Total Time (ns)"); n = head.index("Instances"); k = head.index("Name")
total = sum(float(r[t]) for r in body)
print(f"total kernel time {total/1e6:.2f} ms over the decode steps, {sum(int(r[n]) for r in body)} launches")
for r in sorted(body, key=lambda r: -float(r[t]))[:25]:
    print(f"{float(r[t])/1e6:9.3f} ms {int(r[n]):7d}x  {r[k][:150]}")
' >> "$out/profile_$name.txt"
done
