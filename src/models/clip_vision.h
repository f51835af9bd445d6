// The CLIP vision transformer of LLaVA and LLaVA-NeXT (transformers' CLIPVisionModel):
// patch conv + class token + position embeddings, pre-layernorm, pre-norm encoder layers with
// quick_gelu MLPs. Weights under a prefix: "vision_tower.vision_model." as the Hub publishes LLaVA,
// "vision_tower." as transformers 5 saves it.
#pragma once

#include <ATen/ATen.h>

#include <set>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "io/tensor_store.h"
#include "models/vision_config.h"
#include "models/weights.h"

namespace vlm2mla {

struct LayerNormWeights {
  at::Tensor weight, bias;  // [d]
};

struct ClipLayerWeights {
  LayerNormWeights layer_norm1, layer_norm2;
  LinearWeights q_proj, k_proj, v_proj, out_proj, fc1, fc2;
};

struct ClipVisionWeights {
  at::Tensor class_embedding;     // [d]
  at::Tensor patch_embedding;     // [d, C, p, p]
  at::Tensor position_embedding;  // [num_patches + 1, d]
  LayerNormWeights pre_layrnorm, post_layernorm;
  std::vector<ClipLayerWeights> layers;
};

void for_each_clip_param(const ClipVisionConfig& config, const std::string& prefix,
                         ClipVisionWeights& w, const std::function<void(const ParamRef&)>& fn);

class ClipVisionTower {
 public:
  ClipVisionTower(ClipVisionConfig config, ClipVisionWeights weights, AttentionBackend backend)
      : config_(std::move(config)), weights_(std::move(weights)), backend_(backend) {}
  static ClipVisionTower load(const ClipVisionConfig& config, const std::string& prefix,
                              const ParamFiller& fill);

  const ClipVisionConfig& config() const { return config_; }
  void set_attention_backend(AttentionBackend backend) { backend_ = backend; }

  // pixel_values [n, C, H, W] -> the hidden states transformers returns with output_hidden_states:
  // [0] the embeddings after pre_layrnorm, [i] the output of layer i; only the first
  // `num_states` (<= num_hidden_layers + 1) are computed. Each [n, 1 + num_patches, d].
  std::vector<at::Tensor> hidden_states(const at::Tensor& pixel_values, int64_t num_states) const;

 private:
  ClipVisionConfig config_;
  ClipVisionWeights weights_;
  AttentionBackend backend_;
};

at::Tensor layer_norm(const at::Tensor& x, const LayerNormWeights& w, double eps);

}  // namespace vlm2mla
