// Unit tests of the tokenizer.json pipeline on hand-made files: BPE merge order, merge formats,
// ignore_merges, added-token flags, byte fallback and unknown tokens, post-processor, decoders,
// malformed and unsupported files, the CLI's bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace vlm2mla {
namespace {

using nlohmann::json;
using Ids = std::vector<int64_t>;

// A tokenizer.json with a plain (non-byte-level) BPE over the given vocabulary and merges.
json make_json(const json& vocab, const json& merges) {
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder", {{"type", "Fuse"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

Tokenizer load_json(const testing::TempDir& dir, const json& j, const json& config = nullptr) {
  testing::write_bytes(dir.file("tokenizer.json"), j.dump());
  if (!config.is_null()) testing::write_bytes(dir.file("tokenizer_config.json"), config.dump());
  return Tokenizer::load(dir.path());
}

const json kAbcVocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}, {"aa", 6}, {"d", 7}};

TEST(TokenizerBpe, LowestRankMergesFirst) {
  testing::TempDir d1, d2;
  // "b c" ranks before "a b": abc -> a bc -> abc.
  auto t1 = load_json(d1, make_json(kAbcVocab, {"b c", "a b", "a bc"}));
  EXPECT_EQ(t1.encode("abc", false), (Ids{5}));
  EXPECT_EQ(t1.encode("abd", false), (Ids{3, 7}));
  // Without "a bc", the first merge (b c) blocks "a b": a + bc.
  testing::TempDir d3;
  auto t3 = load_json(d3, make_json(kAbcVocab, {"b c", "a b"}));
  EXPECT_EQ(t3.encode("abc", false), (Ids{0, 4}));
  // "a b" first, then "ab c".
  auto t2 = load_json(d2, make_json(kAbcVocab, {"a b", "b c", "ab c"}));
  EXPECT_EQ(t2.encode("abc", false), (Ids{5}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
  testing::TempDir d;
  auto t = load_json(d, make_json(kAbcVocab, {"a a"}));
  EXPECT_EQ(t.encode("aaa", false), (Ids{6, 0}));
  EXPECT_EQ(t.encode("aaaaa", false), (Ids{6, 6, 0}));
}

TEST(TokenizerBpe, MergesAsPairsEqualMergesAsStrings) {
  testing::TempDir d1, d2;
  auto strings = load_json(d1, make_json(kAbcVocab, {"b c", "a bc"}));
  auto pairs = load_json(d2, make_json(kAbcVocab, json::array({{"b", "c"}, {"a", "bc"}})));
  for (const char* text : {"abc", "cab", "bcbca", "abcabc"})
    EXPECT_EQ(strings.encode(text, false), pairs.encode(text, false)) << text;
}

TEST(TokenizerBpe, IgnoreMergesEmitsWholeWordsFoundInTheVocabulary) {
  testing::TempDir d1, d2;
  json j = make_json(kAbcVocab, {"a b"});  // no merge reaches "abc"
  auto plain = load_json(d1, j);
  EXPECT_EQ(plain.encode("abc", false), (Ids{3, 2}));
  j["model"]["ignore_merges"] = true;
  auto ignoring = load_json(d2, j);
  EXPECT_EQ(ignoring.encode("abc", false), (Ids{5}));
  EXPECT_EQ(ignoring.encode("abd", false), (Ids{3, 7}));
}

json added(int64_t id, const std::string& content, bool special, bool lstrip = false,
           bool rstrip = false, bool single_word = false, bool normalized = false) {
  return {{"id", id},         {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
          {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}

json vocab_with_space() {
  json v = kAbcVocab;
  v[" "] = 8;
  v["h"] = 9;
  v["i"] = 10;
  v["x"] = 11;
  v["y"] = 12;
  return v;
}

TEST(TokenizerAddedTokens, MatchedInRawTextLeftmostLongest) {
  testing::TempDir d;
  json j = make_json(vocab_with_space(), json::array());
  j["added_tokens"] = {added(100, "<a>", true), added(101, "<a><b>", true)};
  auto t = load_json(d, j);
  EXPECT_EQ(t.encode("a<a><b>b<a>", false), (Ids{0, 101, 1, 100}));
  EXPECT_EQ(t.token_to_id("<a><b>"), 101);
  EXPECT_EQ(t.id_to_token(100), "<a>");
  EXPECT_TRUE(t.is_special(100));
  EXPECT_EQ(t.decode({0, 101, 1}, false), "a<a><b>b");
  EXPECT_EQ(t.decode({0, 101, 1}, true), "ab");
}

TEST(TokenizerAddedTokens, LstripAndRstripAbsorbWhitespace) {
  testing::TempDir d1, d2, d3;
  json j = make_json(vocab_with_space(), json::array());
  j["added_tokens"] = {added(100, "<x>", true)};
  EXPECT_EQ(load_json(d1, j).encode("a  <x>  b", false), (Ids{0, 8, 8, 100, 8, 8, 1}));
  j["added_tokens"] = {added(100, "<x>", true, /*lstrip=*/true)};
  EXPECT_EQ(load_json(d2, j).encode("a  <x>  b", false), (Ids{0, 100, 8, 8, 1}));
  j["added_tokens"] = {added(100, "<x>", true, false, /*rstrip=*/true)};
  EXPECT_EQ(load_json(d3, j).encode("a  <x>  b", false), (Ids{0, 8, 8, 100, 1}));
}

TEST(TokenizerAddedTokens, SingleWordNeedsNoWordCharacterBeside) {
  testing::TempDir d;
  json j = make_json(vocab_with_space(), json::array());
  j["added_tokens"] = {added(100, "hi", false, false, false, /*single_word=*/true)};
  auto t = load_json(d, j);
  EXPECT_EQ(t.encode("hi a", false), (Ids{100, 8, 0}));
  EXPECT_EQ(t.encode("a hi", false), (Ids{0, 8, 100}));
  EXPECT_EQ(t.encode("ahi", false), (Ids{0, 9, 10}));   // preceded by a letter
  EXPECT_EQ(t.encode("hia", false), (Ids{9, 10, 0}));   // followed by a letter
  EXPECT_EQ(t.encode("hi_", false).front(), 9);          // '_' is a word character
}

TEST(TokenizerAddedTokens, NormalizedTokensMatchAfterTheNormalizer) {
  testing::TempDir d;
  json j = make_json(vocab_with_space(), json::array());
  j["normalizer"] = {{"type", "Lowercase"}};
  // "xy" is matched in the lowercased text; "AB" (normalized=false) only in the raw text.
  j["added_tokens"] = {added(100, "xy", false, false, false, false, /*normalized=*/true),
                       added(101, "AB", true)};
  auto t = load_json(d, j);
  EXPECT_EQ(t.encode("XYab", false), (Ids{100, 0, 1}));
  EXPECT_EQ(t.encode("ABxy", false), (Ids{101, 100}));
  EXPECT_EQ(t.encode("Ab", false), (Ids{0, 1}));
}

// The SentencePiece-style layout of Llama-2's tokenizer.json.
json sentencepiece_style(bool with_bytes) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"\u2581", 3}, {"a", 4}, {"b", 5},
                {"\u2581a", 6}, {"\u2581\u2581", 7}};
  if (with_bytes) {
    vocab["<0xC3>"] = 8;
    vocab["<0xA9>"] = 9;
  }
  json j = make_json(vocab, {"\u2581 a", "\u2581 \u2581"});
  j["added_tokens"] = {added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)};
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                         {"pair", json::array()},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  j["model"]["byte_fallback"] = with_bytes;
  return j;
}

TEST(TokenizerSentencePieceStyle, ByteFallbackAndPrefixSpace) {
  testing::TempDir d;
  auto t = load_json(d, sentencepiece_style(true));
  EXPECT_EQ(t.encode("a", false), (Ids{6}));
  EXPECT_EQ(t.encode(" a", false), (Ids{3, 6}));  // "▁ a" (rank 0) wins over "▁ ▁" (rank 1)
  EXPECT_EQ(t.encode("a\u00e9", false), (Ids{6, 8, 9}));  // é is not in the vocabulary: its bytes
  EXPECT_EQ(t.encode("a\u00e9", true), (Ids{1, 6, 8, 9}));
  EXPECT_EQ(t.decode({6, 8, 9}, false), "a\u00e9");
  EXPECT_EQ(t.decode({6, 8}, false), "a\xEF\xBF\xBD");  // a lone byte decodes to U+FFFD
  EXPECT_EQ(t.decode(t.encode(" a b", false), false), " a b");
  // Every run of text between special tokens gets the prefix (the legacy behaviour).
  EXPECT_EQ(t.encode("a<s>a", false), (Ids{6, 1, 6}));
  EXPECT_EQ(t.bos_id(), std::nullopt);  // no tokenizer_config.json
}

TEST(TokenizerSentencePieceStyle, UnknownCharactersFuseIntoOneUnk) {
  testing::TempDir d;
  auto t = load_json(d, sentencepiece_style(false));
  EXPECT_EQ(t.encode("a\u00e9\u00e9b", false), (Ids{6, 0, 5}));
}

TEST(TokenizerSentencePieceStyle, LlamaTokenizerConfigRebuildsThePostProcessor) {
  testing::TempDir d;
  auto t = load_json(d, sentencepiece_style(true),
                     {{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "<s>"},
                      {"eos_token", {{"content", "</s>"}, {"__type", "AddedToken"}}},
                      {"add_bos_token", true}, {"add_eos_token", true}});
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.encode("a", true), (Ids{1, 6, 2}));
  EXPECT_EQ(t.encode("a", false), (Ids{6}));
}

TEST(TokenizerByteLevel, PrefixSpaceRegexAndDecoder) {
  testing::TempDir d;
  // Byte-level vocabulary: "Ġ" stands for the space byte.
  json vocab = {{"h", 0}, {"i", 1}, {"\u0120", 2}, {"\u0120h", 3}, {"\u0120hi", 4}, {"!", 5}, {"hi", 6}};
  json j = make_json(vocab, {"\u0120 h", "\u0120h i", "h i"});
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  auto t = load_json(d, j);
  EXPECT_EQ(t.encode("hi hi!", false), (Ids{4, 4, 5}));
  EXPECT_EQ(t.decode({4, 4, 5}, false), " hi hi!");
}

// Split behaviours, observed through ignore_merges: a piece found whole in the vocabulary is one id.
TEST(TokenizerPreTokenizers, SplitBehaviors) {
  const json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"-", 3}, {"a-", 4}, {"-b", 5},
                      {"--", 6}, {"b--", 7}, {"--c", 8}, {"-c", 9}, {"b-", 10}};
  auto encode = [&](const char* behavior, bool invert) {
    testing::TempDir d;
    json j = make_json(vocab, json::array());
    j["model"]["ignore_merges"] = true;
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior},
                          {"invert", invert}};
    return load_json(d, j).encode("a-b--c", false);
  };
  EXPECT_EQ(encode("Isolated", false), (Ids{0, 3, 1, 3, 3, 2}));
  EXPECT_EQ(encode("Removed", false), (Ids{0, 1, 2}));
  EXPECT_EQ(encode("MergedWithPrevious", false), (Ids{4, 10, 3, 2}));
  EXPECT_EQ(encode("MergedWithNext", false), (Ids{0, 5, 3, 9}));
  EXPECT_EQ(encode("Contiguous", false), (Ids{0, 3, 1, 6, 2}));
  EXPECT_EQ(encode("Isolated", true), (Ids{0, 3, 1, 3, 3, 2}));
  EXPECT_EQ(encode("Removed", true), (Ids{3, 3, 3}));
}

// Metaspace (newer Llama/Mistral files): prepend_scheme "first" prepends only at the start of the
// text, not after a special token; "always" prepends to every run; the decoder drops the first
// token's "▁".
TEST(TokenizerPreTokenizers, MetaspacePrependSchemes) {
  const json vocab = {{"\u2581a", 0}, {"\u2581b", 1}, {"a", 2}, {"b", 3}, {"\u2581", 4}, {"<s>", 5}};
  auto load = [&](const testing::TempDir& d, const char* scheme) {
    json j = make_json(vocab, {"\u2581 a", "\u2581 b"});
    j["added_tokens"] = {added(5, "<s>", true)};
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme},
                          {"split", true}};
    j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme},
                    {"split", true}};
    return load_json(d, j);
  };
  testing::TempDir d1, d2;
  auto first = load(d1, "first");
  EXPECT_EQ(first.encode("a b", false), (Ids{0, 1}));
  EXPECT_EQ(first.encode("<s>a b", false), (Ids{5, 2, 1}));
  EXPECT_EQ(first.decode({0, 1}, false), "a b");
  auto always = load(d2, "always");
  EXPECT_EQ(always.encode("<s>a b", false), (Ids{5, 0, 1}));
}

TEST(TokenizerErrors, MissingAndMalformedFiles) {
  testing::TempDir d;
  EXPECT_THROW(Tokenizer::load(d.file("absent")), IoError);
  try {
    Tokenizer::load(d.path());
    FAIL() << "an empty directory loaded";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("neither tokenizer.json nor tokenizer.model"), std::string::npos);
  }
  testing::write_bytes(d.file("tokenizer.json"), "{\"model\": ");
  EXPECT_THROW(Tokenizer::load(d.path()), FormatError);
}

void expect_format_error(const json& j, const std::string& needle) {
  testing::TempDir d;
  testing::write_bytes(d.file("tokenizer.json"), j.dump());
  try {
    Tokenizer::load(d.path());
    FAIL() << "loaded; expected an error mentioning " << needle;
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  }
}

TEST(TokenizerErrors, UnsupportedComponentsAreNamed) {
  json j = make_json(kAbcVocab, json::array());
  j["model"]["type"] = "WordPiece";
  expect_format_error(j, "WordPiece");
  j = make_json(kAbcVocab, json::array());
  j["normalizer"] = {{"type", "BertNormalizer"}};
  expect_format_error(j, "normalizer \"BertNormalizer\"");
  j = make_json(kAbcVocab, json::array());
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespace"}}}}};
  expect_format_error(j, "pre_tokenizer \"Whitespace\"");
  j = make_json(kAbcVocab, json::array());
  j["decoder"] = {{"type", "WordPiece"}};
  expect_format_error(j, "decoder \"WordPiece\"");
  j = make_json(kAbcVocab, {"a z"});
  expect_format_error(j, "merge 0");
  j = make_json(kAbcVocab, {"abc"});
  expect_format_error(j, "merge 0");
  j = make_json(kAbcVocab, json::array());
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_format_error(j, "does not compile");
}

TEST(TokenizerErrors, DecodeOutsideTheVocabularyAndInvalidUtf8) {
  testing::TempDir d;
  auto t = load_json(d, make_json(kAbcVocab, json::array()));
  EXPECT_THROW(t.decode({0, 99}, false), ArgumentError);
  EXPECT_THROW(t.decode({-1}, false), ArgumentError);
  EXPECT_THROW(t.id_to_token(99), ArgumentError);
  EXPECT_THROW(t.encode("a\xff", false), ArgumentError);
  EXPECT_EQ(t.vocab_size(), 8);
}

TEST(TokenizerCli, BadInputIsAnErrorNamingTheProblem) {
  testing::TempDir d;
  auto r = testing::run_cli({"tokenize", "--model", d.path(), "--text", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("neither tokenizer.json nor tokenizer.model"), std::string::npos) << r.err;

  load_json(d, make_json(kAbcVocab, {"a b"}));
  r = testing::run_cli({"tokenize", "--model", d.path(), "--text", "abc"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[3,2]\n");
  r = testing::run_cli({"tokenize", "--model", d.path(), "--decode", "--text", "[3,2]"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "abc");
  r = testing::run_cli({"tokenize", "--model", d.path(), "--decode", "--text", "[3,200]"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("token id 200 is not in the vocabulary"), std::string::npos) << r.err;
  r = testing::run_cli({"tokenize", "--model", d.path(), "--decode", "--text", "not json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("JSON array"), std::string::npos) << r.err;
  r = testing::run_cli({"tokenize", "--model", d.path()});
  EXPECT_NE(r.exit_code, 0);
  r = testing::run_cli({"tokenize", "--model", d.path(), "--text-file", d.file("absent.txt")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("absent.txt"), std::string::npos) << r.err;

  json bad = make_json(kAbcVocab, json::array());
  bad["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  testing::write_bytes(d.file("tokenizer.json"), bad.dump());
  r = testing::run_cli({"tokenize", "--model", d.path(), "--text", "abc"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("BertPreTokenizer"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vlm2mla
