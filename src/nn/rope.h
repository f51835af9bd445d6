// Rotary position embeddings in Hugging Face's "rotate_half" layout: frequency pair k in
// [0, d_h/2) owns dims k and k + d_h/2, theta_k = base^(-2k/d_h) (then scaled per rope_type).
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "models/text_config.h"

namespace vlm2mla {

struct RopeTable {
  at::Tensor inv_freq;            // [d_h/2] float32, scaling applied
  double attention_scaling = 1.0;  // multiplies cos and sin (1 for default, linear, llama3)
  std::vector<int64_t> mrope_section;  // M-RoPE: pairs taking their angle from t, h, w; else empty
};

// As transformers' ROPE_INIT_FUNCTIONS compute it, in float32.
RopeTable make_rope_table(const RopeParameters& rope, int64_t head_dim);

struct RopeCosSin {
  at::Tensor cos;  // [b, s, d_h] in the compute dtype
  at::Tensor sin;  // [b, s, d_h]
};

// position_ids: [b, s] integer, or [3, b, s] (t, h, w) with M-RoPE: pair k takes its angle from
// axis t for k < s0, h for s0 <= k < s0 + s1, w otherwise. Computed in float32 on the positions'
// device, then cast to `dtype`.
RopeCosSin rope_cos_sin(const RopeTable& table, const at::Tensor& position_ids, at::ScalarType dtype);

// x: [b, h, s, d_h]; cos/sin [b, s, d_h]. Returns x*cos + rotate_half(x)*sin.
at::Tensor apply_rope(const at::Tensor& x, const RopeCosSin& cs);

// x [..., d]; cos and sin broadcastable to x's shape: x*cos + rotate_half(x)*sin, in x's shape.
// On CUDA tensors (of one dtype) with the fused kernel switched on, one launch of kernels/cuda/rope,
// bit-identical to these libtorch steps (its twin), so on by default; set_fused_rope(false), or
// VLM2MLA_FUSED_ROPE=0 in the environment, turn it off. CPU tensors always take the steps.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// {apply_rope(x1, cos1, sin1), apply_rope(x2, cos2, sin2)}: with the fused RoPE on, one launch for both where the
// tensors fit it (kernels/ops.h's fused_rope_pair; the same bits as two).
std::pair<at::Tensor, at::Tensor> apply_rope_pair(const at::Tensor& x1, const at::Tensor& cos1, const at::Tensor& sin1,
                                                  const at::Tensor& x2, const at::Tensor& cos2, const at::Tensor& sin2);
void set_fused_rope(bool on);
bool fused_rope_enabled();

// [..., d] -> cat(-x[..., d/2:], x[..., :d/2])
at::Tensor rotate_half(const at::Tensor& x);

}  // namespace vlm2mla
