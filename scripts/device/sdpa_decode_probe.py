#!/usr/bin/env python3
"""Run ON THE GPU MACHINE (torch only): one-query GQA attention at Qwen2.5-VL-7B's heads (28 query heads over
4 kv heads, d 128, bf16) over a cache view with spare capacity (strided, as the model's), timed per call:
the reference formulation (grouped matmul, float32 softmax, matmul: what TextDecoder's GQA decode ran before
2026-11-29 afternoon) against torch's scaled_dot_product_attention with enable_gqa, by backend (flash, memory
efficient, cuDNN, torch's own choice), unmasked and with a [b, 1, 1, t] mask. Prints ms per call, the K+V bytes
read per second, and each fused result's max |difference| from the reference.

  python3 scripts/device/sdpa_decode_probe.py [b:t ...]     (default 64:32768 8:32768 1:4096 32:32768)
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def per_call_ms(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(reps):
        fn()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / reps


def main():
    shapes = [tuple(int(x) for x in a.split(":")) for a in sys.argv[1:]] or [(64, 32768), (8, 32768), (1, 4096), (32, 32768)]
    torch.manual_seed(0)
    h_q, h_kv, d, scale = 28, 4, 128, 128 ** -0.5
    for b, t in shapes:
        kc = torch.randn(b, h_kv, t + 256, d, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        k, v = kc[:, :, :t], vc[:, :, :t]  # strided: the capacity's row stride
        q = torch.randn(b, h_q, 1, d, device="cuda", dtype=torch.bfloat16)
        mask = torch.ones(b, 1, 1, t, dtype=torch.bool, device="cuda")
        mask[0, :, :, : t // 2] = False

        def reference():
            s = torch.matmul(q.reshape(b, h_kv, h_q // h_kv, d), k.transpose(2, 3)) * scale
            p = torch.softmax(s, -1, dtype=torch.float).to(q.dtype)
            return torch.matmul(p, v).reshape(b, h_q, 1, d)

        tb = 2 * k.numel() * 2 / 1e12  # K + V, TB
        want = reference()
        ms = per_call_ms(reference)
        print(f"b={b} t={t}: K+V {tb * 1e3:.2f} GB per call; reference {ms:.3f} ms ({tb / (ms * 1e-3):.2f} TB/s)")
        for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION), ("torch's choice", None)]:
            for masked in (False, True):
                def fused(backend=backend, masked=masked):
                    m = mask if masked else None
                    if backend is None:
                        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale, enable_gqa=True)
                    with sdpa_kernel([backend]):
                        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale, enable_gqa=True)
                label = f"{name}{' + mask' if masked else ''}"
                try:
                    got = fused()
                    err = "" if masked else f", max |diff| {(got.float() - want.float()).abs().max().item():.3g}"
                    ms = per_call_ms(fused)
                    print(f"    {label:22s} {ms:.3f} ms ({tb / (ms * 1e-3):.2f} TB/s){err}")
                except RuntimeError as ex:
                    print(f"    {label:22s} n/a: {str(ex).splitlines()[0][:90]}")
        del kc, vc


if __name__ == "__main__":
    main()
