// The tokenizer.model path. A tiny BPE model is trained at test time with SentencePieceTrainer
// (through the SentencePiece plugin) into a TempDir; the expected ids are what transformers' slow
// LlamaTokenizer (legacy=True) computes: special tokens written in the text are split out, each
// other run is encoded by SentencePiece on its own (with its dummy-prefix "▁"), and
// add_special_tokens puts BOS in front (add_bos_token, default true) and EOS at the end
// (add_eos_token, default false). Those reference ids are computed here with SentencePiece itself.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "support/test_support.h"
#include "tokenizer/sentencepiece_shim.h"
#include "tokenizer/tokenizer.h"

namespace vlm2mla {
namespace {

using Ids = std::vector<int64_t>;

// Trains DIR/tokenizer.model: BPE, byte fallback, identity normalization (as Llama's model),
// unk 0, bos 1, eos 2.
void train_tiny_model(const testing::TempDir& dir) {
  std::string corpus;
  const char* lines[] = {"the quick brown fox jumps over the lazy dog",
                         "hello world, hello tokenizer, hello sentencepiece",
                         "numbers 0123456789 and more numbers 42 17 2026",
                         "a b c d e f g h i j k l m n o p q r s t u v w x y z",
                         "Mixing CASE and punctuation: yes! no? maybe..."};
  for (int rep = 0; rep < 40; ++rep)
    for (const char* l : lines) corpus += std::string(l) + " " + std::to_string(rep) + "\n";
  testing::write_bytes(dir.file("corpus.txt"), corpus);
  std::string error;
  const bool ok = tok::spm_api().train(
      "--input=" + dir.file("corpus.txt") + " --model_prefix=" + dir.file("tokenizer") +
          " --vocab_size=400 --model_type=bpe --byte_fallback=true --character_coverage=1.0"
          " --normalization_rule_name=identity --remove_extra_whitespaces=false"
          " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --minloglevel=3",
      &error);
  ASSERT_TRUE(ok) << error;
}

// SentencePiece's own ids for a piece of text (the per-run reference).
Ids sp_encode(const std::string& model, const std::string& text) {
  const auto& api = tok::spm_api();
  std::string error;
  void* m = api.load(model, &error);
  EXPECT_NE(m, nullptr) << error;
  std::vector<int> ids;
  EXPECT_TRUE(api.encode(m, text, &ids, &error)) << error;
  api.free_model(m);
  return Ids(ids.begin(), ids.end());
}

Ids cat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(TokenizerSentencePiece, MatchesLegacyLlamaTokenizerConventions) {
  testing::TempDir dir;
  train_tiny_model(dir);
  if (HasFatalFailure()) return;
  const std::string model = dir.file("tokenizer.model");
  const Tokenizer t = Tokenizer::load(dir.path());
  EXPECT_EQ(t.kind(), "sentencepiece");
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.vocab_size(), 400);

  const std::string text = "hello world, the quick fox";
  const Ids plain = t.encode(text, false);
  EXPECT_EQ(plain, sp_encode(model, text));
  ASSERT_FALSE(plain.empty());
  // The dummy prefix: the first piece starts with "▁".
  EXPECT_EQ(t.id_to_token(plain[0]).rfind("\xE2\x96\x81", 0), 0u) << t.id_to_token(plain[0]);
  EXPECT_EQ(t.encode(text, true), cat({{1}, plain}));
  EXPECT_EQ(t.decode(plain, false), text);
  EXPECT_EQ(t.decode(cat({{1}, plain}), true), text);

  // Special tokens in the text are split out; each run gets its own dummy prefix (legacy).
  const Ids with_special = t.encode("hello<s>world </s>", false);
  EXPECT_EQ(with_special, cat({sp_encode(model, "hello"), {1}, sp_encode(model, "world "), {2}}));
  EXPECT_EQ(t.decode(with_special, false), "hello<s>world </s>");

  // Characters outside the vocabulary fall back to byte pieces and decode back exactly.
  const std::string unseen = "\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 caf\xC3\xA9";
  const Ids unseen_ids = t.encode(unseen, false);
  EXPECT_EQ(unseen_ids, sp_encode(model, unseen));
  EXPECT_EQ(t.id_to_token(unseen_ids[1]).substr(0, 3), "<0x");
  EXPECT_EQ(t.decode(unseen_ids, false), unseen);
  EXPECT_THROW(t.decode({400}, false), ArgumentError);
}

TEST(TokenizerSentencePiece, TokenizerConfigAddsEos) {
  testing::TempDir dir;
  train_tiny_model(dir);
  if (HasFatalFailure()) return;
  testing::write_bytes(dir.file("tokenizer_config.json"),
                       R"({"add_bos_token": false, "add_eos_token": true, "bos_token": "<s>",
                           "eos_token": {"content": "</s>", "__type": "AddedToken"}})");
  const Tokenizer t = Tokenizer::load(dir.path());
  const Ids plain = t.encode("hello", false);
  EXPECT_EQ(t.encode("hello", true), cat({plain, {2}}));
}

// The CLI loads the plugin from beside the executable and round-trips through it.
TEST(TokenizerSentencePiece, CliEncodesAndDecodes) {
  testing::TempDir dir;
  train_tiny_model(dir);
  if (HasFatalFailure()) return;
  const std::string text = "hello <s>world\tCASE 42 \xE6\x97\xA5";
  const Tokenizer t = Tokenizer::load(dir.path());
  auto enc = testing::run_cli({"tokenize", "--model", dir.path(), "--text", text, "--add-special-tokens"});
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  EXPECT_EQ(nlohmann::json::parse(enc.out).get<Ids>(), t.encode(text, true));
  enc = testing::run_cli({"tokenize", "--model", dir.path(), "--text", text});
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  const auto dec = testing::run_cli({"tokenize", "--model", dir.path(), "--decode", "--text", enc.out});
  ASSERT_EQ(dec.exit_code, 0) << dec.err;
  EXPECT_EQ(dec.out, text);
}

TEST(TokenizerSentencePiece, MalformedModelIsAFormatError) {
  testing::TempDir dir;
  testing::write_bytes(dir.file("tokenizer.model"), "this is not a protobuf");
  try {
    Tokenizer::load(dir.path());
    FAIL() << "a malformed tokenizer.model loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vlm2mla
