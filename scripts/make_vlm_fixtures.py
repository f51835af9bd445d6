#!/usr/bin/env python3
"""Parity fixtures for the vision-language models: LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL (tiny, random).

Run where transformers is installed (the GPU device: torch 2.11, transformers 5.17):
    python3 scripts/make_vlm_fixtures.py --out tests/fixtures/vlm

For each model <out>/<name>/ holds:
  model/                 checkpoint: "llava" and "qwen2_5_vl" in the published Hub layout (4.x keys:
                         language_model.model.*, vision_tower.*, multi_modal_projector.*, visual.*,
                         top-level text keys for Qwen); "llava-next" and "llava-layers" as
                         transformers 5 saves them (model.language_model.*, nested text_config)
  inputs.safetensors     input_ids [2,T] (row 1 left-padded), attention_mask, pixel_values, and
                         image_sizes (NeXT) / image_grid_thw + mm_token_type_ids (Qwen)
  expected.safetensors   logits float32 [2,T,V] (float32 CPU forward), generated [2,T+8] (greedy),
                         image_features (the projector / merger output, all images concatenated),
                         position_ids int64 [3,2,T] (Qwen: the M-RoPE positions transformers used),
                         logits_bf16_cuda when CUDA is present
  meta.json              versions, classes, token ids, min greedy margin, bf16 error
"""
import argparse
import inspect
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          LlavaNextConfig, LlavaNextForConditionalGeneration)

VOCAB = 320
NEW = 8
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
            pad_token_id=0, initializer_range=0.25, rms_norm_eps=1e-5)
CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            image_size=28, patch_size=7, projection_dim=16, hidden_act="quick_gelu",
            layer_norm_eps=1e-5, initializer_range=0.3)
IMAGE_TOKEN = 319


def randomize(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ("norm" in n or ".ln_" in n) and n.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif n.endswith("bias") or "norm" in n:
                p.copy_(0.2 * torch.randn_like(p))
            elif "embedding" in n or "newline" in n:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5 * 1.2)


def hub_state_dict_llava(model):
    """transformers 5 keys -> the published llava-hf layout."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.language_model."):
            k = "language_model.model." + k[len("model.language_model."):]
        elif k.startswith("lm_head."):
            k = "language_model." + k
        elif k.startswith("model.vision_tower."):  # published: vision_tower.vision_model.*
            k = "vision_tower.vision_model." + k[len("model.vision_tower."):]
        elif k.startswith("model."):
            k = k[len("model."):]
        out[k] = v.detach().contiguous()
    return out


def hub_state_dict_qwen(model):
    """transformers 5 keys -> the published Qwen2.5-VL layout (visual.*, model.layers.*, lm_head)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        elif k.startswith("model.visual."):
            k = k[len("model."):]
        out[k] = v.detach().contiguous()
    return out


def forward_kwargs(model, inputs):
    sig = inspect.signature(model.forward).parameters
    return {k: v for k, v in inputs.items() if k in sig}


def greedy(model, inputs):
    kw = forward_kwargs(model, inputs)
    out = model.generate(**kw, max_new_tokens=NEW, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    margins = []
    for step in out.logits:
        top = step.float().topk(2, dim=-1).values
        margins.append((top[:, 0] - top[:, 1]).min().item())
    return out.sequences, min(margins)


def finish(name, out_dir, model_cls, mdir, inputs, extra_meta, features_fn, positions_fn=None):
    ref = model_cls.from_pretrained(mdir, dtype=torch.float32).eval()
    d = os.path.join(out_dir, name)
    with torch.no_grad():
        logits = ref(**forward_kwargs(ref, inputs)).logits.float()
        feats = features_fn(ref)
    generated, margin = greedy(ref, inputs)
    expected = {"logits": logits, "generated": generated, "image_features": feats.float()}
    if positions_fn is not None:
        pos = positions_fn(ref)
        if pos is not None:
            expected["position_ids"] = pos
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "class": model_cls.__name__, "greedy_min_margin": margin,
            "forward_accepts": sorted(forward_kwargs(ref, inputs).keys())}
    meta.update(extra_meta)
    if torch.cuda.is_available():
        gpu = model_cls.from_pretrained(mdir, dtype=torch.bfloat16).to("cuda").eval()
        gin = {k: (v.to("cuda", torch.bfloat16) if v.is_floating_point() else v.to("cuda"))
               for k, v in inputs.items()}
        with torch.no_grad():
            expected["logits_bf16_cuda"] = gpu(**forward_kwargs(gpu, gin)).logits.float().cpu()
        valid = inputs["attention_mask"].bool()
        meta["hf_bf16_cuda_vs_fp32_max_abs"] = (expected["logits_bf16_cuda"] - logits)[valid].abs().max().item()
        meta["logits_fp32_max_abs"] = logits[valid].abs().max().item()
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(d, "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(name, json.dumps(meta))


def fresh_dir(out_dir, name):
    d = os.path.join(out_dir, name)
    shutil.rmtree(d, ignore_errors=True)
    mdir = os.path.join(d, "model")
    os.makedirs(mdir)
    return mdir


def text_ids(gen, n):
    return torch.randint(3, IMAGE_TOKEN - 20, (n,), generator=gen)


def build_rows(gen, segments_per_row, pad_row1, pad_id=0):
    """segments: list of ("text", n) or ("image", n_tokens) -> input_ids [2,T], attention_mask."""
    rows = []
    for segs in segments_per_row:
        parts = []
        for kind, n in segs:
            parts.append(text_ids(gen, n) if kind == "text" else torch.full((n,), IMAGE_TOKEN))
        rows.append(torch.cat(parts))
    T = max(len(r) for r in rows)
    ids = torch.full((2, T), pad_id, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = r
        mask[i, T - len(r):] = 1
    assert mask[1].sum() < T or not pad_row1
    return ids, mask


# ---------------------------------------------------------------------------------------- LLaVA-1.5
def make_llava(out_dir, seed, name="llava", feature_layer=-2, strategy="default", hub=True):
    cfg = LlavaConfig(text_config=LlamaConfig(**TEXT, num_key_value_heads=4),
                      vision_config=CLIPVisionConfig(**CLIP), image_token_id=IMAGE_TOKEN,
                      vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy,
                      projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(cfg).eval()
    randomize(model, seed)
    mdir = fresh_dir(out_dir, name)
    if hub:
        save_file(hub_state_dict_llava(model), os.path.join(mdir, "model.safetensors"),
                  metadata={"format": "pt"})
        text = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "vocab_size": VOCAB,
                "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 4, "torch_dtype": "float32"}
        vision = {"model_type": "clip_vision_model", **{k: v for k, v in CLIP.items() if k != "initializer_range"}}
        conf = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
                "ignore_index": -100, "image_token_index": IMAGE_TOKEN, "pad_token_id": 0,
                "projector_hidden_act": "gelu", "text_config": text, "vision_config": vision,
                "vision_feature_layer": feature_layer,
                "vision_feature_select_strategy": strategy, "torch_dtype": "float32",
                "transformers_version": "4.45.0"}
        with open(os.path.join(mdir, "config.json"), "w") as f:
            json.dump(conf, f, indent=2)
        with open(os.path.join(mdir, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, f, indent=2)
    else:
        model.save_pretrained(mdir)
    gen = torch.Generator().manual_seed(seed + 1)
    n_img = (CLIP["image_size"] // CLIP["patch_size"]) ** 2 + (1 if strategy == "full" else 0)
    ids, mask = build_rows(gen, [[("text", 3), ("image", n_img), ("text", 6)],
                                 [("text", 2), ("image", n_img), ("text", 4)]], pad_row1=True)
    pixel_values = torch.randn(2, 3, CLIP["image_size"], CLIP["image_size"], generator=gen)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values}

    def feats(ref):
        f = ref.model.get_image_features(pixel_values=pixel_values,
                                         vision_feature_layer=feature_layer,
                                         vision_feature_select_strategy=strategy)
        f = getattr(f, "pooler_output", f)
        return torch.cat(list(f), 0) if isinstance(f, (list, tuple)) else f.reshape(-1, f.shape[-1])

    finish(name, out_dir, LlavaForConditionalGeneration, mdir, inputs,
           {"image_token_id": IMAGE_TOKEN, "hub_layout": hub, "image_tokens_per_image": n_img}, feats)


# ---------------------------------------------------------------------------------------- LLaVA-NeXT
def make_llava_next(out_dir, seed, name="llava-next"):
    pinpoints = [[28, 56], [56, 28], [56, 56]]
    cfg = LlavaNextConfig(text_config=LlamaConfig(**TEXT, num_key_value_heads=2,
                                                   rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
                          vision_config=CLIPVisionConfig(**CLIP), image_token_id=IMAGE_TOKEN,
                          image_grid_pinpoints=pinpoints, vision_feature_layer=-2,
                          vision_feature_select_strategy="default", projector_hidden_act="gelu")
    model = LlavaNextForConditionalGeneration(cfg).eval()
    randomize(model, seed)
    mdir = fresh_dir(out_dir, name)
    model.save_pretrained(mdir)
    ref = LlavaNextForConditionalGeneration.from_pretrained(mdir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    image_sizes = torch.tensor([[40, 70], [90, 30]], dtype=torch.long)  # (height, width)
    # patches per image: best resolution / 28 squared, + the base image
    pv = torch.randn(2, 5, 3, 28, 28, generator=gen)
    with torch.no_grad():
        f = ref.model.get_image_features(pixel_values=pv, image_sizes=image_sizes,
                                         vision_feature_layer=-2,
                                         vision_feature_select_strategy="default")
        f = getattr(f, "pooler_output", f)
        f = list(f)
        if f[0].dim() == 3:  # not packed yet
            f, lens = ref.model.pack_image_features(f, image_sizes, "default",
                                                    image_newline=ref.model.image_newline)
            counts = [int(x) for x in lens]
            packed = f
        else:
            counts = [x.shape[0] for x in f]
            packed = torch.cat(f, 0)
    print("llava-next image token counts", counts)
    ids, mask = build_rows(gen, [[("text", 3), ("image", counts[0]), ("text", 5)],
                                 [("text", 2), ("image", counts[1]), ("text", 3)]], pad_row1=True)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pv, "image_sizes": image_sizes}
    finish(name, out_dir, LlavaNextForConditionalGeneration, mdir, inputs,
           {"image_token_id": IMAGE_TOKEN, "hub_layout": False, "image_token_counts": counts,
            "image_grid_pinpoints": pinpoints}, lambda ref: packed)


# ---------------------------------------------------------------------------------------- Qwen2.5-VL
def make_qwen(out_dir, seed, name="qwen2_5_vl"):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    ids_cfg = dict(image_token_id=300, video_token_id=301, vision_start_token_id=302,
                   vision_end_token_id=303)
    vision = dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=4, in_channels=3,
                  out_hidden_size=64, patch_size=4, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=16, fullatt_block_indexes=[1, 3], tokens_per_second=2,
                  hidden_act="silu", initializer_range=0.3)
    text = dict(TEXT, num_key_value_heads=2, vocab_size=VOCAB,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": [2, 3, 3]})
    text.pop("pad_token_id")
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids_cfg, tie_word_embeddings=False)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    randomize(model, seed)
    mdir = fresh_dir(out_dir, name)
    save_file(hub_state_dict_qwen(model), os.path.join(mdir, "model.safetensors"), metadata={"format": "pt"})
    conf = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
            "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 160,
            "max_position_embeddings": 512, "max_window_layers": 2, "num_attention_heads": 4,
            "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "rope_theta": 1000000.0, "sliding_window": 512, "tie_word_embeddings": False,
            "torch_dtype": "float32", "transformers_version": "4.49.0", "use_cache": True,
            "use_sliding_window": False, "vocab_size": VOCAB,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "vision_config": {k: v for k, v in vision.items() if k != "initializer_range"},
            **ids_cfg}
    conf["vision_config"]["in_chans"] = 3
    conf["vision_config"]["spatial_patch_size"] = 4
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    with open(os.path.join(mdir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)

    gen = torch.Generator().manual_seed(seed + 1)
    grids = [[1, 8, 12], [1, 6, 4], [1, 4, 4]]  # (t, h, w) in patches; row 1 has two images
    counts = [t * h * w // 4 for t, h, w in grids]
    pixel_dim = 3 * 2 * 4 * 4
    pv = torch.randn(sum(t * h * w for t, h, w in grids), pixel_dim, generator=gen)
    S, E, P = 302, 303, 300
    def img(n):
        return [("vs", 1), ("image", n), ("ve", 1)]
    rows = [[("text", 3)] + img(counts[0]) + [("text", 5)],
            [("text", 2)] + img(counts[1]) + [("text", 2)] + img(counts[2]) + [("text", 3)]]
    seqs = []
    for segs in rows:
        parts = []
        for kind, n in segs:
            if kind == "text":
                parts.append(torch.randint(3, 290, (n,), generator=gen))
            else:
                parts.append(torch.full((n,), {"vs": S, "ve": E, "image": P}[kind]))
        seqs.append(torch.cat(parts))
    T = max(len(s) for s in seqs) + 2
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = s
        mask[i, T - len(s):] = 1
    mm = (ids == P).long()
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pv,
              "image_grid_thw": torch.tensor(grids, dtype=torch.long), "mm_token_type_ids": mm}

    def feats(ref):
        f = ref.model.get_image_features(pixel_values=pv, image_grid_thw=inputs["image_grid_thw"])
        f = getattr(f, "pooler_output", f)
        return torch.cat(list(f), 0) if isinstance(f, (list, tuple)) else f

    def positions(ref):
        fn = ref.model.get_rope_index
        params = inspect.signature(fn).parameters
        kw = {k: v for k, v in {"input_ids": ids, "image_grid_thw": inputs["image_grid_thw"],
                                "attention_mask": mask, "mm_token_type_ids": mm}.items() if k in params}
        print("get_rope_index params:", list(params))
        out = fn(**kw)
        return out[0] if isinstance(out, tuple) else out

    finish(name, out_dir, Qwen2_5_VLForConditionalGeneration, mdir, inputs,
           {"hub_layout": True, "image_token_counts": counts, **ids_cfg}, feats, positions)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    jobs = {"llava": lambda: make_llava(args.out, args.seed),
            "llava-layers": lambda: make_llava(args.out, args.seed + 7, name="llava-layers",
                                               feature_layer=[-3, -1], strategy="full", hub=False),
            "llava-next": lambda: make_llava_next(args.out, args.seed),
            "qwen2_5_vl": lambda: make_qwen(args.out, args.seed)}
    for name, job in jobs.items():
        if args.only and name not in args.only.split(","):
            continue
        try:
            job()
        except Exception as e:  # keep going: one family's failure must not hide the others
            import traceback
            traceback.print_exc()
            print("FAILED", name, repr(e))


if __name__ == "__main__":
    main()
