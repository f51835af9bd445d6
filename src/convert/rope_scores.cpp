#include "convert/rope_scores.h"

#include "core/error.h"

#include <cmath>
#include <limits>

namespace vlm2mla::convert {

at::Tensor pair_norms(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor xf = x.to(at::kDouble);
  return (xf.narrow(-1, 0, half).pow(2) + xf.narrow(-1, half, half).pow(2)).sqrt();
}

TwoNormScores::TwoNormScores(const TextConfig& config) : config_(config) {
  q_sum_.resize(static_cast<size_t>(config.num_hidden_layers));
  k_sum_.resize(static_cast<size_t>(config.num_hidden_layers));
}

void TwoNormScores::queries_keys(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& /*q_rope*/, const at::Tensor& /*k_rope*/,
                                 const at::Tensor& valid, const at::Tensor& /*image*/) {
  // Sum the pair norms over real tokens: [b, h, s, d/2] * [b, 1, s, 1] -> [h, d/2]
  at::Tensor w = valid.to(at::kDouble).unsqueeze(1).unsqueeze(-1);
  at::Tensor qs = (pair_norms(q) * w).sum(at::IntArrayRef{0, 2}).cpu();
  at::Tensor ks = (pair_norms(k) * w).sum(at::IntArrayRef{0, 2}).cpu();
  const size_t l = static_cast<size_t>(layer);
  q_sum_[l] = q_sum_[l].defined() ? q_sum_[l] + qs : qs;
  k_sum_[l] = k_sum_[l].defined() ? k_sum_[l] + ks : ks;
  if (layer == 0) tokens_ += valid.sum().item<int64_t>();
}

at::Tensor TwoNormScores::scores() const {
  VLM2MLA_CHECK(tokens_ > 0, ArgumentError, "2-norm scores: no calibration tokens were observed");
  const int64_t layers = config_.num_hidden_layers, h_kv = config_.num_key_value_heads;
  const int64_t g = config_.num_key_value_groups(), half = config_.head_dim / 2;
  std::vector<at::Tensor> out;
  for (int64_t l = 0; l < layers; ++l) {
    const size_t i = static_cast<size_t>(l);
    VLM2MLA_CHECK(q_sum_[i].defined(), ArgumentError, "2-norm scores: layer ", l, " was not observed");
    at::Tensor q_mean = q_sum_[i] / static_cast<double>(tokens_);  // [h_q, d/2]
    at::Tensor k_mean = k_sum_[i] / static_cast<double>(tokens_);  // [h_kv, d/2]
    // Query head h belongs to kv group h / g: sum the group's products.
    out.push_back((q_mean.view({h_kv, g, half}) * k_mean.unsqueeze(1)).sum(1));
  }
  return at::stack(out, 0).to(at::kFloat);  // [layers, n_kv, d/2]
}

MklScores::MklScores(const TextConfig& config) : config_(config) {
  image_sum_.resize(static_cast<size_t>(config.num_hidden_layers));
  text_sum_.resize(static_cast<size_t>(config.num_hidden_layers));
}

void MklScores::queries_keys(int64_t layer, const at::Tensor& /*q_pre_rope*/,
                             const at::Tensor& /*k_pre_rope*/, const at::Tensor& q_rope,
                             const at::Tensor& k_rope, const at::Tensor& valid,
                             const at::Tensor& image) {
  // Calibration sees whole sequences (no cache): queries and keys cover the same s positions.
  const int64_t b = q_rope.size(0), h_q = q_rope.size(1), s = q_rope.size(2), d = q_rope.size(3);
  const int64_t h_kv = k_rope.size(1), g = h_q / h_kv, half = d / 2;
  VLM2MLA_CHECK(k_rope.size(2) == s, ArgumentError, "MKL calibration runs without a KV cache");
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor q = q_rope.to(at::kDouble).reshape({b, h_kv, g, s, d});  // group query heads
  at::Tensor k = k_rope.to(at::kDouble).unsqueeze(2);                  // [b, h_kv, 1, s, d]
  at::Tensor keep = valid.to(q.device());
  // allowed[b, i, j]: key j is real and j <= i; padding queries are dropped from the means below.
  at::Tensor causal = at::ones({s, s}, at::TensorOptions().dtype(at::kBool).device(q.device())).tril();
  at::Tensor allowed = causal.unsqueeze(0).logical_and(keep.unsqueeze(1))  // [b, s, s]
                           .logical_or(at::eye(s, at::TensorOptions().dtype(at::kBool).device(q.device())));
  at::Tensor mask = allowed.view({b, 1, 1, s, s});
  const double neg = -std::numeric_limits<double>::infinity();
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) * scale;  // [b, h_kv, g, s, s]
  at::Tensor logp = at::log_softmax(scores.masked_fill(mask.logical_not(), neg), -1);
  at::Tensor p = logp.exp();
  at::Tensor kl = at::empty({b, h_kv, g, s, half}, q.options());
  for (int64_t pair = 0; pair < half; ++pair) {
    // The pair's share of every score: its two rotated dims.
    at::Tensor qp = at::cat({q.narrow(-1, pair, 1), q.narrow(-1, pair + half, 1)}, -1);
    at::Tensor kp = at::cat({k.narrow(-1, pair, 1), k.narrow(-1, pair + half, 1)}, -1);
    at::Tensor without = scores - at::matmul(qp, kp.transpose(-1, -2)) * scale;
    at::Tensor logp_without = at::log_softmax(without.masked_fill(mask.logical_not(), neg), -1);
    // KL(P || P^-k) = sum_j P_j (log P_j - log P^-k_j), over allowed keys only (P_j = 0 elsewhere).
    at::Tensor term = (p * (logp - logp_without)).masked_fill(mask.logical_not(), 0.0);
    kl.select(-1, pair).copy_(term.sum(-1));
  }
  at::Tensor per_query = kl.sum(2) / static_cast<double>(g);  // mean over the group's heads
  at::Tensor is_image = image.defined() ? image.to(q.device()).logical_and(keep)
                                        : at::zeros_like(keep);
  at::Tensor is_text = keep.logical_and(is_image.logical_not());
  auto masked_sum = [&](const at::Tensor& which) {  // [b, s] -> [h_kv, half]
    return (per_query * which.to(at::kDouble).view({b, 1, s, 1})).sum(at::IntArrayRef{0, 2}).cpu();
  };
  const size_t l = static_cast<size_t>(layer);
  at::Tensor im = masked_sum(is_image), tx = masked_sum(is_text);
  image_sum_[l] = image_sum_[l].defined() ? image_sum_[l] + im : im;
  text_sum_[l] = text_sum_[l].defined() ? text_sum_[l] + tx : tx;
  if (layer == 0) {
    image_queries_ += is_image.sum().item<int64_t>();
    text_queries_ += is_text.sum().item<int64_t>();
  }
}

at::Tensor MklScores::scores() const {
  VLM2MLA_CHECK(image_queries_ + text_queries_ > 0, ArgumentError,
                "MKL scores: no calibration tokens were observed");
  std::vector<at::Tensor> out;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const size_t i = static_cast<size_t>(l);
    VLM2MLA_CHECK(text_sum_[i].defined(), ArgumentError, "MKL scores: layer ", l, " was not observed");
    std::vector<at::Tensor> means;
    if (image_queries_ > 0) means.push_back(image_sum_[i] / static_cast<double>(image_queries_));
    if (text_queries_ > 0) means.push_back(text_sum_[i] / static_cast<double>(text_queries_));
    out.push_back(means.size() == 2 ? (means[0] + means[1]) / 2.0 : means[0]);
  }
  return at::stack(out, 0).to(at::kFloat);
}

}  // namespace vlm2mla::convert
