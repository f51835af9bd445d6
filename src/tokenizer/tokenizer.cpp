#include "tokenizer/tokenizer.h"

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"
#include "tokenizer/tokenizer_impl.h"

namespace vlm2mla {

namespace tok {
std::string config_token(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  throw FormatError(detail::concat("tokenizer_config.json: \"", key, "\" is ", it->dump(),
                                   ", expected a string or an object with \"content\""));
}
}  // namespace tok

namespace {
nlohmann::json read_config(const std::string& config_path) {
  if (config_path.empty() || !fs::is_regular_file(config_path)) return nullptr;
  nlohmann::json j = io::read_json_file(config_path);
  VLM2MLA_CHECK(j.is_object(), FormatError, config_path, ": expected a JSON object");
  return j;
}
}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  VLM2MLA_CHECK(fs::is_directory(dir), IoError, "tokenizer directory ", dir, " does not exist");
  const std::string config = fs::join(dir, "tokenizer_config.json");
  if (fs::is_regular_file(fs::join(dir, "tokenizer.json")))
    return from_tokenizer_json(fs::join(dir, "tokenizer.json"), config);
  if (fs::is_regular_file(fs::join(dir, "tokenizer.model")))
    return from_sentencepiece(fs::join(dir, "tokenizer.model"), config);
  throw IoError(detail::concat(dir, " has neither tokenizer.json nor tokenizer.model"));
}

Tokenizer Tokenizer::from_tokenizer_json(const std::string& path, const std::string& config_path) {
  return Tokenizer(tok::make_hf_tokenizer(path, read_config(config_path)));
}

Tokenizer Tokenizer::from_sentencepiece(const std::string& path, const std::string& config_path) {
  VLM2MLA_CHECK(fs::is_regular_file(path), IoError, path, " does not exist");
  return Tokenizer(tok::make_sentencepiece_tokenizer(path, read_config(config_path)));
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}
std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}
std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const { return impl_->token_to_id(token); }
std::string Tokenizer::id_to_token(int64_t id) const {
  auto t = impl_->id_to_token(id);
  VLM2MLA_CHECK(t.has_value(), ArgumentError, "token id ", id, " is not in the vocabulary (size ",
                impl_->vocab_size(), ")");
  return *t;
}
bool Tokenizer::is_special(int64_t id) const { return impl_->is_special(id); }
std::optional<int64_t> Tokenizer::bos_id() const { return impl_->bos_id; }
std::optional<int64_t> Tokenizer::eos_id() const { return impl_->eos_id; }
int64_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }
std::string Tokenizer::kind() const { return impl_->kind(); }

}  // namespace vlm2mla
