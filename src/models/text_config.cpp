#include "models/text_config.h"

#include "core/error.h"
#include "io/json_file.h"

namespace vlm2mla {

using nlohmann::json;

const char* rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kLlama3: return "llama3";
  }
  return "?";
}

namespace {

const char* json_type(const json& v) { return v.type_name(); }

// Typed access to one object with errors naming origin and key path.
class Keys {
 public:
  Keys(const json& obj, std::string origin, std::string prefix)
      : obj_(obj), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

  bool has(const char* key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }

  int64_t integer(const char* key) const {
    VLM2MLA_CHECK(has(key), FormatError, origin_, ": missing key '", prefix_, key,
                  "' (expected an integer)");
    return as_int(key);
  }
  int64_t integer(const char* key, int64_t fallback) const { return has(key) ? as_int(key) : fallback; }

  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    VLM2MLA_CHECK(v.is_number(), FormatError, origin_, ": key '", prefix_, key,
                  "' must be a number, found ", json_type(v));
    return v.get<double>();
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    VLM2MLA_CHECK(v.is_boolean(), FormatError, origin_, ": key '", prefix_, key,
                  "' must be true or false, found ", json_type(v));
    return v.get<bool>();
  }

  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = obj_.at(key);
    VLM2MLA_CHECK(v.is_string(), FormatError, origin_, ": key '", prefix_, key,
                  "' must be a string, found ", json_type(v));
    return v.get<std::string>();
  }

  // An int or a list of ints (eos_token_id).
  std::vector<int64_t> int_list(const char* key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const json& v = obj_.at(key);
    if (v.is_number_integer()) return {v.get<int64_t>()};
    VLM2MLA_CHECK(v.is_array(), FormatError, origin_, ": key '", prefix_, key,
                  "' must be an integer or a list of integers, found ", json_type(v));
    for (const auto& e : v) {
      VLM2MLA_CHECK(e.is_number_integer(), FormatError, origin_, ": key '", prefix_, key,
                    "' must hold integers, found ", json_type(e));
      out.push_back(e.get<int64_t>());
    }
    return out;
  }

  const json& raw(const char* key) const { return obj_.at(key); }

 private:
  int64_t as_int(const char* key) const {
    const json& v = obj_.at(key);
    // Some configs write integral values as floats (e.g. 8192.0); accept those when exact.
    if (v.is_number_float()) {
      double d = v.get<double>();
      VLM2MLA_CHECK(d == static_cast<double>(static_cast<int64_t>(d)), FormatError, origin_,
                    ": key '", prefix_, key, "' must be an integer, found ", d);
      return static_cast<int64_t>(d);
    }
    VLM2MLA_CHECK(v.is_number_integer(), FormatError, origin_, ": key '", prefix_, key,
                  "' must be an integer, found ", json_type(v));
    return v.get<int64_t>();
  }

  const json& obj_;
  std::string origin_;
  std::string prefix_;
};

RopeParameters parse_rope(const Keys& top, const json& cfg, const std::string& origin,
                          double default_theta) {
  RopeParameters rope;
  rope.rope_theta = top.number("rope_theta", default_theta);
  // transformers 5 writes rope_parameters; the Hub's 4.x configs write rope_scaling (or null).
  const char* key = nullptr;
  if (cfg.contains("rope_parameters") && !cfg.at("rope_parameters").is_null()) {
    key = "rope_parameters";
  } else if (cfg.contains("rope_scaling") && !cfg.at("rope_scaling").is_null()) {
    key = "rope_scaling";
  }
  if (key == nullptr) return rope;
  const json& block = cfg.at(key);
  VLM2MLA_CHECK(block.is_object(), FormatError, origin, ": key '", key,
                "' must be an object, found ", block.type_name());
  VLM2MLA_CHECK(!block.empty() && (block.contains("rope_type") || block.contains("type") ||
                                   block.contains("rope_theta")),
                ArgumentError, origin, ": key '", key,
                "' is not a single RoPE block (per-layer-type RoPE parameters are not supported)");
  Keys r(block, origin, std::string(key) + ".");
  rope.rope_theta = r.number("rope_theta", rope.rope_theta);
  std::string type = r.string("rope_type", r.string("type", "default"));
  if (block.contains("mrope_section")) {
    const json& m = block.at("mrope_section");
    VLM2MLA_CHECK(m.is_array() && m.size() == 3, FormatError, origin, ": '", key,
                  ".mrope_section' must be a list of 3 integers (t, h, w pairs)");
    for (const auto& x : m) {
      VLM2MLA_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0, FormatError, origin, ": '",
                    key, ".mrope_section' must hold non-negative integers");
      rope.mrope_section.push_back(x.get<int64_t>());
    }
  }
  if (type == "mrope") type = "default";  // transformers 4 spelled M-RoPE as a type of its own
  if (type == "default") {
    rope.rope_type = RopeType::kDefault;
  } else if (type == "linear") {
    rope.rope_type = RopeType::kLinear;
    VLM2MLA_CHECK(r.has("factor"), FormatError, origin, ": missing key '", key,
                  ".factor' (linear RoPE scaling needs it)");
    rope.factor = r.number("factor", 1.0);
  } else if (type == "llama3") {
    rope.rope_type = RopeType::kLlama3;
    for (const char* k : {"factor", "low_freq_factor", "high_freq_factor",
                          "original_max_position_embeddings"}) {
      VLM2MLA_CHECK(r.has(k), FormatError, origin, ": missing key '", key, ".", k,
                    "' (llama3 RoPE scaling needs it)");
    }
    rope.factor = r.number("factor", 8.0);
    rope.low_freq_factor = r.number("low_freq_factor", 1.0);
    rope.high_freq_factor = r.number("high_freq_factor", 4.0);
    rope.original_max_position_embeddings = r.integer("original_max_position_embeddings");
    VLM2MLA_CHECK(rope.high_freq_factor > rope.low_freq_factor, FormatError, origin, ": '", key,
                  ".high_freq_factor' must exceed low_freq_factor");
  } else {
    throw ArgumentError(detail::concat(origin, ": ", key, ".rope_type '", type,
                                       "' is not supported (supported: default, linear, llama3)"));
  }
  VLM2MLA_CHECK(rope.factor > 0 && rope.rope_theta > 0, FormatError, origin, ": '", key,
                "' needs a positive factor and rope_theta");
  return rope;
}

}  // namespace

TextConfig parse_text_config(const json& root, const std::string& origin) {
  VLM2MLA_CHECK(root.is_object(), FormatError, origin, ": expected a JSON object, found ",
                root.type_name());
  TextConfig c;
  Keys outer(root, origin, "");
  if (outer.has("architectures")) {
    const json& a = root.at("architectures");
    VLM2MLA_CHECK(a.is_array() && !a.empty() && a.at(0).is_string(), FormatError, origin,
                  ": key 'architectures' must be a non-empty list of strings");
    c.architecture = a.at(0).get<std::string>();
  }
  c.model_type = outer.string("model_type", "");
  VLM2MLA_CHECK(!c.architecture.empty() || !c.model_type.empty(), FormatError, origin,
                ": missing key 'architectures' (and no 'model_type' to fall back on)");
  c.model_arch = arch_from_hf(c.architecture, c.model_type, origin);
  const bool nested = root.contains("text_config") && root.at("text_config").is_object();
  json merged = root;
  switch (c.model_arch) {
    case ArchId::kLlama:
    case ArchId::kQwen2:
    case ArchId::kQwen2_5_VL:
      // transformers 5 nests the language model's keys under text_config; keys there win.
      c.arch = c.model_arch == ArchId::kQwen2_5_VL ? ArchId::kQwen2 : c.model_arch;
      if (nested) {
        for (const auto& [k, v] : root.at("text_config").items()) merged[k] = v;
      }
      break;
    case ArchId::kLlava:
    case ArchId::kLlavaNext: {
      // The language model lives in text_config; published LLaVA configs list only the keys that
      // differ from transformers' LlamaConfig defaults, so those defaults fill the rest.
      const json text = nested ? root.at("text_config") : json::object();
      const std::string type = text.value("model_type", std::string("llama"));
      VLM2MLA_CHECK(type == "llama" || type == "qwen2", ArgumentError, origin,
                    ": text_config.model_type '", type,
                    "' is not supported for LLaVA (supported: llama, qwen2)");
      c.arch = type == "llama" ? ArchId::kLlama : ArchId::kQwen2;
      merged = json{{"vocab_size", 32000}, {"hidden_size", 4096}, {"intermediate_size", 11008},
                    {"num_hidden_layers", 32}, {"num_attention_heads", 32},
                    {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-6},
                    {"rope_theta", 10000.0}};
      if (type == "qwen2") merged["intermediate_size"] = 22016, merged["vocab_size"] = 151936;
      for (const auto& [k, v] : text.items()) merged[k] = v;
      if (!merged.contains("tie_word_embeddings") && root.contains("tie_word_embeddings")) {
        merged["tie_word_embeddings"] = root.at("tie_word_embeddings");
      }
      break;
    }
  }
  const ArchTraits traits = arch_traits(c.arch);
  Keys k(merged, origin, "");

  c.vocab_size = k.integer("vocab_size");
  c.hidden_size = k.integer("hidden_size");
  c.intermediate_size = k.integer("intermediate_size");
  c.num_hidden_layers = k.integer("num_hidden_layers");
  c.num_attention_heads = k.integer("num_attention_heads");
  c.num_key_value_heads = k.integer("num_key_value_heads", c.num_attention_heads);
  for (auto [name, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                             {"hidden_size", c.hidden_size},
                             {"intermediate_size", c.intermediate_size},
                             {"num_hidden_layers", c.num_hidden_layers},
                             {"num_attention_heads", c.num_attention_heads},
                             {"num_key_value_heads", c.num_key_value_heads}}) {
    VLM2MLA_CHECK(value > 0, FormatError, origin, ": key '", name, "' must be positive, found ",
                  value);
  }
  VLM2MLA_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, FormatError, origin,
                ": num_attention_heads (", c.num_attention_heads,
                ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  if (k.has("head_dim")) {
    c.head_dim = k.integer("head_dim");
  } else {
    VLM2MLA_CHECK(c.hidden_size % c.num_attention_heads == 0, FormatError, origin,
                  ": hidden_size (", c.hidden_size, ") is not a multiple of num_attention_heads (",
                  c.num_attention_heads, ") and no head_dim is given");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  VLM2MLA_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, FormatError, origin,
                ": head_dim must be positive and even (RoPE rotates pairs), found ", c.head_dim);
  c.max_position_embeddings =
      k.integer("max_position_embeddings", traits.default_max_position_embeddings);
  c.rms_norm_eps = k.number("rms_norm_eps", traits.default_rms_norm_eps);
  c.rope = parse_rope(k, merged, origin, traits.default_rope_theta);
  c.tie_word_embeddings = k.boolean("tie_word_embeddings", outer.boolean("tie_word_embeddings", false));
  c.hidden_act = k.string("hidden_act", "silu");
  VLM2MLA_CHECK(c.hidden_act == "silu", ArgumentError, origin, ": hidden_act '", c.hidden_act,
                "' is not supported (supported: silu)");
  c.torch_dtype = k.string("dtype", k.string("torch_dtype", ""));
  if (!c.rope.mrope_section.empty()) {
    int64_t pairs = 0;
    for (int64_t s : c.rope.mrope_section) pairs += s;
    VLM2MLA_CHECK(pairs == c.head_dim / 2, FormatError, origin, ": mrope_section sums to ", pairs,
                  " frequency pairs, expected head_dim / 2 = ", c.head_dim / 2);
  }

  switch (c.arch) {
    case ArchId::kLlama:
      c.qkv_bias = c.o_bias = k.boolean("attention_bias", false);
      c.mlp_bias = k.boolean("mlp_bias", false);
      break;
    case ArchId::kQwen2: {
      c.qkv_bias = traits.qkv_bias_default;
      bool sliding = k.boolean("use_sliding_window", false);
      if (merged.contains("layer_types") && merged.at("layer_types").is_array()) {
        for (const auto& t : merged.at("layer_types")) sliding |= t != "full_attention";
      }
      VLM2MLA_CHECK(!sliding, ArgumentError, origin,
                    ": use_sliding_window / sliding_attention layers are not supported");
      break;
    }
    case ArchId::kLlava:
    case ArchId::kLlavaNext:
    case ArchId::kQwen2_5_VL:
      // c.arch is the language model's architecture (kLlama or kQwen2), set above for every family.
      throw FormatError(detail::concat(origin, ": internal: no language-model architecture resolved"));
  }

  c.eos_token_ids = k.int_list("eos_token_id");
  if (k.has("bos_token_id")) c.bos_token_id = k.integer("bos_token_id");
  if (k.has("pad_token_id")) c.pad_token_id = k.integer("pad_token_id");
  if (root.contains("mla") && !root.at("mla").is_null()) {
    c.mla = parse_mla_config(root.at("mla"), origin, c.num_hidden_layers, c.num_key_value_heads,
                             c.head_dim, c.hidden_size);
  }
  return c;
}

TextConfig load_text_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  return parse_text_config(io::read_json_file(path), path);
}

json text_config_to_json(const TextConfig& c) {
  json rope = {{"rope_type", rope_type_name(c.rope.rope_type)}, {"rope_theta", c.rope.rope_theta}};
  if (c.rope.rope_type != RopeType::kDefault) rope["factor"] = c.rope.factor;
  if (c.rope.rope_type == RopeType::kLlama3) {
    rope["low_freq_factor"] = c.rope.low_freq_factor;
    rope["high_freq_factor"] = c.rope.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
  }
  if (!c.rope.mrope_section.empty()) rope["mrope_section"] = c.rope.mrope_section;
  return {{"architecture", c.architecture.empty() ? arch_hf_name(c.arch) : c.architecture},
          {"arch", arch_name(c.arch)},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"head_dim", c.head_dim},
          {"max_position_embeddings", c.max_position_embeddings},
          {"rms_norm_eps", c.rms_norm_eps},
          {"rope_parameters", rope},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"qkv_bias", c.qkv_bias},
          {"o_bias", c.o_bias},
          {"mlp_bias", c.mlp_bias},
          {"mla", c.mla ? mla_config_to_json(*c.mla) : json()}};
}

}  // namespace vlm2mla
