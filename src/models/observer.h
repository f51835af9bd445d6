// Named taps on the decoder's forward, for calibration (conversion observes a model; it never runs a
// copy of its forward). Every method has an empty default; an observer overrides what it needs.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace vlm2mla {

class DecoderObserver {
 public:
  virtual ~DecoderObserver() = default;

  // The input_layernorm output entering attention of `layer`: [b, s, d]. `valid` [b, s] bool marks
  // real tokens (false for padding); `image` [b, s] bool marks image tokens (undefined: no images).
  virtual void attention_input(int64_t layer, const at::Tensor& x, const at::Tensor& valid,
                               const at::Tensor& image) {}

  // Queries and keys of `layer` after their projections (biases included), before RoPE:
  // q [b, h_q, s, d_h], k [b, h_kv, s, d_h]; and after RoPE (what attention uses).
  virtual void queries_keys(int64_t layer, const at::Tensor& q_pre_rope, const at::Tensor& k_pre_rope,
                            const at::Tensor& q_rope, const at::Tensor& k_rope, const at::Tensor& valid,
                            const at::Tensor& image) {}
};

}  // namespace vlm2mla
