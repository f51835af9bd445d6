#include "models/mla_config.h"

#include <algorithm>

#include "core/error.h"
#include "core/names.h"

namespace vlm2mla {

using nlohmann::json;

const char* svd_method_name(SvdMethod method) {
  switch (method) {
    case SvdMethod::kNone: return "none";
    case SvdMethod::kJoint: return "joint";
    case SvdMethod::kSplit: return "split";
    case SvdMethod::kWhitened: return "whitened";
    case SvdMethod::kMd: return "md";
  }
  return "?";
}

SvdMethod svd_method_from_name(const std::string& name, const std::string& what) {
  return parse_choice(
      name, what, "SVD method",
      std::array{SvdMethod::kNone, SvdMethod::kJoint, SvdMethod::kSplit, SvdMethod::kWhitened, SvdMethod::kMd},
      svd_method_name);
}

namespace {

int64_t int_of(const json& v, const std::string& origin, const std::string& key) {
  VLM2MLA_CHECK(v.is_number_integer(), FormatError, origin, ": key 'mla.", key,
                "' must hold integers, found ", v.type_name());
  return v.get<int64_t>();
}

std::vector<int64_t> int_array(const json& v, const std::string& origin, const std::string& key) {
  VLM2MLA_CHECK(v.is_array(), FormatError, origin, ": key 'mla.", key, "' must be a list, found ",
                v.type_name());
  std::vector<int64_t> out;
  for (const auto& e : v) out.push_back(int_of(e, origin, key));
  return out;
}

}  // namespace

MlaConfig parse_mla_config(const json& b, const std::string& origin, int64_t layers, int64_t n_kv,
                           int64_t head_dim, int64_t hidden_size) {
  VLM2MLA_CHECK(b.is_object(), FormatError, origin, ": key 'mla' must be an object, found ",
                b.type_name());
  auto need = [&](const char* key) -> const json& {
    VLM2MLA_CHECK(b.contains(key), FormatError, origin, ": missing key 'mla.", key, "'");
    return b.at(key);
  };
  const int64_t version = int_of(need("format_version"), origin, "format_version");
  VLM2MLA_CHECK(version == 1, FormatError, origin, ": mla.format_version ", version,
                " is not supported (this build reads version 1)");
  MlaConfig m;
  m.qk_rope_head_dim = int_of(need("qk_rope_head_dim"), origin, "qk_rope_head_dim");
  const int64_t R = m.qk_rope_head_dim;
  VLM2MLA_CHECK(R > 0 && R % 2 == 0 && R <= head_dim, FormatError, origin,
                ": mla.qk_rope_head_dim must be even and in [2, head_dim = ", head_dim, "], found ", R);
  const json& kp = need("kept_pairs");
  VLM2MLA_CHECK(kp.is_array() && static_cast<int64_t>(kp.size()) == layers, FormatError, origin,
                ": mla.kept_pairs must be a list of ", layers, " layers");
  for (int64_t l = 0; l < layers; ++l) {
    const json& heads = kp.at(static_cast<size_t>(l));
    VLM2MLA_CHECK(heads.is_array() && static_cast<int64_t>(heads.size()) == n_kv, FormatError, origin,
                  ": mla.kept_pairs[", l, "] must be a list of ", n_kv, " kv heads");
    std::vector<std::vector<int64_t>> per_head;
    for (int64_t g = 0; g < n_kv; ++g) {
      const std::string key = detail::concat("kept_pairs[", l, "][", g, "]");
      std::vector<int64_t> pairs = int_array(heads.at(static_cast<size_t>(g)), origin, key);
      VLM2MLA_CHECK(static_cast<int64_t>(pairs.size()) == R / 2, FormatError, origin, ": mla.", key,
                    " holds ", pairs.size(), " pairs, expected qk_rope_head_dim / 2 = ", R / 2);
      for (size_t i = 0; i < pairs.size(); ++i) {
        VLM2MLA_CHECK(pairs[i] >= 0 && pairs[i] < head_dim / 2 && (i == 0 || pairs[i] > pairs[i - 1]),
                      FormatError, origin, ": mla.", key,
                      " must be strictly ascending pair indices in [0, ", head_dim / 2, ")");
      }
      per_head.push_back(std::move(pairs));
    }
    m.kept_pairs.push_back(std::move(per_head));
  }
  if (b.contains("rope_strategy") && b.at("rope_strategy").is_string()) {
    m.rope_strategy = b.at("rope_strategy").get<std::string>();
  }
  const json& svd = need("svd");
  VLM2MLA_CHECK(svd.is_string(), FormatError, origin, ": key 'mla.svd' must be a string");
  try {
    m.svd = svd_method_from_name(svd.get<std::string>(), origin + ": mla.svd");
  } catch (const ArgumentError& e) {
    throw FormatError(e.what());
  }
  if (m.low_rank()) {
    m.kv_lora_rank = int_array(need("kv_lora_rank"), origin, "kv_lora_rank");
    VLM2MLA_CHECK(static_cast<int64_t>(m.kv_lora_rank.size()) == layers, FormatError, origin,
                  ": mla.kv_lora_rank lists ", m.kv_lora_rank.size(), " ranks, expected one per layer (",
                  layers, ")");
    const int64_t rows = n_kv * (head_dim - R) + n_kv * head_dim;
    for (int64_t r : m.kv_lora_rank) {
      VLM2MLA_CHECK(r > 0 && r <= std::min(rows, hidden_size), FormatError, origin,
                    ": mla.kv_lora_rank holds ", r, ", expected in [1, ", std::min(rows, hidden_size), "]");
    }
  } else {
    VLM2MLA_CHECK(!b.contains("kv_lora_rank") || b.at("kv_lora_rank").is_null(), FormatError, origin,
                  ": mla.kv_lora_rank given, but mla.svd is 'none'");
  }
  m.modality_split = b.value("modality_split", false);
  VLM2MLA_CHECK(!m.modality_split || m.svd == SvdMethod::kMd, FormatError, origin,
                ": mla.modality_split is true only with svd 'md'");
  VLM2MLA_CHECK(m.svd != SvdMethod::kMd || m.modality_split, FormatError, origin,
                ": svd 'md' needs mla.modality_split true");
  if (b.contains("visual_token_ids")) {
    m.visual_token_ids = int_array(b.at("visual_token_ids"), origin, "visual_token_ids");
  }
  VLM2MLA_CHECK(!m.modality_split || !m.visual_token_ids.empty(), FormatError, origin,
                ": mla.modality_split needs mla.visual_token_ids");
  return m;
}

json mla_config_to_json(const MlaConfig& m) {
  json j = {{"format_version", 1},
            {"qk_rope_head_dim", m.qk_rope_head_dim},
            {"kept_pairs", m.kept_pairs},
            {"rope_strategy", m.rope_strategy},
            {"svd", svd_method_name(m.svd)},
            {"modality_split", m.modality_split},
            {"visual_token_ids", m.visual_token_ids}};
  if (m.low_rank()) j["kv_lora_rank"] = m.kv_lora_rank;
  return j;
}

int64_t kv_values_per_token(const MlaConfig* mla, int64_t layers, int64_t n_kv, int64_t head_dim) {
  if (!mla || !mla->low_rank()) return layers * 2 * n_kv * head_dim;
  int64_t total = 0;
  for (int64_t l = 0; l < layers; ++l) {
    total += mla->kv_lora_rank[static_cast<size_t>(l)] + n_kv * mla->qk_rope_head_dim;
  }
  return total;
}

}  // namespace vlm2mla
