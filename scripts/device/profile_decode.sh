#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device/test.sh built build-device/: where a decode step's GPU
# time goes, per kernel, with Nsight Systems, or Nsight Compute (kernel by kernel, serialised) where
# the machine has no nsys. The decode steps alone are recorded (VLM2MLA_CUDA_PROFILE=1 makes generate
# bracket them with cudaProfilerStart/Stop); the cache is synthetic (bench --synthetic-cache).
# PROFILE_CASES: "variant:context:batch:decode" list (variant gqa or mla:D:CACHE). Summaries go to
# $OUT/profile_<case>.txt (profile_<case>_<PROFILE_TAG>.txt with PROFILE_TAG set, to keep the runs of several
# settings apart; scripts/device/profile_diff.py puts two such summaries side by side). Prefer the static decode
# mode: with graph steps, nsys's per-node tracing stretched
# the kernels (2026-11-29: MLA bf16 b = 256 x 32k summed 51.9 ms of kernel time a step where the same kernels untraced
# take 43.2 ms a whole step), so their times are not comparable with the kernel benchmarks.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
nsys="$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)"
ncu="$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)"
if [[ -z "$nsys" && -z "$ncu" ]]; then echo "profile_decode: neither nsys nor ncu on this machine" >&2; exit 0; fi
# Kernel rows "name,total ns,launches" on stdin -> the summary.
summary() {
  python3 -c '
import sys
rows = [l.rsplit(",", 2) for l in sys.stdin.read().splitlines() if l.count(",") >= 2]
rows = [(n, float(t), int(c)) for n, t, c in rows]
total = sum(t for _, t, _ in rows)
print(f"total kernel time {total/1e6:.2f} ms over the decode steps, {sum(c for *_, c in rows)} launches")
for n, t, c in sorted(rows, key=lambda r: -r[1])[:25]:
    print(f"{t/1e6:9.3f} ms {c:7d}x  {n[:150]}")
'
}
for c in ${PROFILE_CASES:-gqa:32768:8:static mla:32:bf16:32768:8:static}; do
  bench_case_args "$c" "${PROFILE_TOKENS:-3}"
  args=("${case_args[@]}")
  name="${c//:/_}${PROFILE_TAG:+_$PROFILE_TAG}"
  if [[ -n "$nsys" ]]; then
    VLM2MLA_CUDA_PROFILE=1 "$nsys" profile --capture-range=cudaProfilerApi --capture-range-end=stop \
      --cuda-graph-trace=node -o "/tmp/prof_$name" --force-overwrite true \
      build-device/vlm2mla -q bench "${args[@]}" > "$out/profile_$name.txt" 2>&1
    "$nsys" stats --report cuda_gpu_kern_sum --format csv "/tmp/prof_$name.nsys-rep" 2>/dev/null |
      python3 -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin) if len(r) > 8]
head, body = rows[0], rows[1:]
t = head.index("Total Time (ns)"); n = head.index("Instances"); k = head.index("Name")
for r in body: print(f"{r[k].replace(",", ";")},{r[t]},{r[n]}")
' | summary >> "$out/profile_$name.txt"
  else
    VLM2MLA_CUDA_PROFILE=1 "$ncu" --profile-from-start off --metrics gpu__time_duration.sum --csv \
      --log-file "/tmp/prof_$name.csv" build-device/vlm2mla -q bench "${args[@]}" > "$out/profile_$name.txt" 2>&1
    python3 -c '
import csv, sys, collections
scale = {"ns": 1, "nsecond": 1, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6, "second": 1e9, "s": 1e9}
t, c = collections.Counter(), collections.Counter()
lines = [l for l in open(sys.argv[1]) if l.startswith("\"")]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum": continue
    k = r["Kernel Name"].replace(",", ";")
    t[k] += float(r["Metric Value"].replace(",", "")) * scale.get(r["Metric Unit"], 1)
    c[k] += 1
for k in t: print(f"{k},{t[k]},{c[k]}")
' "/tmp/prof_$name.csv" | summary >> "$out/profile_$name.txt"
  fi
done
