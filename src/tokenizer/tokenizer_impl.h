// The interface the two tokenizer backends implement (internal to src/tokenizer).
#pragma once

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace vlm2mla {

class Tokenizer::Impl {
 public:
  virtual ~Impl() = default;
  virtual std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const = 0;
  virtual std::optional<int64_t> token_to_id(const std::string& token) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  virtual bool is_special(int64_t id) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::string kind() const = 0;
  std::optional<int64_t> bos_id, eos_id;
};

namespace tok {
// `config` is tokenizer_config.json's content or null.
std::shared_ptr<Tokenizer::Impl> make_hf_tokenizer(const std::string& path, const nlohmann::json& config);
std::shared_ptr<Tokenizer::Impl> make_sentencepiece_tokenizer(const std::string& path,
                                                              const nlohmann::json& config);
// tokenizer_config.json's "bos_token"/"eos_token": a string or an AddedToken object; "" if absent.
std::string config_token(const nlohmann::json& config, const char* key);
}  // namespace tok

}  // namespace vlm2mla
