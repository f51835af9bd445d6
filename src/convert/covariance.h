// Activation statistics for the activation-aware SVDs (METHOD.md section 4): per layer, the sums of
// x x^T of the input_layernorm output entering attention, kept apart for text and image tokens
// (the observer's `image` mask, which the converter sets to the md image set), over real tokens.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "models/observer.h"

namespace vlm2mla::convert {

enum class Modality { kText = 0, kImage = 1 };
const char* modality_name(Modality m);

class CovarianceObserver : public DecoderObserver {
 public:
  // Sums in float64 on `device`.
  CovarianceObserver(int64_t layers, int64_t hidden, at::Device device);

  void attention_input(int64_t layer, const at::Tensor& x, const at::Tensor& valid,
                       const at::Tensor& image) override;

  // C = X^T X / N over the modality's tokens: [d, d] float64; undefined when it saw none.
  at::Tensor covariance(int64_t layer, Modality m) const;
  // Over all tokens (both modalities).
  at::Tensor covariance_all(int64_t layer) const;
  int64_t tokens(Modality m) const { return count_[static_cast<size_t>(m)]; }  // counted at layer 0

 private:
  std::vector<at::Tensor> sum_[2];  // per modality, per layer [d, d]
  int64_t count_[2] = {0, 0};
  std::vector<int64_t> layer_count_[2];
};

}  // namespace vlm2mla::convert
