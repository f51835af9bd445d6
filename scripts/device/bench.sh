#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device/test.sh built build-device/: Qwen2-0.5B-shape random
# weights (configs/qwen2-0.5b.json, bf16 checkpoint written by `vlm2mla init-random`), load time and
# prefill/decode throughput on the GPU and its CPU, and transformers on the same card and shapes.
# Writes JSON lines to $OUT/bench.jsonl.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bin=build-device/vlm2mla
model=/tmp/vlm2mla-qwen2-0.5b
$bin init-random --config configs/qwen2-0.5b.json --out "$model" --dtype bfloat16
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
: > "$out/bench.jsonl"
run() { "$bin" -q bench --model "$model" --json "$@" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' | tee -a "$out/bench.jsonl"; }
for cfg in "512 1 128" "2048 1 128" "512 8 128" "2048 8 128"; do
  set -- $cfg
  run --device cuda --dtype bfloat16 --context "$1" --batch "$2" --new-tokens "$3"
done
for a in fused reference; do run --device cuda --dtype bfloat16 --attention $a --context 2048 --batch 8 --new-tokens 128; done
run --device cpu --dtype float32 --context 512 --batch 1 --new-tokens 32
PYTHONUNBUFFERED=1 python3 scripts/bench_transformers_text.py --model "$model" \
  --shapes "512x1x128,2048x1x128,512x8x128,2048x8x128" | tee -a "$out/bench.jsonl"
