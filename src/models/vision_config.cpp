#include "models/vision_config.h"

#include "core/error.h"

namespace vlm2mla {

using nlohmann::json;

namespace {

int64_t get_int(const json& obj, const char* key, int64_t fallback, const std::string& origin,
                const std::string& prefix) {
  if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
  const json& v = obj.at(key);
  VLM2MLA_CHECK(v.is_number_integer() && v.get<int64_t>() > 0, FormatError, origin, ": key '",
                prefix, key, "' must be a positive integer, found ", v.dump());
  return v.get<int64_t>();
}

double get_number(const json& obj, const char* key, double fallback, const std::string& origin,
                  const std::string& prefix) {
  if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
  VLM2MLA_CHECK(obj.at(key).is_number(), FormatError, origin, ": key '", prefix, key,
                "' must be a number");
  return obj.at(key).get<double>();
}

std::string get_string(const json& obj, const char* key, const std::string& fallback,
                       const std::string& origin, const std::string& prefix) {
  if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
  VLM2MLA_CHECK(obj.at(key).is_string(), FormatError, origin, ": key '", prefix, key,
                "' must be a string");
  return obj.at(key).get<std::string>();
}

const json& sub_object(const json& root, const char* key, const std::string& origin) {
  static const json empty = json::object();
  if (!root.contains(key) || root.at(key).is_null()) return empty;
  VLM2MLA_CHECK(root.at(key).is_object(), FormatError, origin, ": key '", key,
                "' must be an object");
  return root.at(key);
}

}  // namespace

LlavaConfig parse_llava_config(const json& root, const std::string& origin, bool next) {
  LlavaConfig c;
  const json& v = sub_object(root, "vision_config", origin);
  const std::string vp = "vision_config.";
  const std::string type = get_string(v, "model_type", "clip_vision_model", origin, vp);
  VLM2MLA_CHECK(type == "clip_vision_model", ArgumentError, origin, ": vision_config.model_type '",
                type, "' is not supported (supported: clip_vision_model)");
  ClipVisionConfig& cv = c.vision;
  cv.hidden_size = get_int(v, "hidden_size", cv.hidden_size, origin, vp);
  cv.intermediate_size = get_int(v, "intermediate_size", cv.intermediate_size, origin, vp);
  cv.num_hidden_layers = get_int(v, "num_hidden_layers", cv.num_hidden_layers, origin, vp);
  cv.num_attention_heads = get_int(v, "num_attention_heads", cv.num_attention_heads, origin, vp);
  cv.num_channels = get_int(v, "num_channels", cv.num_channels, origin, vp);
  cv.image_size = get_int(v, "image_size", cv.image_size, origin, vp);
  cv.patch_size = get_int(v, "patch_size", cv.patch_size, origin, vp);
  cv.layer_norm_eps = get_number(v, "layer_norm_eps", cv.layer_norm_eps, origin, vp);
  cv.hidden_act = get_string(v, "hidden_act", cv.hidden_act, origin, vp);
  VLM2MLA_CHECK(cv.hidden_act == "quick_gelu" || cv.hidden_act == "gelu", ArgumentError, origin,
                ": vision_config.hidden_act '", cv.hidden_act, "' is not supported (quick_gelu, gelu)");
  VLM2MLA_CHECK(cv.hidden_size % cv.num_attention_heads == 0 && cv.image_size % cv.patch_size == 0,
                FormatError, origin, ": vision_config: hidden_size must divide by num_attention_heads "
                "and image_size by patch_size");

  // vision_feature_layer: an int or a list of ints (default -2).
  if (root.contains("vision_feature_layer") && root.at("vision_feature_layer").is_array()) {
    for (const auto& x : root.at("vision_feature_layer")) {
      VLM2MLA_CHECK(x.is_number_integer(), FormatError, origin,
                    ": key 'vision_feature_layer' must hold integers");
      c.vision_feature_layers.push_back(x.get<int64_t>());
    }
    VLM2MLA_CHECK(!c.vision_feature_layers.empty(), FormatError, origin,
                  ": key 'vision_feature_layer' is an empty list");
  } else if (root.contains("vision_feature_layer")) {
    VLM2MLA_CHECK(root.at("vision_feature_layer").is_number_integer(), FormatError, origin,
                  ": key 'vision_feature_layer' must be an integer or a list of integers");
    c.vision_feature_layers = {root.at("vision_feature_layer").get<int64_t>()};
  } else {
    c.vision_feature_layers = {-2};
  }
  for (int64_t layer : c.vision_feature_layers) {
    const int64_t n = cv.num_hidden_layers + 1;  // hidden states: embeddings, then every layer
    VLM2MLA_CHECK(layer >= -n && layer < n, FormatError, origin, ": vision_feature_layer ", layer,
                  " is outside the ", n, " hidden states of a ", cv.num_hidden_layers,
                  "-layer vision tower");
  }
  c.vision_feature_select_strategy =
      get_string(root, "vision_feature_select_strategy", "default", origin, "");
  VLM2MLA_CHECK(c.vision_feature_select_strategy == "default" ||
                    c.vision_feature_select_strategy == "full",
                FormatError, origin, ": vision_feature_select_strategy '",
                c.vision_feature_select_strategy, "' (expected default or full)");
  c.projector_hidden_act = get_string(root, "projector_hidden_act", "gelu", origin, "");
  VLM2MLA_CHECK(c.projector_hidden_act == "gelu", ArgumentError, origin, ": projector_hidden_act '",
                c.projector_hidden_act, "' is not supported (gelu)");
  c.multimodal_projector_bias =
      !root.contains("multimodal_projector_bias") || root.at("multimodal_projector_bias").get<bool>();
  c.image_token_id = get_int(root, "image_token_id",
                             get_int(root, "image_token_index", c.image_token_id, origin, ""), origin, "");
  if (next) {
    VLM2MLA_CHECK(root.contains("image_grid_pinpoints") && root.at("image_grid_pinpoints").is_array() &&
                      !root.at("image_grid_pinpoints").empty(),
                  FormatError, origin, ": missing key 'image_grid_pinpoints' (LLaVA-NeXT needs the "
                  "list of [height, width] resolutions)");
    for (const auto& p : root.at("image_grid_pinpoints")) {
      VLM2MLA_CHECK(p.is_array() && p.size() == 2 && p[0].is_number_integer() &&
                        p[1].is_number_integer() && p[0].get<int64_t>() > 0 && p[1].get<int64_t>() > 0,
                    FormatError, origin, ": image_grid_pinpoints entries must be [height, width]");
      c.image_grid_pinpoints.emplace_back(p[0].get<int64_t>(), p[1].get<int64_t>());
    }
    VLM2MLA_CHECK(c.vision_feature_select_strategy == "default", ArgumentError, origin,
                  ": LLaVA-NeXT with vision_feature_select_strategy 'full' is not supported");
  }
  return c;
}

QwenVisionConfig parse_qwen_vision_config(const json& root, const std::string& origin) {
  QwenVisionConfig c;
  VLM2MLA_CHECK(root.contains("vision_config") && root.at("vision_config").is_object(), FormatError,
                origin, ": missing key 'vision_config' (Qwen2.5-VL needs it)");
  const json& v = root.at("vision_config");
  const std::string vp = "vision_config.";
  for (const char* k : {"depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size"}) {
    VLM2MLA_CHECK(v.contains(k), FormatError, origin, ": missing key 'vision_config.", k, "'");
  }
  c.depth = get_int(v, "depth", c.depth, origin, vp);
  c.hidden_size = get_int(v, "hidden_size", c.hidden_size, origin, vp);
  c.intermediate_size = get_int(v, "intermediate_size", c.intermediate_size, origin, vp);
  c.num_heads = get_int(v, "num_heads", c.num_heads, origin, vp);
  c.in_channels = get_int(v, "in_channels", get_int(v, "in_chans", c.in_channels, origin, vp), origin, vp);
  c.out_hidden_size = get_int(v, "out_hidden_size", c.out_hidden_size, origin, vp);
  c.patch_size = get_int(v, "patch_size", get_int(v, "spatial_patch_size", c.patch_size, origin, vp), origin, vp);
  c.spatial_merge_size = get_int(v, "spatial_merge_size", c.spatial_merge_size, origin, vp);
  c.temporal_patch_size = get_int(v, "temporal_patch_size", c.temporal_patch_size, origin, vp);
  c.window_size = get_int(v, "window_size", c.window_size, origin, vp);
  c.tokens_per_second = get_int(v, "tokens_per_second", c.tokens_per_second, origin, vp);
  c.hidden_act = get_string(v, "hidden_act", c.hidden_act, origin, vp);
  VLM2MLA_CHECK(c.hidden_act == "silu", ArgumentError, origin, ": vision_config.hidden_act '",
                c.hidden_act, "' is not supported (silu)");
  if (v.contains("fullatt_block_indexes")) {
    c.fullatt_block_indexes.clear();
    for (const auto& x : v.at("fullatt_block_indexes")) {
      VLM2MLA_CHECK(x.is_number_integer(), FormatError, origin,
                    ": vision_config.fullatt_block_indexes must hold integers");
      c.fullatt_block_indexes.push_back(x.get<int64_t>());
    }
  }
  VLM2MLA_CHECK(c.hidden_size % c.num_heads == 0 && c.head_dim() % 4 == 0, FormatError, origin,
                ": vision_config: hidden_size / num_heads must be a multiple of 4 (2-D RoPE)");
  VLM2MLA_CHECK(c.window_size % (c.spatial_merge_size * c.patch_size) == 0, FormatError, origin,
                ": vision_config.window_size must be a multiple of spatial_merge_size * patch_size");
  c.image_token_id = get_int(root, "image_token_id", c.image_token_id, origin, "");
  c.video_token_id = get_int(root, "video_token_id", c.video_token_id, origin, "");
  c.vision_start_token_id = get_int(root, "vision_start_token_id", c.vision_start_token_id, origin, "");
  c.vision_end_token_id = get_int(root, "vision_end_token_id", c.vision_end_token_id, origin, "");
  return c;
}

}  // namespace vlm2mla
