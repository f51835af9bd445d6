// The tokenizer.model backend (libsentencepiece), for directories without a tokenizer.json.
//
// What we match: transformers' slow LlamaTokenizer with legacy=True (the default of Llama-1/2,
// Vicuna, LLaVA-1.5 checkpoints):
//  - special tokens written in the text (the model's control and unknown pieces, e.g. <s>, </s>,
//    <unk>, and tokenizer_config.json's added_tokens_decoder entries) are split out first; every
//    other run of text is encoded by SentencePiece on its own, so each run gets SentencePiece's
//    dummy-prefix "▁" (the legacy behaviour: "a<s>b" -> ▁a <s> ▁b);
//  - add_special_tokens prepends BOS when add_bos_token (default true) and appends EOS when
//    add_eos_token (default false), as LlamaTokenizer.build_inputs_with_special_tokens does.
// decode is the exact inverse of that: each run of ordinary ids goes through SentencePiece's
// decoder (which drops the run's dummy-prefix space) and special tokens are written as their text.
// This differs from transformers' convert_tokens_to_string only in the spaces it inserts around
// special tokens; for text without special tokens the results are identical.
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/sentencepiece_shim.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace vlm2mla::tok {

namespace {

using nlohmann::json;

class SentencePieceTokenizer : public Tokenizer::Impl {
 public:
  SentencePieceTokenizer(const std::string& path, const json& config);
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  ~SentencePieceTokenizer() override {
    if (model_) api_.free_model(model_);
  }
  std::optional<int64_t> token_to_id(const std::string& token) const override {
    if (auto it = extra_by_content_.find(token); it != extra_by_content_.end()) return it->second;
    const int id = api_.piece_to_id(model_, token);
    // PieceToId answers unk for unknown pieces: accept it only for the unk piece itself.
    if (id < 0 || (id == api_.unk_id(model_) && api_.id_to_piece(model_, id) != token)) return std::nullopt;
    return id;
  }
  std::optional<std::string> id_to_token(int64_t id) const override {
    if (auto it = extra_by_id_.find(id); it != extra_by_id_.end()) return it->second;
    if (id < 0 || id >= n_pieces_) return std::nullopt;
    return api_.id_to_piece(model_, static_cast<int>(id));
  }
  bool is_special(int64_t id) const override { return special_ids_.count(id) > 0; }
  int64_t vocab_size() const override { return max_id_ + 1; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  const SpmApi& api_;
  void* model_ = nullptr;
  int n_pieces_ = 0;
  AddedTokenMatcher specials_;
  std::unordered_set<int64_t> special_ids_;
  std::unordered_map<int64_t, std::string> extra_by_id_;  // config-added tokens beyond the model
  std::unordered_map<std::string, int64_t> extra_by_content_;
  bool add_bos_ = true, add_eos_ = false;
  int64_t max_id_ = -1;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path, const json& config)
    : api_(spm_api()) {
  std::string error;
  model_ = api_.load(path, &error);
  VLM2MLA_CHECK(model_ != nullptr, FormatError, path, ": not a SentencePiece model: ", error);
  n_pieces_ = api_.piece_size(model_);
  max_id_ = n_pieces_ - 1;
  std::vector<AddedToken> specials;
  for (int id = 0; id < n_pieces_; ++id) {
    const int type = api_.piece_type(model_, id);
    if (type == 1 || type == 2) {  // unknown, control
      const std::string piece = api_.id_to_piece(model_, id);
      special_ids_.insert(id);
      if (!piece.empty()) specials.push_back(AddedToken{id, piece, false, false, false, false, true});
    }
  }
  if (config.is_object()) {
    add_bos_ = config.value("add_bos_token", true);
    add_eos_ = config.value("add_eos_token", false);
    if (auto it = config.find("added_tokens_decoder"); it != config.end() && it->is_object()) {
      for (auto a = it->begin(); a != it->end(); ++a) {
        const int64_t id = std::stoll(a.key());
        const std::string content = a.value().value("content", "");
        if (content.empty()) continue;
        if (id >= n_pieces_) {
          extra_by_id_[id] = content;
          extra_by_content_[content] = id;
          max_id_ = std::max(max_id_, id);
        }
        const bool special = a.value().value("special", true);
        if (special) special_ids_.insert(id);
        bool known = false;
        for (const auto& s : specials) known = known || s.content == content;
        if (!known)
          specials.push_back(AddedToken{id, content, false, a.value().value("lstrip", false),
                                        a.value().value("rstrip", false), false, special});
      }
    }
    if (auto bos = config_token(config, "bos_token"); !bos.empty()) bos_id = token_to_id(bos);
    if (auto eos = config_token(config, "eos_token"); !eos.empty()) eos_id = token_to_id(eos);
  }
  if (!bos_id && api_.bos_id(model_) >= 0) bos_id = api_.bos_id(model_);
  if (!eos_id && api_.eos_id(model_) >= 0) eos_id = api_.eos_id(model_);
  specials_ = AddedTokenMatcher(std::move(specials));
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  size_t bad = 0;
  VLM2MLA_CHECK(is_valid_utf8(text, &bad), ArgumentError, "text is not valid UTF-8 (byte ", bad, ")");
  std::vector<int64_t> ids;
  if (add_special_tokens && add_bos_ && bos_id) ids.push_back(*bos_id);
  for (const Segment& seg : specials_.split(text)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::vector<int> piece_ids;
    std::string error;
    VLM2MLA_CHECK(api_.encode(model_, seg.text, &piece_ids, &error), ArgumentError,
                  "sentencepiece could not encode the text: ", error);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
  if (add_special_tokens && add_eos_ && eos_id) ids.push_back(*eos_id);
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string out;
  std::vector<int> run;
  auto flush = [&]() {
    if (run.empty()) return;
    std::string text, error;
    VLM2MLA_CHECK(api_.decode(model_, run, &text, &error), ArgumentError,
                  "sentencepiece could not decode: ", error);
    out += text;
    run.clear();
  };
  for (int64_t id : ids) {
    VLM2MLA_CHECK(id >= 0 && id <= max_id_ && (id < n_pieces_ || extra_by_id_.count(id)),
                  ArgumentError, "token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
    if (special_ids_.count(id) || extra_by_id_.count(id)) {
      flush();
      if (!(skip_special_tokens && special_ids_.count(id))) out += *id_to_token(id);
    } else {
      run.push_back(static_cast<int>(id));
    }
  }
  flush();
  return out;
}

}  // namespace

std::shared_ptr<Tokenizer::Impl> make_sentencepiece_tokenizer(const std::string& path, const json& config) {
  return std::make_shared<SentencePieceTokenizer>(path, config);
}

}  // namespace vlm2mla::tok
