// The language-model part of config.json, under Hugging Face's key names.
//
// Two layouts are read: the one published on the Hub (transformers 4.x: rope_theta, rope_scaling with
// "type" or "rope_type", torch_dtype) and the one transformers 5 writes (rope_parameters, dtype, and,
// for multimodal models, the language model's keys nested under text_config).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "models/mla_config.h"

namespace vlm2mla {

enum class RopeType { kDefault, kLinear, kLlama3 };
const char* rope_type_name(RopeType type);

struct RopeParameters {
  RopeType rope_type = RopeType::kDefault;
  double rope_theta = 10000.0;
  double factor = 1.0;                 // linear, llama3
  double low_freq_factor = 1.0;        // llama3
  double high_freq_factor = 4.0;       // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
  // M-RoPE (Qwen2.5-VL): frequency pairs per position axis (t, h, w); empty for 1-D RoPE.
  std::vector<int64_t> mrope_section;
};

struct TextConfig {
  ArchId arch = ArchId::kLlama;        // the language model's architecture (kLlama or kQwen2)
  ArchId model_arch = ArchId::kLlama;  // the checkpoint's (a VLM for multimodal checkpoints)
  std::string architecture;  // as written in config.json
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeParameters rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q_proj/k_proj/v_proj have a bias
  bool o_bias = false;    // o_proj has a bias (Llama attention_bias)
  bool mlp_bias = false;
  std::string hidden_act = "silu";
  std::string torch_dtype;  // checkpoint's declared dtype ("bfloat16", ...), may be empty
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  // Converted models (config.json's "mla" block): partial RoPE and the K/V projections.
  std::optional<MlaConfig> mla;

  int64_t num_key_value_groups() const { return num_attention_heads / num_key_value_heads; }
};

// Parses a config.json document (a text model, or the language model of a VLM: LLaVA's
// text_config with LlamaConfig's defaults for keys the Hub configs leave out, Qwen2.5-VL's
// top-level or nested keys); `origin` (the path) prefixes every error. Throws FormatError for
// missing or mistyped keys and inconsistent dimensions, ArgumentError for unsupported architectures
// or features (naming the key and the supported values).
TextConfig parse_text_config(const nlohmann::json& root, const std::string& origin);

// Reads <model_dir>/config.json.
TextConfig load_text_config(const std::string& model_dir);

// Summary for `inspect --json` and reports.
nlohmann::json text_config_to_json(const TextConfig& config);

}  // namespace vlm2mla
