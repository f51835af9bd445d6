#!/usr/bin/env bash
# The demo: builds vlm2mla if needed, then inspects a committed tiny Qwen2 checkpoint (made by
# transformers), computes its logits and generates greedily from a left-padded batch; runs a tiny
# Qwen2.5-VL; and converts it to MLA (MKL pairs, md SVD) and generates over the latent cache.
#
#   scripts/demo.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh >/dev/null
model=tests/fixtures/text/qwen2/model
inputs=tests/fixtures/text/qwen2/inputs.safetensors
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
set -x
./build/vlm2mla inspect --model "$model"
./build/vlm2mla logits --model "$model" --inputs "$inputs" --out "$out/logits.safetensors"
./build/vlm2mla generate --model "$model" --inputs tests/fixtures/text/qwen2/inputs_row1.safetensors \
  --max-new-tokens 16 --greedy
./build/vlm2mla generate --model "$model" --inputs "$inputs" --max-new-tokens 16 --greedy
./build/vlm2mla bench --model "$model" --context 64 --batch 2 --new-tokens 16
# A vision-language model (tiny random Qwen2.5-VL made by transformers): two images in one row.
vlm=tests/fixtures/vlm/qwen2_5_vl
./build/vlm2mla inspect --model "$vlm/model"
./build/vlm2mla generate --model "$vlm/model" --inputs "$vlm/inputs.safetensors" --max-new-tokens 8 --greedy
# Image preprocessing exactly as transformers' Qwen2VLImageProcessor, on a committed test image.
./build/vlm2mla preprocess --model configs/preprocessor/tiny-qwen2-vl.json \
  --image tests/fixtures/images/images/gray_L_50x40.png --out "$out/pixels.safetensors"
# MHA2MLA-VLM conversion of the tiny Qwen2.5-VL: MKL RoPE pairs, modality-decoupled SVD (D = 4 per
# kv head), calibrated on the committed inputs; then generation over the int8 latent cache.
./build/vlm2mla convert --model "$vlm/model" --out "$out/mla" --rope-strategy mkl --rope-dims 8 --svd md \
  --kv-rank 4 --calib "$vlm/inputs.safetensors" --report "$out/report.json"
./build/vlm2mla inspect --model "$out/mla"
./build/vlm2mla generate --model "$out/mla" --inputs "$vlm/inputs.safetensors" --max-new-tokens 8 --greedy \
  --kv-cache int8 --kv-group 8 --kv-window 16
