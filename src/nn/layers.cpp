#include "nn/layers.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "kernels/ops.h"

namespace vlm2mla {

namespace {
std::atomic<int>& fused_rms_norm_flag() {  // -1: not yet read from the environment
  static std::atomic<int> flag{-1};
  return flag;
}
}  // namespace

void set_fused_rms_norm(bool on) { fused_rms_norm_flag() = on ? 1 : 0; }

bool fused_rms_norm_enabled() {
  int f = fused_rms_norm_flag().load();
  if (f < 0) {
    const char* env = std::getenv("VLM2MLA_FUSED_RMS_NORM");
    f = env && std::string(env) == "0" ? 0 : 1;  // on unless VLM2MLA_FUSED_RMS_NORM=0
    fused_rms_norm_flag() = f;
  }
  return f == 1;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (fused_rms_norm_enabled() && fused_rms_norm_usable(x, weight)) {  // usable: CUDA tensors only
    return fused_rms_norm(x, weight, eps);
  }
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
