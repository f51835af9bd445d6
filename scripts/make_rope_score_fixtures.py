#!/usr/bin/env python3
"""Reference RoPE-pair scores (2-norm and MKL, METHOD.md section 3) computed with transformers.

Run where transformers is installed (the GPU device: torch 2.11, transformers 5.17), after the text
and VLM fixtures exist:
    python3 scripts/make_rope_score_fixtures.py [--fixtures tests/fixtures] [--copy-to DIR]

For each fixture (text/llama-mha, text/llama3-gqa, text/qwen2, vlm/llava, vlm/llava-next,
vlm/qwen2_5_vl) it loads model/ with transformers in float32 (CPU), runs inputs.safetensors through
the model's own forward (so positions are what that forward computes: 0..s-1 for 1-D RoPE, the
M-RoPE index from input_ids, image_grid_thw and mm_token_type_ids for Qwen2.5-VL) and captures per
decoder layer
  * q, k before RoPE: forward hooks on self_attn.q_proj / k_proj (biases included);
  * q, k after RoPE, exactly as transformers hands them to attention: the "sdpa" attention function
    is wrapped for the duration of the forward (k before repeat_kv, so [b, h_kv, s, d]).
From these it computes, in float64 and straight from the definitions (this does not follow
src/convert/rope_scores.cpp):
  two_norm[l, g, p] = sum_{h in group g} mean_t |q_h^(p)(t)| * mean_t |k_g^(p)(t)|
      pair p = dims (p, p + d/2) (rotate_half layout), means over real tokens (attention_mask == 1);
  mkl[l, g, p] = mean over modalities present of
      mean over queries i of that modality, mean over heads h in g of KL(P_i || P_i^(-p)),
      P_i = softmax over keys j <= i with attention_mask[j] == 1 of q_i . k_j * scaling (rotated),
      P_i^(-p) the same with dims p and p + d/2 set to zero in q and in k; padding queries dropped;
      image queries = input_ids == the model's image token id, text queries = the other real ones.
Writes <fixtures>/<family>/<name>/rope_scores.safetensors: two_norm, mkl float32
[layers, n_kv, head_dim/2], with metadata (versions, token counts, pair-norm check). With --copy-to
it also writes all of them into one tar there (the device tool returns few files).
"""
import argparse
import inspect
import io
import json
import os
import re
import tarfile

import torch
import transformers
from safetensors.torch import load_file, save_file

FIXTURES = [("text", "llama-mha"), ("text", "llama3-gqa"), ("text", "qwen2"),
            ("vlm", "llava"), ("vlm", "llava-next"), ("vlm", "qwen2_5_vl")]


def model_class(config):
    arch = config.architectures[0]
    return getattr(transformers, arch)


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def image_token_id(config):
    for key in ("image_token_id", "image_token_index"):
        v = getattr(config, key, None)
        if v is not None:
            return int(v)
    return None


def text_attention_modules(model, n_layers):
    """{attention module: layer index} for the language model's decoder layers."""
    found = {}
    for name, mod in model.named_modules():
        if not name.endswith("self_attn") or "vision" in name or "visual" in name:
            continue
        if not (hasattr(mod, "q_proj") and hasattr(mod, "k_proj")):
            continue
        m = re.search(r"layers\.(\d+)\.self_attn$", name)
        assert m, name
        found[mod] = int(m.group(1))
    assert sorted(found.values()) == list(range(n_layers)), (sorted(found.values()), n_layers)
    return found


class Capture:
    """Pre-RoPE q/k from projection hooks, rotated q/k from the attention function."""

    def __init__(self, model, n_layers):
        self.attn = text_attention_modules(model, n_layers)
        self.pre_q, self.pre_k, self.rot_q, self.rot_k, self.scaling = {}, {}, {}, {}, {}
        self.handles = []
        for mod, layer in self.attn.items():
            self.handles.append(mod.q_proj.register_forward_hook(self._hook(self.pre_q, layer)))
            self.handles.append(mod.k_proj.register_forward_hook(self._hook(self.pre_k, layer)))

    @staticmethod
    def _hook(store, layer):
        def fn(_module, _inputs, output):
            assert layer not in store, f"layer {layer} ran twice"
            store[layer] = output.detach().to(torch.float64).clone()  # [b, s, h * d]
        return fn

    def wrap(self, inner):
        def attention(module, query, key, value, attention_mask, *args, **kwargs):
            layer = self.attn.get(module)
            if layer is not None:
                assert layer not in self.rot_q, f"layer {layer} attended twice"
                self.rot_q[layer] = query.detach().to(torch.float64).clone()  # [b, h_q, s, d]
                self.rot_k[layer] = key.detach().to(torch.float64).clone()    # [b, h_kv, s, d]
                self.scaling[layer] = kwargs.get("scaling", getattr(module, "scaling", None))
            return inner(module, query, key, value, attention_mask, *args, **kwargs)
        return attention

    def close(self):
        for h in self.handles:
            h.remove()


def pair_view(x):
    """[..., d] -> [..., d/2, 2]: pair p holds dims p and p + d/2."""
    half = x.shape[-1] // 2
    return torch.stack([x[..., :half], x[..., half:]], dim=-1)


def two_norm_scores(pre_q, pre_k, valid, h_q, h_kv, d):
    b, s = valid.shape
    q = pair_view(pre_q.view(b, s, h_q, d)).norm(dim=-1)   # [b, s, h_q, d/2]
    k = pair_view(pre_k.view(b, s, h_kv, d)).norm(dim=-1)  # [b, s, h_kv, d/2]
    q_mean = q[valid].mean(0)  # [h_q, d/2] over the real tokens of every row
    k_mean = k[valid].mean(0)  # [h_kv, d/2]
    g = h_q // h_kv
    out = torch.zeros(h_kv, d // 2, dtype=torch.float64)
    for h in range(h_q):
        out[h // g] += q_mean[h] * k_mean[h // g]
    return out


def kl_per_query(q, k, allowed, scaling):
    """q [b, h_q, s, d], k [b, h_q, s, d] (already one per query head), allowed [b, s, s] ->
    KL(P || P^(-p)) [b, h_q, s, d/2] (rows with no allowed key give 0)."""
    d = q.shape[-1]
    half = d // 2
    neg = torch.tensor(float("-inf"), dtype=torch.float64)
    mask = allowed[:, None]  # [b, 1, s, s]

    def log_probs(qq, kk):
        logits = torch.einsum("bhid,bhjd->bhij", qq, kk) * scaling
        return torch.log_softmax(torch.where(mask, logits, neg), dim=-1)

    logp = log_probs(q, k)
    out = []
    for p in range(half):
        qz, kz = q.clone(), k.clone()
        for t in (qz, kz):
            t[..., p] = 0.0
            t[..., p + half] = 0.0
        logq = log_probs(qz, kz)
        term = torch.where(mask, logp.exp() * (logp - logq), torch.zeros((), dtype=torch.float64))
        out.append(term.sum(-1))
    return torch.stack(out, dim=-1)


def mkl_scores(rot_q, rot_k, valid, image, scaling):
    b, h_q, s, d = rot_q.shape
    h_kv = rot_k.shape[1]
    g = h_q // h_kv
    k = rot_k.repeat_interleave(g, dim=1)  # query head h reads kv head h // g (repeat_kv)
    causal = torch.tril(torch.ones(s, s, dtype=torch.bool))
    allowed = causal[None] & valid[:, None, :]  # [b, i, j]
    kl = kl_per_query(rot_q, k, allowed, scaling)            # [b, h_q, s, d/2]
    kl = kl.view(b, h_kv, g, s, d // 2).mean(2)              # [b, h_kv, s, d/2]
    kl = kl.permute(0, 2, 1, 3)                              # [b, s, h_kv, d/2]
    means = []
    for which in (valid & image, valid & ~image):
        if which.any():
            means.append(kl[which].mean(0))                  # [h_kv, d/2]
    assert torch.isfinite(torch.stack(means)).all()
    return sum(means) / len(means), int((valid & image).sum()), int((valid & ~image).sum())


def forward_kwargs(model, inputs):
    sig = inspect.signature(model.forward).parameters
    return {k: v for k, v in inputs.items() if k in sig}


def scores_for(fixture_dir):
    mdir = os.path.join(fixture_dir, "model")
    config = transformers.AutoConfig.from_pretrained(mdir)
    cls = model_class(config)
    model = cls.from_pretrained(mdir, dtype=torch.float32, attn_implementation="sdpa").eval()
    tc = text_config(model.config)
    n_layers, h_q, h_kv = tc.num_hidden_layers, tc.num_attention_heads, tc.num_key_value_heads
    d = getattr(tc, "head_dim", None) or tc.hidden_size // h_q
    inputs = load_file(os.path.join(fixture_dir, "inputs.safetensors"))
    ids, valid = inputs["input_ids"], inputs["attention_mask"].bool()
    tok = image_token_id(model.config)
    meta_path = os.path.join(fixture_dir, "meta.json")
    if os.path.exists(meta_path):  # the fixture generator recorded the token it placed
        with open(meta_path) as f:
            recorded = json.load(f).get("image_token_id")
        if recorded is not None:
            assert tok == recorded, f"config image token {tok} != meta.json {recorded}"
    image = ids == tok if tok is not None else torch.zeros_like(valid)
    assert tok is None or bool((image & valid).any()), "a VLM fixture without image tokens"

    cap = Capture(model, n_layers)
    # The attention modules look their function up by name on every call: override "sdpa" on the
    # shared registry instance (its local mapping wins over the class-wide one) for this forward.
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS as registry
    local = getattr(registry, "_local_mapping", None)
    if local is None:  # no per-instance layer: patch the class-wide mapping
        local = type(registry)._global_mapping
    previous = local.get("sdpa")
    inner = registry["sdpa"]
    local["sdpa"] = cap.wrap(inner)
    try:
        with torch.no_grad():
            model(**forward_kwargs(model, inputs))
    finally:
        if previous is None:
            del local["sdpa"]
        else:
            local["sdpa"] = previous
        cap.close()
    for store in (cap.pre_q, cap.pre_k, cap.rot_q, cap.rot_k):
        assert sorted(store) == list(range(n_layers)), ("layers captured", sorted(store))

    two_norm, mkl = [], []
    worst_pair_norm = 0.0
    counts = None
    for layer in range(n_layers):
        b, s = valid.shape
        rq, rk = cap.rot_q[layer], cap.rot_k[layer]
        if rk.shape[1] == h_q and h_q != h_kv:  # handed over already repeated per query head
            g = h_q // h_kv
            assert torch.equal(rk, rk[:, ::g].repeat_interleave(g, dim=1))
            rk = rk[:, ::g]
        assert rq.shape == (b, h_q, s, d) and rk.shape == (b, h_kv, s, d), (rq.shape, rk.shape)
        # RoPE rotates each pair (p, p + d/2) by one angle: pair norms before and after agree. This
        # ties the projection hooks to the attention capture and the pairing to transformers' RoPE.
        pre_q = cap.pre_q[layer].view(b, s, h_q, d).transpose(1, 2)
        pre_k = cap.pre_k[layer].view(b, s, h_kv, d).transpose(1, 2)
        for pre, rot in ((pre_q, rq), (pre_k, rk)):
            a, r = pair_view(pre).norm(dim=-1), pair_view(rot).norm(dim=-1)
            worst_pair_norm = max(worst_pair_norm, ((a - r).abs() / (a.abs() + 1e-6)).max().item())
        two_norm.append(two_norm_scores(cap.pre_q[layer], cap.pre_k[layer], valid, h_q, h_kv, d))
        scaling = cap.scaling[layer]
        assert scaling is not None
        m, n_img, n_txt = mkl_scores(rq, rk, valid, image, float(scaling))
        mkl.append(m)
        counts = (n_img, n_txt)
    assert worst_pair_norm < 1e-4, f"pair norms changed under RoPE by {worst_pair_norm}"
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "class": cls.__name__, "dtype": "float32 forward, float64 scores",
            "image_token_id": str(tok), "image_queries": str(counts[0]), "text_queries": str(counts[1]),
            "real_tokens": str(int(valid.sum())),
            "rope_pair_norm_max_rel_change": f"{worst_pair_norm:.3e}"}
    out = {"two_norm": torch.stack(two_norm).float().contiguous(),
           "mkl": torch.stack(mkl).float().contiguous()}
    return out, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    ap.add_argument("--copy-to", default=os.environ.get("OUT", ""))
    args = ap.parse_args()
    torch.manual_seed(0)
    written = []
    for family, name in FIXTURES:
        d = os.path.join(args.fixtures, family, name)
        try:
            out, meta = scores_for(d)
        except Exception:  # keep going: one fixture's failure must not hide the others
            import traceback
            traceback.print_exc()
            print("FAILED", family, name)
            continue
        path = os.path.join(d, "rope_scores.safetensors")
        save_file(out, path, metadata=meta)
        written.append((f"{family}/{name}/rope_scores.safetensors", path))
        print(family, name, json.dumps(meta))
        for key, t in out.items():
            print(f"  {key} {list(t.shape)} layer0 head0: {t[0, 0].tolist()}")
    if args.copy_to:
        os.makedirs(args.copy_to, exist_ok=True)
        with tarfile.open(os.path.join(args.copy_to, "rope_scores.tar"), "w") as tar:
            for arc, path in written:
                tar.add(path, arcname=arc)
    print(f"wrote {len(written)} of {len(FIXTURES)} rope_scores.safetensors")


if __name__ == "__main__":
    main()
