// Calibration statistics for choosing the RoPE pairs to keep (METHOD.md section 3), collected by an
// observer on the model's own forward.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "models/observer.h"
#include "models/text_config.h"

namespace vlm2mla::convert {

// MHA2MLA's 2-norm criterion: per layer, kv head g and frequency pair k,
//   score[g, k] = sum over query heads h of group g of mean_t ||q_h^(k)(t)|| * mean_t ||k_g^(k)(t)||
// with q, k before RoPE (biases included), ||.|| over the pair's two dims (k and k + d_h/2), and
// the means over real (non-padding) tokens of every forward observed.
class TwoNormScores : public DecoderObserver {
 public:
  explicit TwoNormScores(const TextConfig& config);

  void queries_keys(int64_t layer, const at::Tensor& q_pre_rope, const at::Tensor& k_pre_rope,
                    const at::Tensor& q_rope, const at::Tensor& k_rope, const at::Tensor& valid,
                    const at::Tensor& image) override;

  // float32 [layers, n_kv, d_h / 2]; ArgumentError if nothing was observed.
  at::Tensor scores() const;
  int64_t tokens() const { return tokens_; }

 private:
  TextConfig config_;
  std::vector<at::Tensor> q_sum_;  // per layer [h_q, d_h/2] float64, sums of pair norms
  std::vector<at::Tensor> k_sum_;  // per layer [h_kv, d_h/2]
  int64_t tokens_ = 0;             // real tokens seen (counted at layer 0)
};

// MHA2MLA-VLM's modality-adaptive criterion (MKL): per layer, kv group g and pair k,
//   T[g, k] = mean over the query heads h of g and over query tokens i of KL(P_i || P_i^(-k)),
// P_i the causal softmax attention of query i with full (M-)RoPE and P_i^(-k) the same with pair k
// zeroed in both the rotated q and k. Ours (METHOD.md): the KL is averaged separately over
// image-token queries and text-token queries and the two means are averaged, so each modality weighs
// the same whatever its token count (a modality with no queries is left out). Padding queries and
// keys are excluded.
class MklScores : public DecoderObserver {
 public:
  explicit MklScores(const TextConfig& config);

  void queries_keys(int64_t layer, const at::Tensor& q_pre_rope, const at::Tensor& k_pre_rope,
                    const at::Tensor& q_rope, const at::Tensor& k_rope, const at::Tensor& valid,
                    const at::Tensor& image) override;

  // float32 [layers, n_kv, d_h / 2]; ArgumentError if nothing was observed.
  at::Tensor scores() const;
  int64_t image_queries() const { return image_queries_; }
  int64_t text_queries() const { return text_queries_; }

 private:
  TextConfig config_;
  std::vector<at::Tensor> image_sum_, text_sum_;  // per layer [h_kv, d_h/2] float64 KL sums
  int64_t image_queries_ = 0, text_queries_ = 0;  // counted at layer 0
};

// Per-pair 2-norm of x [b, h, s, d_h]: [b, h, s, d_h / 2].
at::Tensor pair_norms(const at::Tensor& x);

}  // namespace vlm2mla::convert
