#include "attention/attention.h"

#include <limits>

#include "core/env_switch.h"
#include "core/error.h"
#include "core/torch_compat.h"

namespace vlm2mla {

namespace {
EnvSwitch decode_sdpa_switch(kEnvDecodeSdpa);
EnvSwitch sdpa_mask_once_switch(kEnvSdpaMaskOnce);
}  // namespace

bool sdpa_mask_once_enabled() { return sdpa_mask_once_switch.enabled(); }
void set_sdpa_mask_once(bool on) { sdpa_mask_once_switch.set(on); }

bool decode_sdpa_enabled() { return decode_sdpa_switch.enabled(); }
void set_decode_sdpa(bool on) { decode_sdpa_switch.set(on); }
bool decode_sdpa_taken(const at::Tensor& q) {
  return VLM2MLA_HAS_SDPA_GQA && q.is_cuda() && q.size(2) == 1 && decode_sdpa_enabled();
}

const char* attention_backend_name(AttentionBackend backend) {
  switch (backend) {
    case AttentionBackend::kReference: return "reference";
    case AttentionBackend::kFused: return "fused";
    case AttentionBackend::kAuto: return "auto";
  }
  return "?";
}

AttentionBackend default_attention_backend() {
  return VLM2MLA_HAS_SDPA ? AttentionBackend::kAuto : AttentionBackend::kReference;
}

at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& mask, double scale) {
  const int64_t b = q.size(0), h_q = q.size(1), s_q = q.size(2), d = q.size(3);
  const int64_t h_kv = k.size(1), s_kv = k.size(2), d_v = v.size(3);
  const int64_t g = h_q / h_kv;
  // Group the query heads of each kv head: [b, h_kv, g * s_q, d]
  at::Tensor qg = q.reshape({b, h_kv, g * s_q, d});
  at::Tensor scores = at::matmul(qg, k.transpose(2, 3)) * scale;  // [b, h_kv, g*s_q, s_kv]
  scores = scores.view({b, h_kv, g, s_q, s_kv});
  if (mask.defined()) {  // one kernel (masked_fill would need the mask's negation first: two)
    const at::Tensor keep = (mask.scalar_type() == at::kBool ? mask : mask.ne(0)).unsqueeze(2);  // [b, 1, 1, s_q, s_kv]
    scores = at::where(keep, scores, -std::numeric_limits<double>::infinity());
  }
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  at::Tensor out = at::matmul(probs.view({b, h_kv, g * s_q, s_kv}), v);  // [b, h_kv, g*s_q, d_v]
  return out.view({b, h_q, s_q, d_v});
}

at::Tensor additive_mask(const at::Tensor& keep, at::ScalarType dtype) {
  VLM2MLA_CHECK(keep.scalar_type() == at::kBool, ArgumentError, "additive_mask takes a bool mask, got ",
                keep.scalar_type());
  const auto opts = at::TensorOptions().dtype(dtype).device(keep.device());
  return at::where(keep, at::scalar_tensor(0.0, opts),
                   at::scalar_tensor(-std::numeric_limits<double>::infinity(), opts));
}

const at::Tensor& shared_sdpa_mask(at::Tensor& made, const at::Tensor& mask, const at::Tensor& q) {
  if (!made.defined() && mask.defined() && sdpa_mask_once_enabled() && decode_sdpa_taken(q)) {
    made = additive_mask(mask, q.scalar_type());
  }
  return made;
}

at::Tensor attention(AttentionBackend backend, const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v, const at::Tensor& mask, double scale, bool plain_causal,
                     const at::Tensor& sdpa_mask) {
  switch (backend) {
    case AttentionBackend::kAuto:
      // One query over a cache: SDPA reads the kv heads (strided cache views) in place, masked or not.
      if (decode_sdpa_taken(q)) {
        const at::Tensor& m = sdpa_mask.defined() && mask.defined() ? sdpa_mask : mask;
        return compat::sdpa(q, k, v, m, scale, false, /*gqa=*/k.size(1) != q.size(1));
      }
      if (q.size(2) == 1 || !VLM2MLA_HAS_SDPA) return attention_reference(q, k, v, mask, scale);
      return attention(AttentionBackend::kFused, q, k, v, mask, scale, plain_causal);
    case AttentionBackend::kReference:
      return attention_reference(q, k, v, mask, scale);
    case AttentionBackend::kFused: {
      VLM2MLA_CHECK(VLM2MLA_HAS_SDPA, ArgumentError,
                    "the fused attention backend needs libtorch >= 2.0 (this build has ",
                    TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR, ")");
      const int64_t g = q.size(1) / k.size(1);
      // Cache views are strided (capacity > length); the flash kernels want dense keys and values.
      at::Tensor ke = k.contiguous(), ve = v.contiguous();
      if (g > 1) {  // [b, h_kv, s, d] -> [b, h_kv*g, s, d], query head h reads kv head h / g
        ke = k.unsqueeze(2).expand({k.size(0), k.size(1), g, k.size(2), k.size(3)})
                 .reshape({k.size(0), k.size(1) * g, k.size(2), k.size(3)});
        ve = v.unsqueeze(2).expand({v.size(0), v.size(1), g, v.size(2), v.size(3)})
                 .reshape({v.size(0), v.size(1) * g, v.size(2), v.size(3)});
      }
      if (plain_causal) return compat::sdpa(q, ke, ve, at::Tensor(), scale, /*is_causal=*/true);
      return compat::sdpa(q, ke, ve, mask, scale);
    }
  }
  return {};
}

at::Tensor causal_mask(const at::Tensor& key_valid, int64_t batch, int64_t past, int64_t s,
                       at::Device device) {
  if (s == 1 && !key_valid.defined()) return {};
  const int64_t total = past + s;
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor qpos = at::arange(past, total, opts).view({s, 1});  // [s, 1]
  at::Tensor kpos = at::arange(0, total, opts).view({1, total});  // [1, total]
  at::Tensor allowed = (kpos <= qpos).view({1, 1, s, total});     // [1, 1, s, total]
  if (key_valid.defined()) {
    allowed = allowed.logical_and(key_valid.to(device).to(at::kBool).view({batch, 1, 1, total}));
    allowed = allowed.logical_or((kpos == qpos).view({1, 1, s, total}));
  }
  return allowed.expand({batch, 1, s, total});
}

}  // namespace vlm2mla
