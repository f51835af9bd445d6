// vlm2mla tokenize --model DIR (--text TEXT | --text-file F) [--add-special-tokens] [--decode]:
// text -> ids as one JSON array line, or with --decode a JSON array of ids -> the text, written
// exactly (no newline added), so that tokenize then tokenize --decode gives back the input.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.h"
#include "core/error.h"
#ifdef VLM2MLA_WITH_TOKENIZER
#include "tokenizer/tokenizer.h"
#endif

namespace vlm2mla::cli {

namespace {
std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VLM2MLA_CHECK(in.good(), IoError, "cannot read --text-file ", path);
  std::ostringstream os;
  os << in.rdbuf();
  VLM2MLA_CHECK(!in.bad(), IoError, "error while reading --text-file ", path);
  return os.str();
}

[[maybe_unused]] std::vector<int64_t> parse_ids(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ArgumentError(detail::concat("--decode expects a JSON array of token ids: ", e.what()));
  }
  VLM2MLA_CHECK(j.is_array(), ArgumentError, "--decode expects a JSON array of token ids, got ",
                j.dump().substr(0, 80));
  std::vector<int64_t> ids;
  for (const auto& v : j) {
    VLM2MLA_CHECK(v.is_number_integer(), ArgumentError,
                  "--decode expects integer token ids, got ", v.dump());
    ids.push_back(v.get<int64_t>());
  }
  return ids;
}
}  // namespace

void register_tokenize(CLI::App& app) {
  struct Args {
    std::string model, text, text_file;
    bool add_special_tokens = false, decode = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Encode text to token ids (one JSON array) with a model's tokenizer.json or "
                  "tokenizer.model, or decode ids back to text");
  cmd->add_option("--model", args->model, "directory with tokenizer.json and/or tokenizer.model")->required();
  auto* text = cmd->add_option("--text", args->text, "the text (with --decode: a JSON array of ids)");
  auto* file = cmd->add_option("--text-file", args->text_file, "read the text from this file");
  text->excludes(file);
  file->excludes(text);
  cmd->add_flag("--add-special-tokens", args->add_special_tokens,
                "apply the post-processor (BOS and the like), as add_special_tokens=True");
  cmd->add_flag("--decode", args->decode, "decode a JSON array of ids (special tokens kept)");
  cmd->callback([args, text, file]() {
    VLM2MLA_CHECK(text->count() + file->count() == 1, ArgumentError,
                  "tokenize needs --text or --text-file");
    const std::string input = file->count() ? read_text_file(args->text_file) : args->text;
#ifndef VLM2MLA_WITH_TOKENIZER
    (void)input;
    throw ArgumentError("this vlm2mla was built without tokenizers (-DVLM2MLA_TOKENIZER=OFF)");
#else
    const Tokenizer tokenizer = Tokenizer::load(args->model);
    if (args->decode) {
      const std::string out = tokenizer.decode(parse_ids(input), /*skip_special_tokens=*/false);
      std::fwrite(out.data(), 1, out.size(), stdout);
      return;
    }
    const std::vector<int64_t> ids = tokenizer.encode(input, args->add_special_tokens);
    std::printf("%s\n", nlohmann::json(ids).dump().c_str());
#endif
  });
}

}  // namespace vlm2mla::cli
