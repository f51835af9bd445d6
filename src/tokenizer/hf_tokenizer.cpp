// The tokenizer.json backend: added tokens, normalizer, pre-tokenizer, BPE model, post-processor,
// decoder, applied in Hugging Face tokenizers' order.
#include <algorithm>
#include <unordered_map>

#include "core/error.h"
#include "io/json_file.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace vlm2mla::tok {

namespace {

using nlohmann::json;

class HfTokenizer : public Tokenizer::Impl {
 public:
  HfTokenizer(const std::string& path, const json& config);
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  std::optional<int64_t> token_to_id(const std::string& token) const override {
    if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
    return model_->token_to_id(token);
  }
  std::optional<std::string> id_to_token(int64_t id) const override {
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return it->second.content;
    if (const std::string* t = model_->id_to_token(id)) return *t;
    return std::nullopt;
  }
  bool is_special(int64_t id) const override {
    auto it = added_by_id_.find(id);
    return it != added_by_id_.end() && it->second.special;
  }
  int64_t vocab_size() const override { return max_id_ + 1; }
  std::string kind() const override { return "tokenizer.json (BPE)"; }

 private:
  void encode_model_text(const std::string& text, bool at_text_start, std::vector<int64_t>& out) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  AddedTokenMatcher raw_tokens_, normalized_tokens_;
  std::unordered_map<int64_t, AddedToken> added_by_id_;
  std::unordered_map<std::string, int64_t> added_by_content_;
  int64_t max_id_ = -1;
};

HfTokenizer::HfTokenizer(const std::string& path, const json& config) {
  const json root = io::read_json_file(path);
  VLM2MLA_CHECK(root.is_object() && root.contains("model") && root["model"].is_object(), FormatError,
                path, ": not a tokenizer.json (no \"model\" object)");
  const json& model = root["model"];
  const std::string type = model.value("type", model.contains("merges") ? "BPE" : "");
  VLM2MLA_CHECK(type == "BPE", FormatError, path, ": unsupported model type \"", type,
                "\" (only BPE is supported)");
  model_ = std::make_unique<BpeModel>(model, path);
  max_id_ = model_->max_id();

  std::vector<AddedToken> raw, normalized;
  try {
    for (const auto& a : root.value("added_tokens", json::array())) {
      AddedToken t;
      t.id = a.at("id").get<int64_t>();
      t.content = a.at("content").get<std::string>();
      t.single_word = a.value("single_word", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.normalized = a.value("normalized", !a.value("special", false));
      t.special = a.value("special", false);
      VLM2MLA_CHECK(!t.content.empty() && t.id >= 0, FormatError, path, ": added token ", a.dump(),
                    " has empty content or a negative id");
      added_by_id_[t.id] = t;
      added_by_content_[t.content] = t.id;
      max_id_ = std::max(max_id_, t.id);
      (t.normalized ? normalized : raw).push_back(t);
    }
  } catch (const json::exception& e) {
    throw FormatError(detail::concat(path, ": added_tokens: ", e.what()));
  }
  raw_tokens_ = AddedTokenMatcher(std::move(raw));
  normalized_tokens_ = AddedTokenMatcher(std::move(normalized));

  auto field = [&](const char* key) { return root.contains(key) ? root[key] : json(); };
  normalizer_ = parse_normalizer(field("normalizer"), path);
  pre_tokenizer_ = parse_pre_tokenizer(field("pre_tokenizer"), path);
  post_processor_ = parse_post_processor(field("post_processor"), path);
  decoder_ = parse_decoder(field("decoder"), path);

  if (config.is_object()) {
    if (auto bos = config_token(config, "bos_token"); !bos.empty()) bos_id = token_to_id(bos);
    if (auto eos = config_token(config, "eos_token"); !eos.empty()) eos_id = token_to_id(eos);
    // transformers' LlamaTokenizerFast rebuilds the post-processor from add_bos_token (default
    // true) and add_eos_token (default false) when it loads.
    const std::string cls = config.value("tokenizer_class", "");
    if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast") {
      const bool add_bos = config.value("add_bos_token", true);
      const bool add_eos = config.value("add_eos_token", false);
      VLM2MLA_CHECK(!(add_bos && !bos_id) && !(add_eos && !eos_id), FormatError, path,
                    ": tokenizer_config.json asks for add_bos_token/add_eos_token but the token is "
                    "not in the vocabulary");
      post_processor_ = make_bos_eos_processor(add_bos ? std::vector<int64_t>{*bos_id} : std::vector<int64_t>{},
                                               add_eos ? std::vector<int64_t>{*eos_id} : std::vector<int64_t>{});
    }
  }
}

void HfTokenizer::encode_model_text(const std::string& text, bool at_text_start,
                                    std::vector<int64_t>& out) const {
  std::vector<Piece> pieces{Piece{text, at_text_start}};
  if (pre_tokenizer_) pieces = pre_tokenizer_->apply(std::move(pieces));
  for (const auto& p : pieces) model_->encode_word(p.text, out);
}

std::vector<int64_t> HfTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  size_t bad = 0;
  VLM2MLA_CHECK(is_valid_utf8(text, &bad), ArgumentError, "text is not valid UTF-8 (byte ", bad, ")");
  std::vector<int64_t> ids;
  for (const Segment& seg : raw_tokens_.split(text)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    const std::string normalized = normalizer_ ? normalizer_->apply(seg.text) : seg.text;
    for (const Segment& sub : normalized_tokens_.split(normalized)) {
      if (sub.id >= 0) ids.push_back(sub.id);
      else encode_model_text(sub.text, seg.offset == 0 && sub.offset == 0, ids);
    }
  }
  if (add_special_tokens && post_processor_) ids = post_processor_->apply(std::move(ids));
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      if (!(skip_special_tokens && it->second.special)) tokens.push_back(it->second.content);
      continue;
    }
    const std::string* t = model_->id_to_token(id);
    VLM2MLA_CHECK(t != nullptr, ArgumentError, "token id ", id, " is not in the vocabulary (size ",
                  vocab_size(), ")");
    tokens.push_back(*t);
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  std::string out;
  for (const auto& t : decoder_->apply(std::move(tokens))) out += t;
  return out;
}

}  // namespace

std::shared_ptr<Tokenizer::Impl> make_hf_tokenizer(const std::string& path, const json& config) {
  return std::make_shared<HfTokenizer>(path, config);
}

}  // namespace vlm2mla::tok
