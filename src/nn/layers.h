// Small building blocks shared by the decoders.
#pragma once

#include <ATen/ATen.h>

namespace vlm2mla {

struct LinearWeights {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
};

// x [..., in] -> [..., out]
inline at::Tensor linear(const at::Tensor& x, const LinearWeights& w) {
  return at::linear(x, w.weight, w.bias);
}

// Llama/Qwen2 RMSNorm as transformers computes it: normalise in float32, cast back to x's dtype,
// then multiply by the weight. x [..., d], weight [d].
// On CUDA tensors, one launch of kernels/cuda/rms_norm (this function's steps are its twin; the float32
// sum of squares is added in another order). On by default; set_fused_rms_norm(false), or
// VLM2MLA_FUSED_RMS_NORM=0 in the environment, keeps libtorch's eight kernels.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
void set_fused_rms_norm(bool on);
bool fused_rms_norm_enabled();

// SwiGLU MLP: down(silu(gate(x)) * up(x)). x [..., d] -> [..., d]
at::Tensor swiglu_mlp(const at::Tensor& x, const LinearWeights& gate, const LinearWeights& up,
                      const LinearWeights& down);

}  // namespace vlm2mla
