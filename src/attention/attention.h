// Softmax attention for MHA and GQA: a plain reference (the slow twin and test oracle) and a fast path.
#pragma once

#include <ATen/ATen.h>

namespace vlm2mla {

enum class AttentionBackend {
  kReference,  // matmul + float32 softmax + matmul, GQA by grouping query heads; any libtorch
  kFused,      // at::scaled_dot_product_attention (libtorch >= 2.0), kv heads expanded to query heads
  kAuto,       // fused for prefill (s_q > 1); single-token decode: on CUDA with libtorch >= 2.5, SDPA reading
               // the kv heads in place (enable_gqa: no expanded copy; the attention 1.6x faster than the
               // reference at 32k on the H200, scripts/device/sdpa_decode_probe.py, whole steps 1.3-1.6x:
               // BENCHMARKS.md), else the reference (kFused's copy of the expanded K/V made it 5x slower)
};
const char* attention_backend_name(AttentionBackend backend);
// kAuto where this libtorch has fused attention, else kReference.
AttentionBackend default_attention_backend();

// q [b, h_q, s_q, d], k/v [b, h_kv, s_kv, d] with h_q % h_kv == 0; mask bool [b, 1, s_q, s_kv]
// (true = attend) or undefined (attend to all). Every query row must allow at least one key.
// Returns [b, h_q, s_q, d] in q's dtype.
at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& mask, double scale);
// `plain_causal`: the mask is exactly the causal mask of a square s_q == s_kv block (no padding, no
// cache), which the fused path then applies itself (flash kernels) instead of reading it.
// `sdpa_mask`: additive_mask(mask, q's dtype) where the caller made it once for several calls (a decode step's
// layers share one mask): the SDPA decode path reads it in mask's place (the values libtorch would make of mask,
// with a where and fills on every call); every other path reads mask.
at::Tensor attention(AttentionBackend backend, const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v, const at::Tensor& mask, double scale,
                     bool plain_causal = false, const at::Tensor& sdpa_mask = {});

// A bool mask (true = attend) as the additive mask libtorch's SDPA makes of it: 0 where true, -inf where false,
// in `dtype`.
at::Tensor additive_mask(const at::Tensor& keep, at::ScalarType dtype);
// Whether the decoder's steps make that mask once for their layers (sdpa_mask): on unless VLM2MLA_SDPA_MASK_ONCE=0
// (read once) or set_sdpa_mask_once(false), which leave the conversion to libtorch in every layer, its twin.
bool sdpa_mask_once_enabled();
void set_sdpa_mask_once(bool on);
// The additive mask a step's layers share (attention's sdpa_mask): made of `mask` into `made` the first time the SDPA
// decode path takes q (where sdpa_mask_once_enabled()), then `made` as it is; undefined until one is made.
const at::Tensor& shared_sdpa_mask(at::Tensor& made, const at::Tensor& mask, const at::Tensor& q);

// Whether kAuto's single-token decode steps on CUDA take SDPA with the kv heads in place (where this libtorch
// has enable_gqa): on unless VLM2MLA_DECODE_SDPA=0 (read once) or set_decode_sdpa(false), which keep the
// reference, its twin.
bool decode_sdpa_enabled();
void set_decode_sdpa(bool on);
// Whether attention(kAuto, ...) takes that path for these queries (CUDA, s_q == 1, enabled, libtorch >= 2.5).
bool decode_sdpa_taken(const at::Tensor& q);

// Causal mask over a cache: query i (absolute position past + i) sees key j when j <= past + i and
// key_valid[b, j]; each query always sees itself, so that padding rows never go fully masked
// (their outputs are meaningless either way). key_valid: bool [b, past + s] or undefined.
// Returns bool [b, 1, s, past + s], or undefined when nothing is masked (s == 1, all keys valid).
at::Tensor causal_mask(const at::Tensor& key_valid, int64_t batch, int64_t past, int64_t s,
                       at::Device device);

}  // namespace vlm2mla
