// Parity with transformers 5.17 on Qwen2.5-VL video input: tests/fixtures/vlm/qwen2_5_vl_video, made
// by `python3 scripts/make_video_fixtures.py --out tests/fixtures/vlm/qwen2_5_vl_video` over the tiny
// model of tests/fixtures/vlm/qwen2_5_vl/model. Two rows: an image and a video whose temporal
// positions outrun its spatial ones (row 0, ending with the video's <|vision_end|>: transformers'
// generate continues from its position + 1 = 21, where rope_deltas would say max + 1 = 23), and a
// left-padded row with a second video whose second_per_grid_t truncates to 0.
#include <gtest/gtest.h>

#include "generate/generate.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using testing::max_rel_error;

constexpr double kFp32RelTol = 1e-4;

class VideoParity : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fixtures_dir() + "/vlm/qwen2_5_vl_video";
    model_dir_ = testing::fixtures_dir() + "/vlm/qwen2_5_vl/model";
    ASSERT_TRUE(testing::path_exists(dir_ + "/inputs.safetensors"))
        << dir_ << " is missing: python3 scripts/make_video_fixtures.py --out tests/fixtures/vlm/qwen2_5_vl_video";
    inputs_ = io::read_safetensors(dir_ + "/inputs.safetensors");
    expected_ = io::read_safetensors(dir_ + "/expected.safetensors");
    model_ = Model::load(model_dir_, LoadOptions{at::kFloat, at::Device(at::kCPU)});
    model_->set_attention_backend(AttentionBackend::kReference);
    in_ = ModelInputs::from_tensors(inputs_, dir_);
  }
  std::string dir_, model_dir_;
  std::map<std::string, at::Tensor> inputs_, expected_;
  std::shared_ptr<Model> model_;
  ModelInputs in_;
};

TEST_F(VideoParity, VideoFeaturesMatch) {
  at::Tensor f = model_->video_features(in_);
  ASSERT_EQ(f.sizes(), expected_.at("video_features").sizes());
  EXPECT_LE(max_rel_error(f, expected_.at("video_features")), kFp32RelTol);
}

TEST_F(VideoParity, PositionIdsMatch) {
  Prompt p = model_->prepare(in_, true);
  EXPECT_TRUE(p.position_ids.equal(expected_.at("position_ids")))
      << "ours:\n" << p.position_ids << "\ntransformers:\n" << expected_.at("position_ids");
  // Generation continues from the last position + 1 on each axis (GreedyTokensIdentical checks it
  // against transformers); in row 0 that is below rope_deltas' max + 1, so the fixture tells them apart.
  const int64_t t = in_.input_ids.size(1);
  EXPECT_TRUE(p.next_mrope_position.equal(expected_.at("position_ids").select(2, t - 1) + 1));
  const int64_t valid0 = in_.attention_mask[0].sum().item<int64_t>();
  EXPECT_LT(p.next_mrope_position[0][0].item<int64_t>(), valid0 + expected_.at("rope_deltas")[0][0].item<int64_t>());
}

TEST_F(VideoParity, LogitsMatchTransformersFloat32) {
  at::Tensor logits = model_->logits(in_).to(at::kFloat);
  ASSERT_EQ(logits.sizes(), expected_.at("logits").sizes());
  const double rel = max_rel_error(logits, expected_.at("logits"), inputs_.at("attention_mask"));
  RecordProperty("max_rel_error", std::to_string(rel));
  EXPECT_LE(rel, kFp32RelTol);
}

TEST_F(VideoParity, GreedyTokensIdentical) {
  const int64_t n = expected_.at("generated").size(1) - in_.input_ids.size(1);
  // Both decode forms: dynamic steps, and shape-static ones (positions moved on the device, per axis).
  for (DecodeMode mode : {DecodeMode::kDynamic, DecodeMode::kStatic}) {
    GenerateOptions g = testing::greedy_options(model_dir_, model_->text_config(), n);
    g.decode = mode;
    GenerateResult r = generate(model_->decoder(), model_->prepare(in_, false), g);
    EXPECT_TRUE(r.sequences.equal(expected_.at("generated")))
        << decode_mode_name(mode) << " steps, ours:\n" << r.sequences << "\ntransformers:\n" << expected_.at("generated");
  }
}

// transformers' continuation fed one token at a time through the cache at generate's positions
// (each axis's next position + k), against one forward over prompt + continuation with the same
// positions and the video and image features in place.
TEST_F(VideoParity, IncrementalDecodeAfterVideoEqualsFullForward) {
  at::Tensor seq = expected_.at("generated");
  const int64_t b = seq.size(0), t = in_.input_ids.size(1), total = seq.size(1), n = total - t;
  Prompt p = model_->prepare(in_, false);
  at::Tensor cont = seq.narrow(1, t, n);
  at::Tensor gen_pos = p.next_mrope_position.view({3, b, 1}) + at::arange(n, at::kLong).view({1, 1, n});
  DecoderInput full;
  full.input_ids = seq;
  full.inputs_embeds =
      at::cat({model_->decoder().input_embeddings(p.decoder_input()), model_->decoder().embed(cont)}, 1);
  full.attention_mask = at::cat({p.attention_mask, at::ones({b, n}, at::kLong)}, 1);
  full.position_ids = at::cat({p.position_ids, gen_pos}, -1);
  at::Tensor want = model_->decoder().lm_head(model_->decoder().forward_hidden(full, nullptr));

  DenseKvCache cache = model_->decoder().make_cache(b, 8);
  at::Tensor first = model_->decoder().lm_head(model_->decoder().forward_hidden(p.decoder_input(), &cache));
  EXPECT_LE(max_rel_error(first, want.narrow(1, 0, t), p.attention_mask), 1e-5);
  for (int64_t k = 0; k < n; ++k) {
    DecoderInput s;
    s.input_ids = cont.narrow(1, k, 1);
    s.attention_mask = full.attention_mask.narrow(1, 0, t + k + 1);
    s.position_ids = gen_pos.narrow(-1, k, 1);
    at::Tensor out = model_->decoder().lm_head(model_->decoder().forward_hidden(s, &cache));
    EXPECT_LE(max_rel_error(out, want.narrow(1, t + k, 1)), 1e-5) << "step " << k;
  }
}

TEST_F(VideoParity, CliLogits) {
  testing::TempDir tmp;
  auto r = testing::run_cli({"logits", "--model", model_dir_, "--inputs", dir_ + "/inputs.safetensors", "--out",
                             tmp.file("l.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = io::read_safetensors(tmp.file("l.safetensors"));
  EXPECT_LE(max_rel_error(out["logits"], expected_.at("logits"), inputs_.at("attention_mask")), kFp32RelTol);
}

}  // namespace
}  // namespace vlm2mla
