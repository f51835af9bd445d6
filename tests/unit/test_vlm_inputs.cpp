// Vision-language configs as published, and inputs that do not fit the model.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

std::string config_path(const std::string& name) {
  return testing::fixtures_dir() + "/../../configs/" + name;
}

TEST(VlmConfig, PublishedLlava15ReliesOnLlamaDefaults) {
  nlohmann::json root = io::read_json_file(config_path("llava-1.5-7b.json"));
  TextConfig t = parse_text_config(root, "llava-1.5-7b.json");
  EXPECT_EQ(t.model_arch, ArchId::kLlava);
  EXPECT_EQ(t.arch, ArchId::kLlama);
  EXPECT_EQ(t.hidden_size, 4096);  // LlamaConfig defaults fill what the Hub config omits
  EXPECT_EQ(t.num_hidden_layers, 32);
  EXPECT_EQ(t.intermediate_size, 11008);
  EXPECT_EQ(t.vocab_size, 32064);
  EXPECT_EQ(t.num_key_value_heads, 32);
  LlavaConfig l = parse_llava_config(root, "llava-1.5-7b.json", false);
  EXPECT_EQ(l.vision.hidden_size, 1024);
  EXPECT_EQ(l.vision.num_hidden_layers, 24);
  EXPECT_EQ(l.vision.num_patches(), 576);
  EXPECT_EQ(l.vision.hidden_act, "quick_gelu");
  EXPECT_EQ(l.image_token_id, 32000);
  EXPECT_EQ(l.vision_feature_layers, std::vector<int64_t>{-2});
}

TEST(VlmConfig, PublishedQwen25VL) {
  nlohmann::json root = io::read_json_file(config_path("qwen2.5-vl-7b.json"));
  TextConfig t = parse_text_config(root, "qwen2.5-vl-7b.json");
  EXPECT_EQ(t.model_arch, ArchId::kQwen2_5_VL);
  EXPECT_EQ(t.arch, ArchId::kQwen2);
  EXPECT_EQ(t.rope.mrope_section, (std::vector<int64_t>{16, 24, 24}));
  EXPECT_EQ(t.head_dim, 128);
  EXPECT_TRUE(t.qkv_bias);
  QwenVisionConfig v = parse_qwen_vision_config(root, "qwen2.5-vl-7b.json");
  EXPECT_EQ(v.depth, 32);
  EXPECT_EQ(v.head_dim(), 80);
  EXPECT_EQ(v.patch_dim(), 3 * 2 * 14 * 14);
  EXPECT_EQ(v.fullatt_block_indexes, (std::vector<int64_t>{7, 15, 23, 31}));
  EXPECT_EQ(v.image_token_id, 151655);
  root["rope_scaling"]["mrope_section"] = {16, 24, 20};
  EXPECT_THROW(parse_text_config(root, "bad.json"), FormatError);
}

class VlmBadInputs : public ::testing::Test {
 protected:
  std::shared_ptr<Model> load(const std::string& name, std::map<std::string, at::Tensor>* inputs) {
    const std::string dir = testing::fixtures_dir() + "/vlm/" + name;
    *inputs = io::read_safetensors(dir + "/inputs.safetensors");
    return Model::load(dir + "/model", LoadOptions{});
  }
  std::string error_of(const Model& m, const std::map<std::string, at::Tensor>& t) {
    try {
      m.logits(ModelInputs::from_tensors(t, "in.safetensors"));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(VlmBadInputs, ImageTokensNotMatchingImages) {
  std::map<std::string, at::Tensor> t;
  auto m = load("llava", &t);
  at::Tensor ids = t["input_ids"].clone();
  at::Tensor first = ids.eq(319).nonzero()[0];
  ids[first[0].item<int64_t>()][first[1].item<int64_t>()] = 5;  // one image token fewer
  t["input_ids"] = ids;
  std::string err = error_of(*m, t);
  EXPECT_NE(err.find("31 image tokens"), std::string::npos) << err;
  EXPECT_NE(err.find("32 image features"), std::string::npos) << err;
  t.erase("pixel_values");
  EXPECT_NE(error_of(*m, t).find("no pixel_values"), std::string::npos);
}

TEST_F(VlmBadInputs, QwenGridNotMatchingTokens) {
  std::map<std::string, at::Tensor> t;
  auto m = load("qwen2_5_vl", &t);
  at::Tensor grid = t["image_grid_thw"].clone();
  grid[1][1] = 4;  // 6x4 -> 4x4 patches: pixel_values no longer fit
  t["image_grid_thw"] = grid;
  EXPECT_NE(error_of(*m, t).find("pixel_values has shape"), std::string::npos) << error_of(*m, t);
  t.erase("image_grid_thw");
  EXPECT_NE(error_of(*m, t).find("image_grid_thw"), std::string::npos);
}

TEST_F(VlmBadInputs, NextWithoutImageSizes) {
  std::map<std::string, at::Tensor> t;
  auto m = load("llava-next", &t);
  t.erase("image_sizes");
  EXPECT_NE(error_of(*m, t).find("image_sizes"), std::string::npos) << error_of(*m, t);
}

TEST_F(VlmBadInputs, PixelValuesForATextModel) {
  auto m = Model::load(testing::fixtures_dir() + "/text/qwen2/model", LoadOptions{});
  std::map<std::string, at::Tensor> t = io::read_safetensors(testing::fixtures_dir() + "/text/qwen2/inputs.safetensors");
  t["pixel_values"] = at::zeros({1, 3, 4, 4});
  EXPECT_NE(error_of(*m, t).find("text-only"), std::string::npos) << error_of(*m, t);
}

}  // namespace
}  // namespace vlm2mla
