// Parity with transformers 5.17 on tiny random vision-language models (scripts/make_vlm_fixtures.py):
// LLaVA-1.5 (Hub layout), LLaVA with a list of feature layers and strategy "full" (transformers-5
// layout), LLaVA-NeXT (anyres, transformers-5 layout), Qwen2.5-VL (window attention, M-RoPE, two
// images in one row, Hub layout).
#include <gtest/gtest.h>

#include "core/error.h"
#include "generate/generate.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using testing::max_abs_error;
using testing::max_rel_error;

constexpr double kFp32RelTol = 1e-4;

struct VlmFixture {
  std::string dir, model_dir;
  std::map<std::string, at::Tensor> inputs, expected;
  nlohmann::json meta;
};

VlmFixture load_vlm_fixture(const std::string& name) {
  VlmFixture f;
  f.dir = testing::fixtures_dir() + "/vlm/" + name;
  f.model_dir = f.dir + "/model";
  f.inputs = io::read_safetensors(f.dir + "/inputs.safetensors");
  f.expected = io::read_safetensors(f.dir + "/expected.safetensors");
  f.meta = io::read_json_file(f.dir + "/meta.json");
  return f;
}

class VlmParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    fx_ = load_vlm_fixture(GetParam());
    model_ = Model::load(fx_.model_dir, LoadOptions{at::kFloat, at::Device(at::kCPU)});
    model_->set_attention_backend(AttentionBackend::kReference);
    in_ = ModelInputs::from_tensors(fx_.inputs, fx_.dir);
  }
  GenerateOptions greedy(int64_t n) {
    return testing::greedy_options(fx_.model_dir, model_->text_config(), n);
  }
  VlmFixture fx_;
  std::shared_ptr<Model> model_;
  ModelInputs in_;
};

TEST_P(VlmParity, ImageFeaturesMatch) {
  at::Tensor f = model_->image_features(in_);
  ASSERT_EQ(f.sizes(), fx_.expected.at("image_features").sizes());
  EXPECT_LE(max_rel_error(f, fx_.expected.at("image_features")), kFp32RelTol);
}

// Qwen2.5-VL encodes runs of whole images of a bounded number of patches (QwenVisionTower::forward's
// max_chunk_patches) where transformers encodes all of them as one sequence: one image at a time (a budget
// of one patch) gives transformers' features as well.
TEST_P(VlmParity, ImageFeaturesOneImageAtATime) {
  const QwenVisionTower* tower = model_->qwen_vision();
  if (tower == nullptr) GTEST_SKIP() << "not a Qwen2.5-VL model";
  ASSERT_GE(in_.image_grid_thw.size(0), 2) << "the fixture should hold several images";
  const at::Tensor& want = fx_.expected.at("image_features");
  const at::Tensor whole = tower->forward(in_.pixel_values, in_.image_grid_thw);
  const at::Tensor one = tower->forward(in_.pixel_values, in_.image_grid_thw, QwenVisual::kImage, 1);
  ASSERT_EQ(one.sizes(), want.sizes());
  EXPECT_LE(max_rel_error(one, want), kFp32RelTol);
  EXPECT_LE(max_rel_error(one, whole), kFp32RelTol);
  // the first image's patches as the budget: the first run holds it alone, the rest follow in runs
  const at::Tensor g = in_.image_grid_thw.to(at::kCPU);
  const int64_t first = (g[0][0] * g[0][1] * g[0][2]).item<int64_t>();
  EXPECT_LE(max_rel_error(tower->forward(in_.pixel_values, in_.image_grid_thw, QwenVisual::kImage, first), want),
            kFp32RelTol);
  EXPECT_THROW(tower->forward(in_.pixel_values, in_.image_grid_thw, QwenVisual::kImage, 0), ArgumentError);
}

// A prompt holds its vision features once ([n, d], n image tokens), not its [b, s, d] embeddings: each forward
// embeds its own positions and scatters in the features its image tokens name, so any slice of positions embeds
// as the slice of the whole prompt's embeddings, the image tokens' rows being the tower's features.
TEST_P(VlmParity, PromptEmbeddingsAreMadePerSlice) {
  Prompt p = model_->prepare(in_, false);
  const at::Tensor feats = model_->image_features(in_);
  ASSERT_TRUE(p.features.defined());
  EXPECT_EQ(p.features.sizes(), feats.sizes());
  const DecoderInput whole = p.decoder_input();
  const at::Tensor x = model_->decoder().input_embeddings(whole);  // [b, s, d]
  const at::Tensor is_image = p.input_ids.eq(model_->image_token_id());
  EXPECT_TRUE(at::equal(x.index({is_image}), feats.to(x.scalar_type())));
  const at::Tensor is_text = is_image.logical_not();
  EXPECT_TRUE(at::equal(x.index({is_text}), model_->decoder().embed(p.input_ids).index({is_text})));
  const int64_t s = p.input_ids.size(1);
  for (int64_t from : {int64_t{0}, s / 3, s - 1}) {
    const int64_t n = std::min<int64_t>(5, s - from);
    DecoderInput part;
    part.input_ids = whole.input_ids.narrow(1, from, n);
    part.features = whole.features;
    part.feature_rows = whole.feature_rows.narrow(1, from, n);
    EXPECT_TRUE(at::equal(model_->decoder().input_embeddings(part), x.narrow(1, from, n))) << "from " << from;
  }
  DecoderInput bad = whole;
  bad.feature_rows = whole.feature_rows.narrow(1, 0, s - 1);
  EXPECT_THROW(model_->decoder().input_embeddings(bad), ArgumentError);
  bad.feature_rows = whole.feature_rows.clone().masked_fill(whole.feature_rows.ge(0), p.features.size(0));
  EXPECT_THROW(model_->decoder().input_embeddings(bad), ArgumentError);
}

TEST_P(VlmParity, PositionIdsMatch) {
  if (!fx_.expected.count("position_ids")) GTEST_SKIP() << "1-D RoPE model";
  Prompt p = model_->prepare(in_, true);
  EXPECT_TRUE(p.position_ids.equal(fx_.expected.at("position_ids")))
      << "ours:\n" << p.position_ids << "\ntransformers:\n" << fx_.expected.at("position_ids");
}

TEST_P(VlmParity, LogitsMatchTransformersFloat32) {
  at::Tensor logits = model_->logits(in_).to(at::kFloat);
  ASSERT_EQ(logits.sizes(), fx_.expected.at("logits").sizes());
  const double rel = max_rel_error(logits, fx_.expected.at("logits"), fx_.inputs.at("attention_mask"));
  RecordProperty("max_rel_error", std::to_string(rel));
  EXPECT_LE(rel, kFp32RelTol);
}

TEST_P(VlmParity, GreedyTokensIdentical) {
  GenerateResult r = generate(model_->decoder(), model_->prepare(in_, false), greedy(8));
  EXPECT_TRUE(r.sequences.equal(fx_.expected.at("generated")))
      << "ours:\n" << r.sequences << "\ntransformers:\n" << fx_.expected.at("generated");
}

TEST_P(VlmParity, IncrementalDecodeWithImagesEqualsFullForward) {
  // The greedy continuation fed one token at a time through the cache, against one forward over
  // prompt + continuation (images included) with generate's positions.
  at::Tensor seq = fx_.expected.at("generated");
  const int64_t t = fx_.inputs.at("input_ids").size(1), total = seq.size(1);
  ModelInputs full_in = in_;
  full_in.input_ids = seq;
  full_in.attention_mask = at::cat({in_.attention_mask, at::ones({seq.size(0), total - t}, at::kLong)}, 1);
  Prompt full_prompt = model_->prepare(full_in, false);
  at::Tensor full = model_->decoder().lm_head(
      model_->decoder().forward_hidden(full_prompt.decoder_input(), nullptr));

  Prompt p = model_->prepare(in_, false);
  DenseKvCache cache = model_->decoder().make_cache(seq.size(0), 8);
  at::Tensor mask = full_in.attention_mask;
  at::Tensor step = model_->decoder().lm_head(model_->decoder().forward_hidden(p.decoder_input(), &cache));
  at::Tensor valid = p.attention_mask;
  EXPECT_LE(max_rel_error(step, full.narrow(1, 0, t), valid), 1e-5);
  for (int64_t j = t; j < total; ++j) {
    DecoderInput s;
    s.input_ids = seq.narrow(1, j, 1);
    s.attention_mask = mask.narrow(1, 0, j + 1);
    s.position_ids = full_prompt.position_ids.narrow(-1, j, 1);
    at::Tensor out = model_->decoder().lm_head(model_->decoder().forward_hidden(s, &cache));
    EXPECT_LE(max_rel_error(out, full.narrow(1, j, 1)), 1e-5) << "position " << j;
  }
}

TEST_P(VlmParity, CliLogits) {
  testing::TempDir tmp;
  auto r = testing::run_cli({"logits", "--model", fx_.model_dir, "--inputs",
                             fx_.dir + "/inputs.safetensors", "--out", tmp.file("l.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = io::read_safetensors(tmp.file("l.safetensors"));
  EXPECT_LE(max_rel_error(out["logits"], fx_.expected.at("logits"), fx_.inputs.at("attention_mask")),
            kFp32RelTol);
}

// bfloat16 on CUDA against transformers' float32 logits; bound: 1.5x transformers' own bf16 error
// (meta.json hf_bf16_cuda_vs_fp32_max_abs, measured on the H200).
TEST_P(VlmParity, CudaBfloat16WithinMeasuredTolerance) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  auto gpu = Model::load(fx_.model_dir, LoadOptions{at::kBFloat16, at::Device(at::kCUDA)});
  at::Tensor ours = gpu->logits(in_).to(at::kFloat);
  const double err = max_abs_error(ours, fx_.expected.at("logits"), fx_.inputs.at("attention_mask"));
  const double hf = fx_.meta.value("hf_bf16_cuda_vs_fp32_max_abs", 0.0);
  std::printf("[%s] bf16 cuda: ours vs HF fp32 max abs %.4f (HF bf16 vs fp32 %.4f), ours vs HF bf16 %.4f\n",
              GetParam().c_str(), err, hf,
              max_abs_error(ours, fx_.expected.at("logits_bf16_cuda"), fx_.inputs.at("attention_mask")));
  EXPECT_LE(err, 1.5 * hf);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, VlmParity,
                         ::testing::Values("llava", "llava-layers", "llava-next", "qwen2_5_vl"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (auto& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace vlm2mla
