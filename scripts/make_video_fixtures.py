#!/usr/bin/env python3
"""Parity fixture for Qwen2.5-VL video input: the tiny random Qwen2.5-VL of make_vlm_fixtures.py
(loaded from tests/fixtures/vlm/qwen2_5_vl/model, not copied) run by transformers on a batch that
mixes an image and two short videos given as frames.

Run where transformers is installed (the GPU device: torch 2.11, transformers 5.17); it needs no
network and no GPU:
    python3 scripts/make_video_fixtures.py --out tests/fixtures/vlm/qwen2_5_vl_video

<out>/ holds:
  frames/v<i>_f<j>.png       the frames of video i (RGB PNGs made here, deterministic): video 0 has
                             4 frames of 50x38 (resized to 48x40 by smart_resize, t = 2), video 1
                             has 3 frames of 30x30 (resized to 32x32, padded to 4 frames by repeating
                             the last, t = 2)
  image0.png                 the image (28x20 -> 32x16, grid 1x4x8)
  preprocessor_config.json   Qwen2VLImageProcessor, tiny (patch 4, merge 2, 64..1024 pixels)
  video_preprocessor_config.json  Qwen2VLVideoProcessor, tiny (patch 4, merge 2, 256..2048 pixels)
  inputs.safetensors         input_ids [2,T] (row 1 left-padded), attention_mask, mm_token_type_ids
                             (0 text, 1 image, 2 video), pixel_values, image_grid_thw (the image
                             processor's), pixel_values_videos, video_grid_thw (the video processor's,
                             both videos in one call, as Qwen2_5_VLProcessor makes it),
                             second_per_grid_ts float32 [2] (temporal_patch_size / sampled fps, as
                             Qwen2_5_VLProcessor._process_videos computes it: fps 0.5 -> 4.0 s, an
                             interval of 8 positions with tokens_per_second 2; fps 3 -> 0.667 s,
                             which transformers truncates to 0)
  expected.safetensors       logits float32 [2,T,V] (float32 CPU forward), generated [2,T+6]
                             (greedy), position_ids int64 [3,2,T] and rope_deltas [2,1]
                             (get_rope_index), video_features [video tokens, 64] (get_video_features)
  meta.json                  versions, classes, the model directory used, fps, frame files,
                             token ids, min greedy margin
Row 0: text, image, text, video 0 last (its <|vision_end|> ends the prompt): the video's temporal
positions (8 apart) outrun its spatial ones, so <|vision_end|> sits at 20 while the largest position
is 22. transformers' generate continues position_ids from the last one + 1 (21); rope_deltas
(max + 1 - valid tokens) would say 23, so the greedy tokens tell the two rules apart.
Row 1 (left-padded): text, video 1 (second_per_grid_t truncated to 0: one temporal position), text.
"""
import argparse
import inspect
import json
import math
import os
import random
import shutil

import torch
import transformers
from PIL import Image
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW = 6
IMAGE, VIDEO, VSTART, VEND = 300, 301, 302, 303
PATCH, MERGE, TEMPORAL = 4, 2, 2
IMAGE_CFG = {"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 64, "max_pixels": 1024,
             "patch_size": PATCH, "temporal_patch_size": TEMPORAL, "merge_size": MERGE,
             "image_mean": [0.48145466, 0.4578275, 0.40821073],
             "image_std": [0.26862954, 0.26130258, 0.27577711]}
VIDEO_CFG = {"video_processor_type": "Qwen2VLVideoProcessor",
             "size": {"shortest_edge": 256, "longest_edge": 2048},
             "patch_size": PATCH, "temporal_patch_size": TEMPORAL, "merge_size": MERGE,
             "image_mean": [0.48145466, 0.4578275, 0.40821073],
             "image_std": [0.26862954, 0.26130258, 0.27577711]}
# (frames, width, height, fps) per video
VIDEOS = [(4, 50, 38, 0.5), (3, 30, 30, 3.0)]


def frame(w, h, seed, shift):
    """Smooth gradients that move with `shift`, plus noise: resampling shows in every pixel."""
    rng = random.Random(seed)
    data = bytearray()
    for y in range(h):
        for x in range(w):
            base = (120 + 80 * math.sin(0.21 * (x + 3 * shift)) * math.cos(0.17 * y),
                    60 + 150 * (x / max(1, w - 1)) + 10 * shift,
                    200 - 150 * (y / max(1, h - 1)))
            for c in range(3):
                v = int(base[c] + rng.uniform(-20, 20))
                data.append(0 if v < 0 else 255 if v > 255 else v)
    return Image.frombytes("RGB", (w, h), bytes(data))


def forward_kwargs(model, inputs):
    sig = inspect.signature(model.forward).parameters
    return {k: v for k, v in inputs.items() if k in sig}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests/fixtures/vlm/qwen2_5_vl_video"))
    ap.add_argument("--model", default=os.path.join(REPO, "tests/fixtures/vlm/qwen2_5_vl/model"),
                    help="the tiny Qwen2.5-VL checkpoint (scripts/make_vlm_fixtures.py --only qwen2_5_vl)")
    ap.add_argument("--seed", type=int, default=2468)
    args = ap.parse_args()
    from transformers import (Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLVideoProcessor)
    from transformers.video_utils import VideoMetadata

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "frames"))
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(IMAGE_CFG, f, indent=2)
    with open(os.path.join(out, "video_preprocessor_config.json"), "w") as f:
        json.dump(VIDEO_CFG, f, indent=2)

    # Frames and image as files; the processors get them opened from the files, as a user passes them.
    frame_files = []
    for v, (n, w, h, _) in enumerate(VIDEOS):
        names = []
        for j in range(n):
            name = f"frames/v{v}_f{j}.png"
            frame(w, h, args.seed + 10 * v + j, j).save(os.path.join(out, name))
            names.append(name)
        frame_files.append(names)
    frame(28, 20, args.seed + 99, 0).save(os.path.join(out, "image0.png"))
    videos = [[Image.open(os.path.join(out, name)) for name in names] for names in frame_files]
    image = Image.open(os.path.join(out, "image0.png"))

    image_processor = Qwen2VLImageProcessor.from_pretrained(out)
    video_processor = Qwen2VLVideoProcessor.from_pretrained(out)
    print("image processor:", type(image_processor).__name__, "video processor:", type(video_processor).__name__)
    img = image_processor(images=[image], return_tensors="pt")
    vid = video_processor(videos=videos, return_tensors="pt")
    # Qwen2_5_VLProcessor._process_videos: temporal_patch_size / metadata.sampled_fps per video.
    sampled_fps = [VideoMetadata(total_num_frames=n, fps=fps).sampled_fps for n, _, _, fps in VIDEOS]
    second_per_grid_ts = torch.tensor([video_processor.temporal_patch_size / fps for fps in sampled_fps])
    print("image_grid_thw", img["image_grid_thw"].tolist(), "video_grid_thw", vid["video_grid_thw"].tolist(),
          "second_per_grid_ts", second_per_grid_ts.tolist())

    unit = MERGE * MERGE
    n_img = int(img["image_grid_thw"][0].prod()) // unit
    n_vid = [int(g.prod()) // unit for g in vid["video_grid_thw"]]
    gen = torch.Generator().manual_seed(args.seed)

    def text(n):
        return torch.randint(3, 290, (n,), generator=gen).tolist()

    def vision(token, n):
        return [VSTART] + [token] * n + [VEND]

    rows = [text(3) + vision(IMAGE, n_img) + text(4) + vision(VIDEO, n_vid[0]),
            text(2) + vision(VIDEO, n_vid[1]) + text(5)]
    T = max(len(r) for r in rows) + 1
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = 1
    mm = (ids == IMAGE).long() + 2 * (ids == VIDEO).long()  # what the processor's mm_token_type_ids say
    inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": mm,
              "pixel_values": img["pixel_values"], "image_grid_thw": img["image_grid_thw"],
              "pixel_values_videos": vid["pixel_values_videos"], "video_grid_thw": vid["video_grid_thw"],
              "second_per_grid_ts": second_per_grid_ts}

    ref = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = ref(**forward_kwargs(ref, inputs)).logits.float()
        position_ids, rope_deltas = ref.model.get_rope_index(
            ids, mm_token_type_ids=mm, image_grid_thw=inputs["image_grid_thw"],
            video_grid_thw=inputs["video_grid_thw"], second_per_grid_ts=second_per_grid_ts,
            attention_mask=mask)
        vf = ref.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        vf = getattr(vf, "pooler_output", vf)
        vf = torch.cat(list(vf), 0) if isinstance(vf, (list, tuple)) else vf
    ref.model.rope_deltas = None
    gen_out = ref.generate(**forward_kwargs(ref, inputs), max_new_tokens=NEW, do_sample=False,
                           output_logits=True, return_dict_in_generate=True)
    margin = min((s.float().topk(2, dim=-1).values[:, 0] - s.float().topk(2, dim=-1).values[:, 1]).min().item()
                 for s in gen_out.logits)
    expected = {"logits": logits, "generated": gen_out.sequences, "position_ids": position_ids,
                "rope_deltas": rope_deltas, "video_features": vf.float()}
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out, "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "class": type(ref).__name__, "model_dir": os.path.relpath(args.model, out),
            "image_processor": type(image_processor).__name__, "video_processor": type(video_processor).__name__,
            "fps": [fps for _, _, _, fps in VIDEOS], "sampled_fps": sampled_fps,
            "frames": frame_files, "image": "image0.png", "image_token_id": IMAGE, "video_token_id": VIDEO,
            "vision_start_token_id": VSTART, "vision_end_token_id": VEND,
            "image_token_counts": [n_img], "video_token_counts": n_vid, "greedy_min_margin": margin,
            "forward_accepts": sorted(forward_kwargs(ref, inputs).keys())}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)

    total = 0
    for root, _, files in os.walk(out):
        for name in sorted(files):
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            total += size
            print(f"wrote {os.path.relpath(path, out):40s} {size:8d} bytes")
    for k, v in {**inputs, **expected}.items():
        print(f"  {k:22s} {str(v.dtype):14s} {list(v.shape)}")
    print(f"total {total} bytes in {out}")
    print("position_ids row 0:", position_ids[:, 0].tolist())
    print("rope_deltas:", rope_deltas.flatten().tolist(), "greedy margin:", margin)


if __name__ == "__main__":
    main()
