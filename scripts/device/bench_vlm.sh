#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device/test.sh built build-device/: vision encoding + prefill
# for one 336 px image at LLaVA-1.5-7B shapes and one 1024x1024 image at Qwen2.5-VL-7B shapes, random
# bf16 weights, vlm2mla beside transformers on the same card. JSON lines to $OUT/bench_vlm.jsonl.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bin=build-device/vlm2mla
: > "$out/bench_vlm.jsonl"
for spec in "configs/llava-1.5-7b.json 336x336" "configs/qwen2.5-vl-7b.json 1024x1024"; do
  set -- $spec
  "$bin" -q bench --random-weights "$1" --image "$2" --context 64 --batch 1 --new-tokens 8 \
    --warmup 2 --device cuda --dtype bfloat16 --json |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' | tee -a "$out/bench_vlm.jsonl"
  PYTHONUNBUFFERED=1 python3 scripts/bench_transformers_vlm.py --config "$1" --image "$2" --context 64 2>&1 |
    grep '^{' | tee -a "$out/bench_vlm.jsonl"
done
