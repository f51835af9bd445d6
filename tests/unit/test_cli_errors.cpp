// Bad input through the CLI: a clear "error: ..." naming the culprit, a non-zero exit, never a crash,
// and no half-written output file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/torch_compat.h"
#include "core/fs.h"
#include "io/safetensors.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using testing::CliResult;
using testing::run_cli;
using testing::TempDir;

const std::string kQwen = testing::fixtures_dir() + "/text/qwen2";

void expect_error(const CliResult& r, const std::vector<std::string>& parts) {
  EXPECT_FALSE(r.crashed) << "crashed; stderr: " << r.err;
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "missing '" << p << "' in: " << r.err;
}

// A model directory with the qwen2 fixture's config and the given weights file bytes.
std::string model_with_weights(const TempDir& dir, const std::string& bytes) {
  fs::copy_file(kQwen + "/model/config.json", dir.file("config.json"));
  testing::write_bytes(dir.file("model.safetensors"), bytes);
  return dir.path();
}

// header JSON + data bytes -> safetensors bytes
std::string st_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

CliResult logits_on(const std::string& model, const std::string& out) {
  return run_cli({"logits", "--model", model, "--inputs", kQwen + "/inputs.safetensors", "--out", out});
}

TEST(CliErrors, TruncatedWeights) {
  TempDir d;
  std::string good = testing::read_bytes(kQwen + "/model/model.safetensors");
  auto r = logits_on(model_with_weights(d, good.substr(0, good.size() / 2)), d.file("o.safetensors"));
  expect_error(r, {"model.safetensors"});
  EXPECT_FALSE(fs::exists(d.file("o.safetensors")));
  TempDir d2;
  expect_error(logits_on(model_with_weights(d2, "abc"), d2.file("o")), {"model.safetensors"});
}

TEST(CliErrors, HeaderLengthBeyondFile) {
  TempDir d;
  std::string bytes = st_bytes("{}", "");
  bytes[0] = '\xff';
  bytes[3] = '\x7f';
  expect_error(logits_on(model_with_weights(d, bytes), d.file("o")), {"model.safetensors", "header"});
}

TEST(CliErrors, MalformedHeaderJson) {
  TempDir d;
  expect_error(logits_on(model_with_weights(d, st_bytes("{\"a\": [1,", "")), d.file("o")),
               {"model.safetensors"});
}

TEST(CliErrors, OffsetsOutOfRange) {
  TempDir d;
  std::string h = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8000]}})";
  expect_error(logits_on(model_with_weights(d, st_bytes(h, std::string(8, '\0'))), d.file("o")),
               {"model.safetensors", "x"});
}

TEST(CliErrors, OverlappingOffsets) {
  TempDir d;
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_error(logits_on(model_with_weights(d, st_bytes(h, std::string(12, '\0'))), d.file("o")),
               {"model.safetensors", "overlap"});
}

TEST(CliErrors, ByteSizeNotMatchingDtypeAndShape) {
  TempDir d;
  std::string h = R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  expect_error(logits_on(model_with_weights(d, st_bytes(h, std::string(8, '\0'))), d.file("o")),
               {"model.safetensors", "a"});
}

TEST(CliErrors, MissingConfigKey) {
  TempDir d;
  std::string cfg = testing::read_bytes(kQwen + "/model/config.json");
  auto j = nlohmann::json::parse(cfg);
  j.erase("num_attention_heads");
  testing::write_bytes(d.file("config.json"), j.dump());
  fs::copy_file(kQwen + "/model/model.safetensors", d.file("model.safetensors"));
  expect_error(logits_on(d.path(), d.file("o")), {"config.json", "num_attention_heads"});
  auto r = run_cli({"inspect", "--model", d.path()});
  expect_error(r, {"num_attention_heads"});
}

TEST(CliErrors, UnsupportedArchitecture) {
  TempDir d;
  auto j = nlohmann::json::parse(testing::read_bytes(kQwen + "/model/config.json"));
  j["architectures"] = {"GPT2LMHeadModel"};
  testing::write_bytes(d.file("config.json"), j.dump());
  fs::copy_file(kQwen + "/model/model.safetensors", d.file("model.safetensors"));
  expect_error(logits_on(d.path(), d.file("o")), {"GPT2LMHeadModel", "supported"});
}

TEST(CliErrors, MissingModelDirectoryAndConfig) {
  TempDir d;
  expect_error(logits_on(d.file("nope"), d.file("o")), {"nope"});
  expect_error(logits_on(d.path(), d.file("o")), {"config.json"});
}

TEST(CliErrors, TokenIdsOutsideVocabulary) {
  TempDir d;
  at::Tensor ids = at::tensor({1, 2, 999}, at::kLong).view({1, 3});
  io::write_safetensors(d.file("in.safetensors"), {{"input_ids", ids}});
  auto r = run_cli({"logits", "--model", kQwen + "/model", "--inputs", d.file("in.safetensors"),
                    "--out", d.file("o")});
  expect_error(r, {"token id 999", "[0, 2]", "vocabulary"});
  r = run_cli({"generate", "--model", kQwen + "/model", "--inputs", d.file("in.safetensors"),
               "--max-new-tokens", "2", "--greedy"});
  expect_error(r, {"token id 999"});
}

TEST(CliErrors, BadInputsFile) {
  TempDir d;
  io::write_safetensors(d.file("in.safetensors"), {{"tokens", at::zeros({1, 3}, at::kLong)}});
  auto r = run_cli({"logits", "--model", kQwen + "/model", "--inputs", d.file("in.safetensors"),
                    "--out", d.file("o")});
  expect_error(r, {"in.safetensors", "input_ids"});
  io::write_safetensors(d.file("f.safetensors"), {{"input_ids", at::zeros({1, 3}, at::kFloat)}});
  r = run_cli({"logits", "--model", kQwen + "/model", "--inputs", d.file("f.safetensors"),
               "--out", d.file("o")});
  expect_error(r, {"input_ids", "integer"});
}

TEST(CliErrors, BadFlags) {
  TempDir d;
  auto r = run_cli({"logits", "--model", kQwen + "/model", "--inputs", kQwen + "/inputs.safetensors",
                    "--out", d.file("o"), "--dtype", "float8"});
  expect_error(r, {"--dtype", "float8"});
  if (!at::hasCUDA()) {
    r = run_cli({"logits", "--model", kQwen + "/model", "--inputs", kQwen + "/inputs.safetensors",
                 "--out", d.file("o"), "--device", "cuda"});
    expect_error(r, {"--device", "cuda"});
  }
  r = run_cli({"logits", "--inputs", "x"});  // usage error: missing --model
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.crashed);
  EXPECT_NE(r.err.find("--model"), std::string::npos) << r.err;
}

TEST(CliErrors, InspectReportsWhatIsThere) {
  auto r = run_cli({"inspect", "--model", kQwen + "/model", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "Qwen2ForCausalLM");
  EXPECT_EQ(j["kv_bytes_per_token"], 2 * 2 * 2 * 16 * 2);  // K+V, 2 layers, 2 kv heads, d_h 16, bf16
  EXPECT_EQ(j["parameters"].get<int64_t>(), j["stored_dtypes"]["BF16"].get<int64_t>());
  EXPECT_EQ(j["config"]["num_key_value_heads"], 2);
}

}  // namespace
}  // namespace vlm2mla
