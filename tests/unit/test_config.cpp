// config.json parsing: both layouts (Hub 4.x and transformers 5), defaults, and clear errors.
#include <gtest/gtest.h>

#include "core/error.h"
#include "models/text_config.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using nlohmann::json;

json llama3_hub() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": false,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})");
}

json llama3_v5() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "max_position_embeddings": 131072, "tie_word_embeddings": false,
    "rope_parameters": {"rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                        "rope_type": "llama3"},
    "dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})");
}

void expect_same(const TextConfig& a, const TextConfig& b) {
  EXPECT_EQ(text_config_to_json(a), text_config_to_json(b));
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
}

TEST(TextConfig, HubAndTransformers5LayoutsAgree) {
  TextConfig hub = parse_text_config(llama3_hub(), "hub.json");
  TextConfig v5 = parse_text_config(llama3_v5(), "v5.json");
  expect_same(hub, v5);
  EXPECT_EQ(hub.arch, ArchId::kLlama);
  EXPECT_EQ(hub.head_dim, 128);
  EXPECT_EQ(hub.num_key_value_groups(), 4);
  EXPECT_EQ(hub.rope.rope_type, RopeType::kLlama3);
  EXPECT_EQ(hub.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(hub.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(hub.qkv_bias);
}

TEST(TextConfig, NestedTextConfigIsRead) {
  json root = {{"architectures", {"LlamaForCausalLM"}}, {"text_config", llama3_v5()}};
  root["text_config"].erase("architectures");
  expect_same(parse_text_config(root, "nested.json"), parse_text_config(llama3_v5(), "v5.json"));
}

TEST(TextConfig, Qwen2DefaultsAndBias) {
  json q = json::parse(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896,
    "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "rope_theta": 1000000.0,
    "tie_word_embeddings": true, "use_sliding_window": false, "sliding_window": 32768,
    "max_window_layers": 24, "rope_scaling": null, "rms_norm_eps": 1e-06})");
  TextConfig c = parse_text_config(q, "qwen.json");
  EXPECT_EQ(c.arch, ArchId::kQwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope.rope_type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c.rope.rope_theta, 1e6);
}

TEST(TextConfig, OldLinearScalingSpelling) {
  json c = llama3_hub();
  c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  TextConfig t = parse_text_config(c, "lin.json");
  EXPECT_EQ(t.rope.rope_type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(t.rope.factor, 2.0);
}

template <typename E>
void expect_error(const json& j, const std::vector<std::string>& parts) {
  try {
    parse_text_config(j, "cfg/config.json");
    FAIL() << "expected an error mentioning " << parts.front();
  } catch (const E& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(TextConfig, MissingKeyIsNamed) {
  json c = llama3_hub();
  c.erase("hidden_size");
  expect_error<FormatError>(c, {"cfg/config.json", "hidden_size", "missing"});
}

TEST(TextConfig, WrongTypeIsNamed) {
  json c = llama3_hub();
  c["num_hidden_layers"] = "32";
  expect_error<FormatError>(c, {"num_hidden_layers", "integer", "string"});
}

TEST(TextConfig, UnsupportedArchitectureListsSupported) {
  json c = llama3_hub();
  c["architectures"] = {"MambaForCausalLM"};
  expect_error<ArgumentError>(c, {"MambaForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM"});
}

TEST(TextConfig, UnsupportedRopeTypeAndSlidingWindow) {
  json c = llama3_hub();
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_error<ArgumentError>(c, {"yarn", "supported"});
  json q = llama3_hub();
  q["architectures"] = {"Qwen2ForCausalLM"};
  q["use_sliding_window"] = true;
  expect_error<ArgumentError>(q, {"sliding"});
}

TEST(TextConfig, InconsistentHeadsRejected) {
  json c = llama3_hub();
  c["num_key_value_heads"] = 5;
  expect_error<FormatError>(c, {"num_key_value_heads", "multiple"});
  json d = llama3_hub();
  d["rope_scaling"].erase("original_max_position_embeddings");
  expect_error<FormatError>(d, {"original_max_position_embeddings"});
}

TEST(TextConfig, FixtureConfigsLoad) {
  for (const auto& name : testing::text_fixture_names()) {
    TextConfig c = load_text_config(testing::fixtures_dir() + "/text/" + name + "/model");
    EXPECT_EQ(c.hidden_size, 64) << name;
  }
}

}  // namespace
}  // namespace vlm2mla
