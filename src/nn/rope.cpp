#include "nn/rope.h"

#include <cmath>

#include "core/env_switch.h"
#include "kernels/ops.h"

namespace vlm2mla {

namespace {
EnvSwitch fused_rope_switch(kEnvFusedRope);
}  // namespace

void set_fused_rope(bool on) { fused_rope_switch.set(on); }

bool fused_rope_enabled() { return fused_rope_switch.enabled(); }

RopeTable make_rope_table(const RopeParameters& rope, int64_t head_dim) {
  // inv_freq = 1 / base^(arange(0, d, 2) / d), in float32 as transformers computes it.
  at::Tensor exponents = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(at::Scalar(rope.rope_theta), exponents);
  RopeTable table;
  switch (rope.rope_type) {
    case RopeType::kDefault:
      break;
    case RopeType::kLinear:
      inv_freq = inv_freq / rope.factor;
      break;
    case RopeType::kLlama3: {
      // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between
      // interpolated smoothly.
      const double old_len = static_cast<double>(rope.original_max_position_embeddings);
      const double low_freq_wavelen = old_len / rope.low_freq_factor;
      const double high_freq_wavelen = old_len / rope.high_freq_factor;
      at::Tensor wavelen = 2 * M_PI / inv_freq;
      at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
      at::Tensor smooth = (old_len / wavelen - rope.low_freq_factor) /
                          (rope.high_freq_factor - rope.low_freq_factor);
      at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
      at::Tensor is_medium = at::logical_not(wavelen < high_freq_wavelen)
                                 .logical_and(at::logical_not(wavelen > low_freq_wavelen));
      inv_freq = at::where(is_medium, smoothed, scaled);
      break;
    }
  }
  table.inv_freq = inv_freq.contiguous();
  table.mrope_section = rope.mrope_section;
  return table;
}

RopeCosSin rope_cos_sin(const RopeTable& table, const at::Tensor& position_ids, at::ScalarType dtype) {
  // freqs[b, s, k] = pos[b, s] * inv_freq[k]   (a single product: exact like HF's matmul)
  at::Tensor inv = table.inv_freq.to(position_ids.device());
  at::Tensor freqs;  // [b, s, d/2]
  if (position_ids.dim() == 3) {
    TORCH_CHECK(table.mrope_section.size() == 3 && position_ids.size(0) == 3,
                "3-D position ids need M-RoPE (mrope_section) and 3 axes");
    at::Tensor axes = position_ids.to(at::kFloat).unsqueeze(-1) * inv.view({1, 1, 1, -1});  // [3, b, s, d/2]
    std::vector<at::Tensor> parts;
    int64_t start = 0;
    for (int64_t a = 0; a < 3; ++a) {
      parts.push_back(axes[a].narrow(-1, start, table.mrope_section[static_cast<size_t>(a)]));
      start += table.mrope_section[static_cast<size_t>(a)];
    }
    freqs = at::cat(parts, -1);
  } else {
    freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv.view({1, 1, -1});
  }
  at::Tensor emb = at::cat({freqs, freqs}, -1);                                       // [b, s, d]
  RopeCosSin cs;
  cs.cos = (emb.cos() * table.attention_scaling).to(dtype);
  cs.sin = (emb.sin() * table.attention_scaling).to(dtype);
  return cs;
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (fused_rope_enabled() && fused_rope_usable(x, cos, sin)) return fused_rope(x, cos, sin);  // CUDA only
  return x * cos + rotate_half(x) * sin;
}

std::pair<at::Tensor, at::Tensor> apply_rope_pair(const at::Tensor& x1, const at::Tensor& cos1, const at::Tensor& sin1,
                                                  const at::Tensor& x2, const at::Tensor& cos2, const at::Tensor& sin2) {
  if (fused_rope_enabled() && !fused_rope_pair_unusable(x1, cos1, sin1, x2, cos2, sin2))
    return fused_rope_pair(x1, cos1, sin1, x2, cos2, sin2);  // CUDA only
  return {apply_rope(x1, cos1, sin1), apply_rope(x2, cos2, sin2)};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeCosSin& cs) {
  return apply_rope(x, cs.cos.unsqueeze(1), cs.sin.unsqueeze(1));  // cos/sin [b, 1, s, d]
}

}  // namespace vlm2mla
