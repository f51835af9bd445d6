#include "models/mla_attention.h"

#include "core/error.h"

namespace vlm2mla {

at::Tensor mla_rope_dims(const std::vector<std::vector<int64_t>>& kept_pairs, int64_t head_dim) {
  std::vector<int64_t> dims;
  for (const auto& pairs : kept_pairs) {
    for (int64_t k : pairs) dims.push_back(k);
    for (int64_t k : pairs) dims.push_back(k + head_dim / 2);
  }
  return at::tensor(dims, at::kLong);  // [h_kv * R]
}

at::Tensor visual_token_mask(const std::vector<int64_t>& visual_token_ids, const at::Tensor& input_ids) {
  at::Tensor ids = at::tensor(visual_token_ids, at::kLong).to(input_ids.device());
  return at::isin(input_ids, ids);  // [b, s]
}

namespace {

// Per-token choice between the text (set 0) and image (set 1) results: a [b, s, n], image [b, s].
at::Tensor by_modality(const at::Tensor& text, const at::Tensor& image_result, const at::Tensor& image) {
  return at::where(image.unsqueeze(-1), image_result, text);
}

at::Tensor rope_part(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

}  // namespace

at::Tensor mla_latent(const MlaConfig& mla, const DecoderLayerWeights& w, const at::Tensor& h,
                      const at::Tensor& image) {
  at::Tensor c = linear(h, w.kv.at(0).kv_a_proj);  // [b, s, r_kv]
  if (mla.modality_split && image.defined() && image.any().item<bool>()) {
    c = by_modality(c, linear(h, w.kv.at(1).kv_a_proj), image.to(h.device()));
  }
  return c;
}

QkvHeads mla_qkv_expanded(const TextConfig& c, const DecoderLayerWeights& w,
                          const at::Tensor& rope_dims, const at::Tensor& h, const RopeCosSin& cs,
                          const at::Tensor& image) {
  const MlaConfig& m = *c.mla;
  const int64_t b = h.size(0), s = h.size(1);
  const int64_t h_q = c.num_attention_heads, h_kv = c.num_key_value_heads, dh = c.head_dim;
  const int64_t R = m.qk_rope_head_dim, d_nope = dh - R;
  QkvHeads out;
  out.q_pre = linear(h, w.q_proj).view({b, s, h_q, dh}).transpose(1, 2);  // [b, h_q, s, d_h]
  at::Tensor k_rope = linear(h, w.k_rope_proj).view({b, s, h_kv, R});    // [b, s, h_kv, R]
  at::Tensor k_nope, v;                                                  // [b, s, h_kv, *]
  if (!m.low_rank()) {
    k_nope = linear(h, w.k_nope_proj).view({b, s, h_kv, d_nope});
    v = linear(h, w.v_proj).view({b, s, h_kv, dh});
  } else {
    at::Tensor latent = mla_latent(m, w, h, image);  // [b, s, r_kv]
    at::Tensor kv = linear(latent, w.kv.at(0).kv_b_proj);  // [b, s, h_kv*(d_nope + d_h)]
    if (m.modality_split && image.defined() && image.any().item<bool>()) {
      kv = by_modality(kv, linear(latent, w.kv.at(1).kv_b_proj), image.to(h.device()));
    }
    k_nope = kv.narrow(-1, 0, h_kv * d_nope).view({b, s, h_kv, d_nope});
    v = kv.narrow(-1, h_kv * d_nope, h_kv * dh).view({b, s, h_kv, dh});
  }
  out.k_pre = at::cat({k_rope, k_nope}, -1).transpose(1, 2);  // [b, h_kv, s, d_h]
  out.v = v.transpose(1, 2);                                  // [b, h_kv, s, d_h]

  // cos/sin of each kv head's kept dims: [b, s, d_h] -> [b, h_kv, s, R]; query heads use their group's.
  at::Tensor cos = cs.cos.index_select(-1, rope_dims).view({b, s, h_kv, R}).transpose(1, 2);
  at::Tensor sin = cs.sin.index_select(-1, rope_dims).view({b, s, h_kv, R}).transpose(1, 2);
  const int64_t groups = h_q / h_kv;
  at::Tensor cos_q = groups == 1 ? cos : cos.repeat_interleave(groups, 1);  // [b, h_q, s, R]
  at::Tensor sin_q = groups == 1 ? sin : sin.repeat_interleave(groups, 1);
  out.q = at::cat({rope_part(out.q_pre.narrow(-1, 0, R), cos_q, sin_q), out.q_pre.narrow(-1, R, d_nope)}, -1);
  out.k = at::cat({rope_part(out.k_pre.narrow(-1, 0, R), cos, sin), out.k_pre.narrow(-1, R, d_nope)}, -1);
  return out;
}

}  // namespace vlm2mla
