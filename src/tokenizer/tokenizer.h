// Text <-> token ids, as Hugging Face tokenizers computes them for a model directory:
//  - tokenizer.json (byte-level BPE of Qwen2/2.5 and Llama-3; SentencePiece-style BPE with byte
//    fallback of Llama-2 and Mistral), matching `tokenizers`' Tokenizer.encode / decode exactly;
//  - else tokenizer.model through libsentencepiece, with transformers' (legacy) LlamaTokenizer
//    conventions (see sentencepiece_tokenizer.cpp).
// tokenizer_config.json, when present, names bos/eos and (LlamaTokenizer classes) add_bos/eos_token.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vlm2mla {

class Tokenizer {
 public:
  // The backends (tokenizer.json pipeline, SentencePiece) implement this.
  class Impl;

  // Loads DIR/tokenizer.json, else DIR/tokenizer.model; throws IoError when neither exists and
  // FormatError for malformed or unsupported files (naming the file and component).
  static Tokenizer load(const std::string& dir);
  // One tokenizer.json with an optional tokenizer_config.json ("" for none).
  static Tokenizer from_tokenizer_json(const std::string& path, const std::string& config_path = "");
  // One SentencePiece model with an optional tokenizer_config.json.
  static Tokenizer from_sentencepiece(const std::string& path, const std::string& config_path = "");

  // `text` must be valid UTF-8 (ArgumentError otherwise). add_special_tokens applies the
  // post-processor (BOS and the like); special tokens written in the text are always recognized.
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const;
  // ArgumentError for an id outside the vocabulary.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

  std::optional<int64_t> token_to_id(const std::string& token) const;
  std::string id_to_token(int64_t id) const;  // ArgumentError outside the vocabulary
  bool is_special(int64_t id) const;
  std::optional<int64_t> bos_id() const;
  std::optional<int64_t> eos_id() const;
  int64_t vocab_size() const;  // largest id + 1, added tokens included
  std::string kind() const;    // "tokenizer.json (BPE)" or "sentencepiece"

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace vlm2mla
