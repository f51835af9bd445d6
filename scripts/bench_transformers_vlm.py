#!/usr/bin/env python3
"""transformers' vision encoding + prefill for one image at real 7B shapes, random weights.

    python3 scripts/bench_transformers_vlm.py --config configs/llava-1.5-7b.json --image 336x336
    python3 scripts/bench_transformers_vlm.py --config configs/qwen2.5-vl-7b.json --image 1024x1024

Builds the model from the config on the GPU in bf16 (sdpa), makes the inputs `vlm2mla bench
--image` makes (same shapes: image tokens first, then --context text tokens), and times
get_image_features (vision) and one forward over the whole prompt with pixel values (vision +
prefill) after a warm-up. Prints one JSON line.
"""
import argparse
import json
import math
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForImageTextToText


def smart_resize(h, w, factor=28, min_pixels=3136, max_pixels=12845056):
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt((h * w) / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--context", type=int, default=64)
    args = ap.parse_args()
    h, w = (int(x) for x in args.image.split("x"))
    cfg = AutoConfig.from_pretrained(args.config)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=torch.bfloat16,
                                                        attn_implementation="sdpa").eval()
    text = torch.randint(0, 30000, (1, args.context), device="cuda")
    kw = {}
    if cfg.model_type == "qwen2_5_vl":
        rh, rw = smart_resize(h, w)
        gh, gw = rh // 14, rw // 14
        pv = torch.randn(gh * gw, 3 * 2 * 14 * 14, device="cuda", dtype=torch.bfloat16)
        grid = torch.tensor([[1, gh, gw]], device="cuda")
        n = gh * gw // 4
        ids = torch.cat([torch.tensor([[cfg.vision_start_token_id]], device="cuda"),
                         torch.full((1, n), cfg.image_token_id, device="cuda"),
                         torch.tensor([[cfg.vision_end_token_id]], device="cuda"), text], 1)
        kw = dict(pixel_values=pv, image_grid_thw=grid, mm_token_type_ids=(ids == cfg.image_token_id).long())
        vision = lambda: model.model.get_image_features(pixel_values=pv, image_grid_thw=grid)
    else:
        s = cfg.vision_config.image_size
        pv = torch.randn(1, 3, s, s, device="cuda", dtype=torch.bfloat16)
        n = (s // cfg.vision_config.patch_size) ** 2
        ids = torch.cat([torch.full((1, n), cfg.image_token_id, device="cuda"), text], 1)
        kw = dict(pixel_values=pv)
        vision = lambda: model.model.get_image_features(pixel_values=pv)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        vision_s = timed(vision)
        full_s = timed(lambda: model(input_ids=ids, attention_mask=mask, **kw, logits_to_keep=1))
    print(json.dumps({"impl": "transformers " + transformers.__version__, "config": args.config,
                      "image": args.image, "image_tokens": n, "context": ids.shape[1],
                      "vision_seconds": vision_s, "vision_plus_prefill_seconds": full_s,
                      "peak_memory_bytes": torch.cuda.max_memory_allocated()}))


if __name__ == "__main__":
    main()
