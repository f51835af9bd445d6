#!/usr/bin/env python3
"""Parity fixtures for the text decoders (Llama MHA, Llama-3 GQA with llama3 RoPE scaling, Qwen2).

Run where transformers is installed (the GPU device: torch 2.11, transformers 5.17):
    python3 scripts/make_text_fixtures.py --out tests/fixtures/text

For each tiny random model it writes <out>/<name>/:
  model/                  the checkpoint (config.json, generation_config.json, *.safetensors)
  inputs.safetensors      input_ids int64 [2,T] (row 1 left-padded), attention_mask int64 [2,T]
  inputs_row1.safetensors row 1 without its padding, [1, T-pad]
  expected.safetensors    logits float32 [2,T,V] (HF forward, float32, CPU; pad positions hold
                          whatever HF gives, compare only where attention_mask == 1),
                          logits_row1 [1,T-pad,V], generated int64 [2,T+16] (greedy, batched),
                          generated_row1 [1,T-pad+16], and, when CUDA is present,
                          logits_bf16_cuda float32 [2,T,V] (HF in bfloat16 on CUDA)
  meta.json               versions, the smallest top-1/top-2 logit margin over the greedy steps
Layouts: "llama-mha" and "qwen2" get config.json as published on the Hub (transformers 4.x keys:
rope_theta, rope_scaling, torch_dtype); "llama3-gqa" keeps what transformers 5 writes
(rope_parameters, dtype) and is sharded with model.safetensors.index.json.
"""
import argparse
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 320
T = 12
PAD = 3
NEW = 16

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
              initializer_range=0.25)

SPECS = {
    "llama-mha": dict(
        cls=(LlamaConfig, LlamaForCausalLM),
        cfg=dict(num_key_value_heads=4, rms_norm_eps=1e-5, tie_word_embeddings=False,
                 rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        hub_layout=True, weights_dtype=torch.float32, shard=False,
        # published spelling of the scaling block (old "type" key)
        hub_rope=dict(rope_theta=10000.0, rope_scaling={"type": "linear", "factor": 2.0})),
    "llama3-gqa": dict(
        cls=(LlamaConfig, LlamaForCausalLM),
        cfg=dict(num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
                 rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 64}),
        hub_layout=False, weights_dtype=torch.float32, shard=True),
    "qwen2": dict(
        cls=(Qwen2Config, Qwen2ForCausalLM),
        cfg=dict(num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                 use_sliding_window=False),
        hub_layout=True, weights_dtype=torch.bfloat16, shard=False,
        hub_rope=dict(rope_theta=1000000.0, rope_scaling=None)),
}


def hub_config(spec, cfg, arch, model_type):
    """config.json as the Hub publishes Llama/Qwen2 checkpoints (transformers 4.x keys)."""
    c = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": 0.02,
        "rms_norm_eps": cfg.rms_norm_eps,
        "use_cache": True,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16" if spec["weights_dtype"] == torch.bfloat16 else "float32",
        "transformers_version": "4.45.0",
        "attention_dropout": 0.0,
    }
    c.update(spec["hub_rope"])
    if model_type == "llama":
        c.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    else:
        c.update({"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2})
    return c


def make_inputs(gen):
    ids = torch.randint(3, VOCAB, (2, T), generator=gen)
    mask = torch.ones(2, T, dtype=torch.long)
    ids[1, :PAD] = 0  # pad id (any id works; it is masked)
    mask[1, :PAD] = 0
    return ids, mask


def greedy(model, ids, mask):
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                         output_logits=True, return_dict_in_generate=True,
                         min_new_tokens=0)
    margins = []
    for step_logits in out.logits:  # [B, V] per step
        top = step_logits.float().topk(2, dim=-1).values
        margins.append((top[:, 0] - top[:, 1]).min().item())
    return out.sequences, min(margins)


def build(name, spec, out_dir, seed):
    cfg_cls, model_cls = spec["cls"]
    cfg = cfg_cls(**COMMON, **spec["cfg"])
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    # Random norm weights too, so that a wrong RMSNorm placement shows.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            if n.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
        if spec["weights_dtype"] != torch.float32:  # the reference runs the rounded weights
            for p in model.parameters():
                p.copy_(p.to(spec["weights_dtype"]).float())

    d = os.path.join(out_dir, name)
    shutil.rmtree(d, ignore_errors=True)
    mdir = os.path.join(d, "model")
    os.makedirs(mdir)
    if spec["hub_layout"]:
        sd = {k: v.detach().to(spec["weights_dtype"]).contiguous() for k, v in model.state_dict().items()}
        if cfg.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        save_file(sd, os.path.join(mdir, "model.safetensors"), metadata={"format": "pt"})
        arch = model_cls.__name__
        with open(os.path.join(mdir, "config.json"), "w") as f:
            json.dump(hub_config(spec, cfg, arch, cfg.model_type), f, indent=2)
        with open(os.path.join(mdir, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.45.0"}, f, indent=2)
    else:
        model.save_pretrained(mdir, max_shard_size="120KB" if spec["shard"] else "10GB")

    # Reload through transformers from what we wrote: the reference is the checkpoint on disk.
    ref = model_cls.from_pretrained(mdir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    ids, mask = make_inputs(gen)
    row1 = ids[1:, PAD:].contiguous()
    with torch.no_grad():
        logits = ref(input_ids=ids, attention_mask=mask).logits.float()
        logits_row1 = ref(input_ids=row1).logits.float()
    generated, m1 = greedy(ref, ids, mask)
    generated_row1, m2 = greedy(ref, row1, torch.ones_like(row1))
    expected = {"logits": logits, "logits_row1": logits_row1, "generated": generated,
                "generated_row1": generated_row1}
    if torch.cuda.is_available():
        gpu = model_cls.from_pretrained(mdir, dtype=torch.bfloat16).to("cuda").eval()
        with torch.no_grad():
            expected["logits_bf16_cuda"] = gpu(input_ids=ids.cuda(), attention_mask=mask.cuda()).logits.float().cpu()
    save_file({"input_ids": ids, "attention_mask": mask}, os.path.join(d, "inputs.safetensors"))
    save_file({"input_ids": row1}, os.path.join(d, "inputs_row1.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(d, "expected.safetensors"))
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "seed": seed,
            "pad": PAD, "new_tokens": NEW, "greedy_min_margin": min(m1, m2),
            "hub_layout": spec["hub_layout"], "sharded": spec["shard"]}
    if "logits_bf16_cuda" in expected:
        valid = mask.bool()
        diff = (expected["logits_bf16_cuda"] - logits)[valid].abs()
        meta["hf_bf16_cuda_vs_fp32_max_abs"] = diff.max().item()
        meta["logits_fp32_max_abs"] = logits[valid].abs().max().item()
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(name, json.dumps(meta))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    for name, spec in SPECS.items():
        build(name, spec, args.out, args.seed)


if __name__ == "__main__":
    main()
