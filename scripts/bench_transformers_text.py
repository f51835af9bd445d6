#!/usr/bin/env python3
"""transformers on the same checkpoint and shapes as `vlm2mla bench` (the outside reference).

    python3 scripts/bench_transformers_text.py --model DIR --shapes 512x1x128,2048x8x128

For each CONTEXTxBATCHxNEW: load time (once), prefill time (forward over the prompt with a cache),
decode ms per step (greedy generate with min_new_tokens=max_new_tokens, minus the prefill), bf16 on
CUDA, sdpa attention. Prints one JSON line per shape.
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--shapes", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").to("cuda").eval()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    for shape in args.shapes.split(","):
        ctx, batch, new = (int(x) for x in shape.split("x"))
        ids = torch.randint(0, vocab, (batch, ctx), device="cuda")
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
        with torch.no_grad():
            model.generate(ids[:, :64], max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
            torch.cuda.synchronize()
            prefill = time.perf_counter() - t
            torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
            torch.cuda.synchronize()
            total = time.perf_counter() - t
        decode = max(total - prefill, 1e-9)
        print(json.dumps({"impl": "transformers " + transformers.__version__, "device": "cuda",
                          "dtype": "bfloat16", "context": ctx, "batch": batch, "new_tokens": new,
                          "load_seconds": load_s, "prefill_seconds": prefill,
                          "prefill_tokens_per_s": batch * ctx / prefill,
                          "decode_ms_per_step": 1e3 * decode / (new - 1),
                          "decode_tokens_per_s": batch * (new - 1) / decode,
                          "peak_memory_bytes": torch.cuda.max_memory_allocated()}))


if __name__ == "__main__":
    main()
