// The vision side of LLaVA-1.5 and LLaVA-NeXT: CLIP tower, feature-layer selection, the 2-layer
// GELU projector, and NeXT's anyres packing (grid of crops + base image, unpadding, image_newline).
#pragma once

#include <ATen/ATen.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "models/clip_vision.h"
#include "models/vision_config.h"

namespace vlm2mla {

struct LlavaWeightNames {
  std::string vision_tower;  // "vision_tower." (Hub) or "model.vision_tower." (transformers 5)
  std::string projector;     // "multi_modal_projector." or "model.multi_modal_projector."
  std::string image_newline; // "image_newline" or "model.image_newline" (NeXT)
};

class LlavaVision {
 public:
  static LlavaVision load(const LlavaConfig& config, bool next, int64_t text_hidden,
                          const LlavaWeightNames& names, const ParamFiller& fill);

  const LlavaConfig& config() const { return config_; }
  bool next() const { return next_; }
  void set_attention_backend(AttentionBackend backend) { tower_.set_attention_backend(backend); }

  // The projected image features, every image's tokens in order: [total image tokens, d_text].
  // LLaVA-1.5: pixel_values [n, C, H, W] (image_sizes unused).
  // NeXT: pixel_values [n, max_patches, C, H, W] and image_sizes [n, 2] (height, width).
  at::Tensor image_features(const at::Tensor& pixel_values, const at::Tensor& image_sizes) const;

  // Image tokens each image takes in input_ids (NeXT: from its original size).
  int64_t tokens_per_image(int64_t height, int64_t width) const;

 private:
  LlavaVision(LlavaConfig config, bool next, ClipVisionTower tower, LinearWeights l1,
              LinearWeights l2, at::Tensor newline)
      : config_(std::move(config)), next_(next), tower_(std::move(tower)), linear_1_(std::move(l1)),
        linear_2_(std::move(l2)), image_newline_(std::move(newline)) {}
  at::Tensor select_and_project(const at::Tensor& pixel_values) const;  // [n, tokens, d_text]

  LlavaConfig config_;
  bool next_;
  ClipVisionTower tower_;
  LinearWeights linear_1_, linear_2_;
  at::Tensor image_newline_;  // [d_text], NeXT only
};

// transformers' unpad_image on a [C, H, W] feature map of an image of original (height, width).
at::Tensor unpad_image(const at::Tensor& features, int64_t original_height, int64_t original_width);

}  // namespace vlm2mla
