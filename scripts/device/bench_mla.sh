#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device/test.sh built build-device/: decode throughput of the
# Qwen2.5-VL-7B shapes (random bf16 weights, text prompts), the original GQA model against MLA
# conversions (random MLA weights, D latent dims per kv head, R = 32) with bf16 and int4 caches.
# JSON lines to $OUT/bench_mla.jsonl. BENCH_MLA_GRID overrides the "context:batch" list,
# BENCH_MLA_VARIANTS the variants ("gqa", "mla:D:CACHE"), BENCH_MLA_DECODE the decode modes (default
# "graph": static steps replayed as a CUDA graph; "dynamic" is the eager twin). BENCH_MLA_TOKENS: new
# tokens per run (default 32). BENCH_MLA_SYNTHETIC=1 times decode over a synthetic cache (random rows
# for the prompt, no prefill: bench --synthetic-cache), for long contexts of large batches.
# BENCH_MLA_IMAGE=HxW puts one random image of that size before each prompt's text (bench --image; with a
# synthetic cache its positions stay image tokens, which two-set models' decode reads apart).
# BENCH_MLA_OUT names the output file under $OUT (default bench_mla.jsonl); BENCH_MLA_BIN the binary (default
# build-device/vlm2mla; bandwidth_ab.sh: the baseline's). BENCH_MLA_CONFIG: another model's
# config (default configs/qwen2.5-vl-7b.json; e.g. configs/llava-1.5-7b.json, whose 32 kv heads give MLA D latent
# dims per head a latent of 32 D values).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bin="${BENCH_MLA_BIN:-build-device/vlm2mla}"
cfg="${BENCH_MLA_CONFIG:-configs/qwen2.5-vl-7b.json}"
grid="${BENCH_MLA_GRID:-4096:1 4096:8 4096:32 16384:8 32768:1 32768:8}"
jsonl="$out/${BENCH_MLA_OUT:-bench_mla.jsonl}"
: > "$jsonl"
for cb in $grid; do
  ctx="${cb%%:*}"; batch="${cb##*:}"
  for variant in ${BENCH_MLA_VARIANTS:-gqa mla:32:bf16 mla:32:int4 mla:64:bf16 mla:128:bf16}; do
  for decode in ${BENCH_MLA_DECODE:-graph}; do
    args=(--random-weights "$cfg" --context "$ctx" --batch "$batch" --new-tokens "${BENCH_MLA_TOKENS:-32}" --warmup 0
          --prefill-chunk 8192 --device cuda --dtype bfloat16 --decode "$decode" --json)
    [[ "${BENCH_MLA_SYNTHETIC:-0}" == 1 ]] && args+=(--synthetic-cache)
    [[ -n "${BENCH_MLA_IMAGE:-}" ]] && args+=(--image "$BENCH_MLA_IMAGE")
    if [[ "$variant" == mla:* ]]; then
      IFS=: read -r _ d cache <<< "$variant"
      args+=(--mla-kv-rank "$d" --mla-rope-dims 32 --kv-cache "$cache" --kv-group 32 --kv-window 128)
    fi
    line="$("$bin" -q bench "${args[@]}" 2>"$out/bench_mla_err.txt" |
            python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' 2>/dev/null)"
    if [[ -n "$line" ]]; then
      echo "{\"variant\": \"$variant\", \"decode\": \"$decode\", \"result\": $line}" | tee -a "$jsonl"
    else
      echo "{\"variant\": \"$variant\", \"decode\": \"$decode\", \"context\": $ctx, \"batch\": $batch, \"error\": $(tail -1 "$out/bench_mla_err.txt" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}" |
        tee -a "$jsonl"
    fi
  done
  done
done
