#include "convert/surgery.h"

#include "core/error.h"

namespace vlm2mla::convert {

std::vector<std::vector<std::vector<int64_t>>> kept_pair_lists(const RopeRanks& ranks, int64_t r) {
  at::Tensor kept = kept_pairs(ranks, r);  // bool [layers, n_kv, d_h/2]
  std::vector<std::vector<std::vector<int64_t>>> out(static_cast<size_t>(kept.size(0)));
  auto acc = kept.accessor<bool, 3>();
  for (int64_t l = 0; l < kept.size(0); ++l) {
    for (int64_t g = 0; g < kept.size(1); ++g) {
      std::vector<int64_t> pairs;
      for (int64_t k = 0; k < kept.size(2); ++k) {
        if (acc[l][g][k]) pairs.push_back(k);
      }
      out[static_cast<size_t>(l)].push_back(std::move(pairs));
    }
  }
  return out;
}

at::Tensor head_permutation(const std::vector<int64_t>& kept, int64_t dh) {
  std::vector<bool> is_kept(static_cast<size_t>(dh), false);
  std::vector<int64_t> order;
  for (int64_t k : kept) order.push_back(k), is_kept[static_cast<size_t>(k)] = true;
  for (int64_t k : kept) order.push_back(k + dh / 2), is_kept[static_cast<size_t>(k + dh / 2)] = true;
  for (int64_t i = 0; i < dh; ++i) {
    if (!is_kept[static_cast<size_t>(i)]) order.push_back(i);
  }
  return at::tensor(order, at::kLong);  // [d_h]
}

namespace {

// rows of a per-head projection [heads*d_h, ...] (weight or bias) permuted per head.
at::Tensor permute_heads(const at::Tensor& x, const std::vector<at::Tensor>& perm_per_head, int64_t dh) {
  const int64_t heads = static_cast<int64_t>(perm_per_head.size());
  std::vector<at::Tensor> parts;
  for (int64_t h = 0; h < heads; ++h) {
    parts.push_back(x.narrow(0, h * dh, dh).index_select(0, perm_per_head[static_cast<size_t>(h)].to(x.device())));
  }
  return at::cat(parts, 0);
}

// Rows [from, from+count) of each head's d_h rows, concatenated over heads (after permutation).
at::Tensor head_rows(const at::Tensor& x, int64_t heads, int64_t dh, int64_t from, int64_t count) {
  std::vector<at::Tensor> parts;
  for (int64_t h = 0; h < heads; ++h) parts.push_back(x.narrow(0, h * dh + from, count));
  return at::cat(parts, 0);
}

LinearWeights map_linear(const LinearWeights& w, const std::function<at::Tensor(const at::Tensor&)>& f) {
  LinearWeights out;
  out.weight = f(w.weight).contiguous();
  if (w.bias.defined()) out.bias = f(w.bias).contiguous();
  return out;
}

}  // namespace

DecoderLayerWeights partial_rope_layer(const TextConfig& c, const DecoderLayerWeights& w,
                                       const std::vector<std::vector<int64_t>>& kept) {
  const int64_t h_q = c.num_attention_heads, h_kv = c.num_key_value_heads, dh = c.head_dim;
  VLM2MLA_CHECK(static_cast<int64_t>(kept.size()) == h_kv, ArgumentError, "partial RoPE: ", kept.size(),
                " kv heads of kept pairs, expected ", h_kv);
  const int64_t R = 2 * static_cast<int64_t>(kept.at(0).size());
  std::vector<at::Tensor> kv_perm, q_perm;
  for (const auto& pairs : kept) {
    VLM2MLA_CHECK(2 * static_cast<int64_t>(pairs.size()) == R, ArgumentError,
                  "partial RoPE: every kv head must keep the same number of pairs");
    kv_perm.push_back(head_permutation(pairs, dh));
  }
  const int64_t groups = h_q / h_kv;
  for (int64_t h = 0; h < h_q; ++h) q_perm.push_back(kv_perm[static_cast<size_t>(h / groups)]);

  DecoderLayerWeights out = w;
  out.k_proj = LinearWeights{};
  out.q_proj = map_linear(w.q_proj, [&](const at::Tensor& x) { return permute_heads(x, q_perm, dh); });
  LinearWeights k = map_linear(w.k_proj, [&](const at::Tensor& x) { return permute_heads(x, kv_perm, dh); });
  out.k_rope_proj = map_linear(k, [&](const at::Tensor& x) { return head_rows(x, h_kv, dh, 0, R); });
  out.k_nope_proj = map_linear(k, [&](const at::Tensor& x) { return head_rows(x, h_kv, dh, R, dh - R); });
  out.kv.clear();
  return out;
}

at::Tensor stacked_kv_weight(const DecoderLayerWeights& s) {
  return at::cat({s.k_nope_proj.weight, s.v_proj.weight}, 0);
}

at::Tensor stacked_kv_bias(const DecoderLayerWeights& s) {
  if (!s.k_nope_proj.bias.defined()) return {};
  return at::cat({s.k_nope_proj.bias, s.v_proj.bias}, 0);
}

}  // namespace vlm2mla::convert
