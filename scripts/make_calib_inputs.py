"""Writes random calibration inputs in the `logits` format for a Qwen2.5-VL config: N rows, each one
image (image_grid_thw from the image side) between vision_start/vision_end, then random text ids.
Used by scripts/device/bench_convert.sh (no tokenizer or dataset needed). Needs torch + safetensors."""
import argparse, json
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("--config", required=True)
p.add_argument("--samples", type=int, default=64)
p.add_argument("--image", type=int, default=448)
p.add_argument("--text", type=int, default=254)
p.add_argument("--out", required=True)
a = p.parse_args()
cfg = json.load(open(a.config))
v = cfg["vision_config"]
patch, merge, tp = v.get("patch_size", 14), v.get("spatial_merge_size", 2), v.get("temporal_patch_size", 2)
g = a.image // (patch * merge) * merge  # patches per side (the image is a multiple of 28)
tokens = g * g // (merge * merge)
ids = []
gen = torch.Generator().manual_seed(0)
for _ in range(a.samples):
    text = torch.randint(0, 30000, (a.text,), generator=gen)
    ids.append(torch.cat([torch.tensor([cfg["vision_start_token_id"]]),
                          torch.full((tokens,), cfg["image_token_id"]),
                          torch.tensor([cfg["vision_end_token_id"]]), text]))
input_ids = torch.stack(ids)
pixel_values = torch.randn(a.samples * g * g, 3 * tp * patch * patch, generator=gen)
grid = torch.tensor([[1, g, g]] * a.samples)
save_file({"input_ids": input_ids, "pixel_values": pixel_values, "image_grid_thw": grid}, a.out)
print(f"wrote {a.out}: {a.samples} rows of {input_ids.shape[1]} tokens ({tokens} image)")
