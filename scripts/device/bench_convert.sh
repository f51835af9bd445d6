#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device/test.sh built build-device/: converting a
# Qwen2.5-VL-7B-shape checkpoint (random bf16 weights) with 64 calibration samples (one 448x448
# image and 254 text tokens each: 512 tokens) to MLA: mkl pairs (R = 32), md SVD (D = 32).
# Times per stage and peak memory land in $OUT/convert_report.json.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bin=build-device/vlm2mla
work="${TMPDIR:-/tmp}/vlm2mla-convert-bench"
rm -rf "$work" && mkdir -p "$work"
t0=$(date +%s.%N)
"$bin" init-random --config configs/qwen2.5-vl-7b.json --out "$work/model" --dtype bfloat16 --device cuda
t1=$(date +%s.%N)
python3 scripts/make_calib_inputs.py --config configs/qwen2.5-vl-7b.json --samples 64 --image 448 \
  --text 254 --out "$work/calib.safetensors"
/usr/bin/time -v "$bin" convert --model "$work/model" --out "$work/mla" --rope-strategy mkl --rope-dims 32 \
  --svd md --kv-rank 32 --calib "$work/calib.safetensors" --device cuda --dtype float32 \
  --report "$out/convert_report.json" 2> >(tee "$out/convert_log.txt" >&2)
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" <<'PY'
import sys; t0, t1, t2 = map(float, sys.argv[1:])
print(f"init-random (write the 7B checkpoint): {t1 - t0:.1f} s; convert (load, calibrate, SVD, write): {t2 - t1:.1f} s")
PY
du -sh "$work/model" "$work/mla"
"$bin" inspect --model "$work/mla" | tail -3
rm -rf "$work"
