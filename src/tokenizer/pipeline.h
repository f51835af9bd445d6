// The stages of a tokenizer.json around its model: normalizer, pre-tokenizer, post-processor,
// decoder. Each is parsed once (unsupported components are a FormatError naming the component and
// the file) and applied to plain strings; offsets are not tracked.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

namespace vlm2mla::tok {

// One piece of text on its way through the pipeline. `at_text_start`: the piece begins at offset 0
// of the text given to encode (Metaspace's prepend_scheme "first" prepends only there).
struct Piece {
  std::string text;
  bool at_text_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string apply(std::string s) const = 0;
};
// nullptr for a null normalizer.
std::unique_ptr<Normalizer> parse_normalizer(const nlohmann::json& j, const std::string& where);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may rewrite) every piece; empty pieces are dropped.
  virtual std::vector<Piece> apply(std::vector<Piece> pieces) const = 0;
};
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const nlohmann::json& j, const std::string& where);

// Post-processing of one sequence with special tokens (only when add_special_tokens).
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual std::vector<int64_t> apply(std::vector<int64_t> ids) const = 0;
};
// `token_id` resolves token strings (RobertaProcessing/BertProcessing give ids directly).
std::unique_ptr<PostProcessor> parse_post_processor(const nlohmann::json& j, const std::string& where);
// [bos] A [eos] with either part optional: what transformers' LlamaTokenizerFast builds from
// tokenizer_config.json's add_bos_token / add_eos_token.
std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<int64_t> prefix,
                                                      std::vector<int64_t> suffix);

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Token strings in, token strings out (decoders chain); the caller concatenates.
  virtual std::vector<std::string> apply(std::vector<std::string> tokens) const = 0;
};
std::unique_ptr<Decoder> parse_decoder(const nlohmann::json& j, const std::string& where);

// GPT-2's byte <-> printable character table (ByteLevel pre-tokenizer and decoder).
const std::string& byte_to_unicode(uint8_t b);  // UTF-8 of the character standing for byte b
int unicode_to_byte(uint32_t cp);                // -1 when cp stands for no byte

}  // namespace vlm2mla::tok
