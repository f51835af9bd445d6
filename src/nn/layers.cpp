#include "nn/layers.h"

namespace vlm2mla {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor normed = (xf * at::rsqrt(variance + eps)).to(x.scalar_type());
  return weight * normed;
}

at::Tensor swiglu_mlp(const at::Tensor& x, const LinearWeights& gate, const LinearWeights& up,
                      const LinearWeights& down) {
  return linear(at::silu(linear(x, gate)) * linear(x, up), down);
}

}  // namespace vlm2mla
