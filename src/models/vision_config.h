// The vision parts of multimodal config.json files, under Hugging Face's key names.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vlm2mla {

// CLIPVisionConfig (LLaVA, LLaVA-NeXT). Defaults are transformers' CLIPVisionConfig defaults, which
// published LLaVA configs rely on for the keys they omit.
struct ClipVisionConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

// LlavaConfig / LlavaNextConfig beyond the language model.
struct LlavaConfig {
  ClipVisionConfig vision;
  std::vector<int64_t> vision_feature_layers;  // indices into CLIP's hidden states (negative allowed)
  std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps it
  std::string projector_hidden_act = "gelu";
  bool multimodal_projector_bias = true;
  int64_t image_token_id = 32000;
  std::vector<std::pair<int64_t, int64_t>> image_grid_pinpoints;  // NeXT: (height, width) choices
};

// Qwen2_5_VLVisionConfig plus the special token ids of Qwen2_5_VLConfig.
struct QwenVisionConfig {
  int64_t depth = 32;
  int64_t hidden_size = 1280;
  int64_t intermediate_size = 3420;
  int64_t num_heads = 16;
  int64_t in_channels = 3;
  int64_t out_hidden_size = 3584;
  int64_t patch_size = 14;
  int64_t spatial_merge_size = 2;
  int64_t temporal_patch_size = 2;
  int64_t window_size = 112;
  int64_t tokens_per_second = 4;  // Qwen2_5_VLVisionConfig's default (the Hub's 7B config says 2)
  std::vector<int64_t> fullatt_block_indexes = {7, 15, 23, 31};
  std::string hidden_act = "silu";
  int64_t image_token_id = 151655;
  int64_t video_token_id = 151656;
  int64_t vision_start_token_id = 151652;
  int64_t vision_end_token_id = 151653;
  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t patch_dim() const { return in_channels * temporal_patch_size * patch_size * patch_size; }
};

// Parse the multimodal parts of a config.json; `origin` prefixes errors (FormatError naming keys).
LlavaConfig parse_llava_config(const nlohmann::json& root, const std::string& origin, bool next);
QwenVisionConfig parse_qwen_vision_config(const nlohmann::json& root, const std::string& origin);

}  // namespace vlm2mla
