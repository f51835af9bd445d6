// Qwen2.5-VL video input without the transformers fixture: M-RoPE positions against tables written
// by hand from transformers 5.17's get_rope_index (temporal index = start + t * tokens_per_second *
// int(second_per_grid_t); the text after a video resumes at start + max(h, w) / merge; generate
// continues each axis from the prompt's last position + 1), the vision tower on a video of identical frame groups against the same
// pixels as an image, incremental decode after a video prompt against the full forward, and the
// errors for inputs that do not fit.
#include <gtest/gtest.h>

#include "core/error.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

using testing::max_rel_error;

constexpr int64_t kImg = 300, kVid = 301, kStart = 302, kEnd = 303;

QwenVisionConfig rope_config() {
  QwenVisionConfig c;
  c.spatial_merge_size = 2;
  c.tokens_per_second = 2;
  c.image_token_id = kImg;
  c.video_token_id = kVid;
  return c;
}

at::Tensor ids_of(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong).unsqueeze(0); }

std::vector<int64_t> next_of(const QwenRopeIndex& r, int64_t row = 0) {
  return {r.next_position[0][row].item<int64_t>(), r.next_position[1][row].item<int64_t>(),
          r.next_position[2][row].item<int64_t>()};
}

std::vector<int64_t> axis(const QwenRopeIndex& r, int64_t a, int64_t row = 0) {
  at::Tensor x = r.position_ids[a][row].contiguous();
  return std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
}

std::vector<int64_t> with_video(int64_t n) {  // 5 6 <vs> video*n <ve> 7
  std::vector<int64_t> v = {5, 6, kStart};
  v.insert(v.end(), static_cast<size_t>(n), kVid);
  v.insert(v.end(), {kEnd, 7});
  return v;
}

// A video of grid (2, 4, 4): 2 frame groups of 2x2 merged tokens, 2 seconds per group ->
// interval 2 * 2 = 4. Written out from the formula, token by token.
TEST(VideoRopeIndex, HandTableTwoFrameGroups) {
  const at::Tensor grid = at::tensor({2, 4, 4}, at::kLong).view({1, 3});
  QwenRopeIndex r = qwen_rope_index(rope_config(), ids_of(with_video(8)), {}, {}, grid, at::tensor({2.0f}));
  //                                       5  6 vs | t0: 4 tokens | t1: 4 tokens | ve 7
  EXPECT_EQ(axis(r, 0), (std::vector<int64_t>{0, 1, 2, 3, 3, 3, 3, 7, 7, 7, 7, 5, 6}));
  EXPECT_EQ(axis(r, 1), (std::vector<int64_t>{0, 1, 2, 3, 3, 4, 4, 3, 3, 4, 4, 5, 6}));
  EXPECT_EQ(axis(r, 2), (std::vector<int64_t>{0, 1, 2, 3, 4, 3, 4, 3, 4, 3, 4, 5, 6}));
  // The last token's position + 1, although the video's temporal 7 is larger (rope_deltas would say 8).
  EXPECT_EQ(next_of(r), (std::vector<int64_t>{7, 7, 7}));

  // No second_per_grid_ts: 1 second per group -> interval tokens_per_second = 2.
  r = qwen_rope_index(rope_config(), ids_of(with_video(8)), {}, {}, grid);
  EXPECT_EQ(axis(r, 0), (std::vector<int64_t>{0, 1, 2, 3, 3, 3, 3, 5, 5, 5, 5, 5, 6}));
  EXPECT_EQ(next_of(r), (std::vector<int64_t>{7, 7, 7}));
  // 0.9 s per group: Python's int() truncates to 0, so both groups share one temporal position.
  r = qwen_rope_index(rope_config(), ids_of(with_video(8)), {}, {}, grid, at::tensor({0.9f}));
  EXPECT_EQ(axis(r, 0), (std::vector<int64_t>{0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 5, 6}));
  EXPECT_EQ(axis(r, 1), (std::vector<int64_t>{0, 1, 2, 3, 3, 4, 4, 3, 3, 4, 4, 5, 6}));

  // A prompt that ends inside the video (no <|vision_end|>): each axis continues from the last
  // video token (t 3 + 4, h 3 + 1, w 3 + 1) + 1.
  std::vector<int64_t> open = with_video(8);
  open.resize(open.size() - 2);
  r = qwen_rope_index(rope_config(), ids_of(open), {}, {}, grid, at::tensor({2.0f}));
  EXPECT_EQ(next_of(r), (std::vector<int64_t>{8, 5, 5}));
}

// One frame group (t = 1): the interval never applies, so a video takes exactly the positions an
// image of the same grid takes.
TEST(VideoRopeIndex, OneFrameGroupVideoIsPlacedLikeAnImage) {
  const at::Tensor grid = at::tensor({1, 4, 6}, at::kLong).view({1, 3});
  std::vector<int64_t> video = with_video(6), image = with_video(6);
  for (auto& id : image) id = id == kVid ? kImg : id;
  QwenRopeIndex v = qwen_rope_index(rope_config(), ids_of(video), {}, {}, grid, at::tensor({5.0f}));
  QwenRopeIndex i = qwen_rope_index(rope_config(), ids_of(image), {}, grid);
  EXPECT_TRUE(v.position_ids.equal(i.position_ids));
  EXPECT_TRUE(v.next_position.equal(i.next_position));
}

// Two rows, row 0 left-padded, an image and two videos: grids and second_per_grid_ts are consumed
// in order over the batch (row 0's video is video 0, row 1's is video 1).
TEST(VideoRopeIndex, BatchWithPaddingImageAndTwoVideos) {
  // row 0: pad 5 <vs> img*4 <ve> <vs> vid*4 <ve>     row 1: 5 <vs> vid*8 <ve> 6 7 8 9 10
  std::vector<int64_t> r0 = {0, 0, 0, 0, 0, 5, kStart, kImg, kImg, kImg, kImg, kEnd, kStart, kVid, kVid, kVid, kVid, kEnd};
  std::vector<int64_t> r1 = {5, kStart, kVid, kVid, kVid, kVid, kVid, kVid, kVid, kVid, kEnd, 6, 7, 8, 9, 10, 11, 12};
  at::Tensor ids = at::stack({at::tensor(r0, at::kLong), at::tensor(r1, at::kLong)});
  at::Tensor mask = at::ones({2, 18}, at::kLong);
  mask[0].narrow(0, 0, 5).zero_();
  const at::Tensor image_grid = at::tensor({1, 4, 4}, at::kLong).view({1, 3});
  const at::Tensor video_grid = at::tensor({1, 4, 4, 2, 4, 4}, at::kLong).view({2, 3});
  QwenRopeIndex r = qwen_rope_index(rope_config(), ids, mask, image_grid, video_grid, at::tensor({1.0f, 3.0f}));
  // row 0: 5 at 0, <vs> 1, image at 2 (2x2), <ve> 4, <vs> 5, video (t = 1) at 6, <ve> 8
  EXPECT_EQ(axis(r, 0, 0), (std::vector<int64_t>{0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 4, 5, 6, 6, 6, 6, 8}));
  EXPECT_EQ(axis(r, 1, 0), (std::vector<int64_t>{0, 0, 0, 0, 0, 0, 1, 2, 2, 3, 3, 4, 5, 6, 6, 7, 7, 8}));
  EXPECT_EQ(axis(r, 2, 0), (std::vector<int64_t>{0, 0, 0, 0, 0, 0, 1, 2, 3, 2, 3, 4, 5, 6, 7, 6, 7, 8}));
  // row 1: video 1 (3 s per group -> interval 2 * 3 = 6) at 2: t = 2 / 8; text resumes at 4
  EXPECT_EQ(axis(r, 0, 1), (std::vector<int64_t>{0, 1, 2, 2, 2, 2, 8, 8, 8, 8, 4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(axis(r, 1, 1), (std::vector<int64_t>{0, 1, 2, 2, 3, 3, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(next_of(r, 0), (std::vector<int64_t>{9, 9, 9}));
  EXPECT_EQ(next_of(r, 1), (std::vector<int64_t>{12, 12, 12}));
}

std::string rope_error(const at::Tensor& ids, const at::Tensor& video_grid, const at::Tensor& seconds = {}) {
  return testing::argument_error([&] { qwen_rope_index(rope_config(), ids, {}, {}, video_grid, seconds); });
}

TEST(VideoRopeIndex, RunsAndGridsMustAgree) {
  const at::Tensor grid = at::tensor({2, 4, 4}, at::kLong).view({1, 3});
  EXPECT_NE(rope_error(ids_of(with_video(8)), {}).find("more runs of video tokens (id 301) than video_grid_thw has "
                                                         "videos (0)"),
            std::string::npos);
  EXPECT_NE(rope_error(ids_of(with_video(6)), grid).find("a run of 6 video tokens at position 3 does not match video "
                                                         "0 of video_grid_thw (2x4x4 patches = 8 tokens after merging)"),
            std::string::npos)
      << rope_error(ids_of(with_video(6)), grid);
  const at::Tensor two = at::tensor({2, 4, 4, 2, 4, 4}, at::kLong).view({2, 3});
  EXPECT_NE(rope_error(ids_of(with_video(8)), two, at::tensor({1.0f, 1.0f})).find(
                "video_grid_thw has 2 videos but input_ids holds 1 runs of video tokens"),
            std::string::npos);
  EXPECT_NE(rope_error(ids_of(with_video(8)), grid, at::tensor({1.0f, 2.0f})).find(
                "second_per_grid_ts has shape [2], expected [1]"),
            std::string::npos);
}

std::string inputs_error(const std::map<std::string, at::Tensor>& t) {
  try {
    ModelInputs::from_tensors(t, "in.safetensors");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(VideoInputsFile, KeysAreCheckedAndNamed) {
  std::map<std::string, at::Tensor> t = {{"input_ids", ids_of(with_video(8))},
                                         {"pixel_values_videos", at::zeros({32, 96})}};
  EXPECT_NE(inputs_error(t).find("missing tensor 'video_grid_thw'"), std::string::npos) << inputs_error(t);
  t["video_grid_thw"] = at::tensor({2.0f, 4.0f, 4.0f}).view({1, 3});
  EXPECT_NE(inputs_error(t).find("'video_grid_thw' has dtype Float, expected an integer type"), std::string::npos)
      << inputs_error(t);
  t["video_grid_thw"] = at::tensor({2, 4, 4}, at::kLong);
  EXPECT_NE(inputs_error(t).find("'video_grid_thw' has shape [3], expected [videos, 3]"), std::string::npos)
      << inputs_error(t);
  t["video_grid_thw"] = at::tensor({2, 4, 4}, at::kLong).view({1, 3});
  t["second_per_grid_ts"] = at::tensor({1.0f, 2.0f});
  EXPECT_NE(inputs_error(t).find("'second_per_grid_ts' has shape [2], expected [1]"), std::string::npos)
      << inputs_error(t);
  t["second_per_grid_ts"] = at::tensor({1.0f});
  EXPECT_EQ(inputs_error(t), "");
  t["pixel_values_videos"] = at::zeros({32, 96}, at::kLong);
  EXPECT_NE(inputs_error(t).find("'pixel_values_videos' has dtype Long"), std::string::npos) << inputs_error(t);
}

// The tiny Qwen2.5-VL of tests/fixtures/vlm/qwen2_5_vl (made by scripts/make_vlm_fixtures.py).
class TinyQwenVideo : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Model::load(testing::fixtures_dir() + "/vlm/qwen2_5_vl/model", LoadOptions{at::kFloat, at::Device(at::kCPU)});
    model_->set_attention_backend(AttentionBackend::kReference);
  }
  // 3 text tokens, <vs>, the video's tokens, then <ve> unless `open`: grid (2, 4, 6), 2 s per group
  // (interval 4), random pixels.
  ModelInputs video_prompt(bool open = false) const {
    at::Generator gen = at::detail::createCPUGenerator(7);
    ModelInputs in;
    std::vector<int64_t> ids = {11, 12, 13, kStart};
    ids.insert(ids.end(), 12, kVid);
    if (!open) ids.push_back(kEnd);
    in.input_ids = ids_of(ids);
    in.video_grid_thw = at::tensor({2, 4, 6}, at::kLong).view({1, 3});
    in.pixel_values_videos = at::randn({48, 96}, gen);
    in.second_per_grid_ts = at::tensor({2.0f});
    return in;
  }
  std::string error_of(const ModelInputs& in) const {
    try {
      model_->logits(in);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  std::shared_ptr<Model> model_;
};

// Two identical frame groups: full attention stays within a frame group and both groups get the
// same 2-D RoPE and windows, so each group's features are the image features of the same pixels.
TEST_F(TinyQwenVideo, IdenticalFrameGroupsGiveTheImageFeaturesTwice) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  ModelInputs image;
  image.pixel_values = at::randn({24, 96}, gen);  // grid (1, 4, 6)
  image.image_grid_thw = at::tensor({1, 4, 6}, at::kLong).view({1, 3});
  ModelInputs video;
  video.pixel_values_videos = at::cat({image.pixel_values, image.pixel_values}, 0);
  video.video_grid_thw = at::tensor({2, 4, 6}, at::kLong).view({1, 3});
  at::Tensor f = model_->image_features(image);
  at::Tensor v = model_->video_features(video);
  ASSERT_EQ(v.sizes(), (std::vector<int64_t>{12, 64}));
  EXPECT_LE(max_rel_error(v, at::cat({f, f}, 0)), 1e-6);
  EXPECT_EQ(model_->video_token_counts(video), std::vector<int64_t>{12});
}

// Generation after a video prompt that ends inside the video (the axes' next positions differ):
// each axis at its next position + k (transformers' generate), fed one token at a time through the
// cache, against one forward over prompt + continuation with the same positions.
TEST_F(TinyQwenVideo, IncrementalDecodeAfterVideoEqualsFullForward) {
  ModelInputs in = video_prompt(/*open=*/true);
  Prompt p = model_->prepare(in, false);
  const int64_t t = in.input_ids.size(1);
  // The last video token: t 4 + 4, h 4 + 1, w 4 + 2.
  ASSERT_TRUE(p.next_mrope_position.equal(at::tensor({9, 6, 7}, at::kLong).view({3, 1})))
      << p.next_mrope_position;
  const std::vector<int64_t> next = {21, 22, 23};
  const int64_t n = static_cast<int64_t>(next.size());
  DecoderInput full = p.decoder_input();
  full.input_ids = at::cat({p.input_ids, ids_of(next)}, 1);
  full.inputs_embeds =
      at::cat({model_->decoder().input_embeddings(p.decoder_input()), model_->decoder().embed(ids_of(next))}, 1);
  full.attention_mask = at::ones({1, t + n}, at::kLong);
  at::Tensor gen_pos = p.next_mrope_position.view({3, 1, 1}) + at::arange(n, at::kLong).view({1, 1, n});
  full.position_ids = at::cat({p.position_ids, gen_pos}, -1);
  full.image_mask = at::Tensor();
  at::Tensor want = model_->decoder().lm_head(model_->decoder().forward_hidden(full, nullptr));

  DenseKvCache cache = model_->decoder().make_cache(1, 8);
  at::Tensor first = model_->decoder().lm_head(model_->decoder().forward_hidden(p.decoder_input(), &cache));
  EXPECT_LE(max_rel_error(first, want.narrow(1, 0, t)), 1e-5);
  for (int64_t k = 0; k < n; ++k) {
    DecoderInput s;
    s.input_ids = ids_of({next[static_cast<size_t>(k)]});
    s.attention_mask = at::ones({1, t + k + 1}, at::kLong);
    s.position_ids = gen_pos.narrow(-1, k, 1);
    at::Tensor out = model_->decoder().lm_head(model_->decoder().forward_hidden(s, &cache));
    EXPECT_LE(max_rel_error(out, want.narrow(1, t + k, 1)), 1e-5) << "step " << k;
  }
  // generate() takes the same positions: its first new token is the argmax after the prompt.
  GenerateResult g = generate(model_->decoder(), model_->prepare(in, false),
                              testing::greedy_options(testing::fixtures_dir() + "/vlm/qwen2_5_vl/model",
                                                      model_->text_config(), 1));
  EXPECT_EQ(g.sequences[0][t].item<int64_t>(), first[0][t - 1].argmax().item<int64_t>());
}

TEST_F(TinyQwenVideo, VideoTokensMustMatchTheVideos) {
  ModelInputs in = video_prompt();
  in.video_grid_thw = at::tensor({2, 4, 8}, at::kLong).view({1, 3});  // 16 tokens' worth
  in.pixel_values_videos = at::zeros({64, 96});
  std::string err = error_of(in);
  EXPECT_NE(err.find("input_ids holds 12 video tokens (id 301) but video_grid_thw gives 16 video features"),
            std::string::npos) << err;
  in = video_prompt();
  in.pixel_values_videos = at::zeros({40, 96});  // 48 patches expected
  err = error_of(in);
  EXPECT_NE(err.find("pixel_values_videos has shape [40, 96], expected [48, 96] for video_grid_thw"),
            std::string::npos) << err;
  in = video_prompt();
  in.pixel_values_videos = at::Tensor();
  err = error_of(in);
  EXPECT_NE(err.find("12 video tokens (id 301)"), std::string::npos) << err;
  EXPECT_NE(err.find("no pixel_values_videos"), std::string::npos) << err;
}

TEST(VideoInputsModel, VideoForAModelWithoutVideo) {
  auto m = Model::load(testing::fixtures_dir() + "/vlm/llava/model", LoadOptions{});
  std::map<std::string, at::Tensor> t = io::read_safetensors(testing::fixtures_dir() + "/vlm/llava/inputs.safetensors");
  t["pixel_values_videos"] = at::zeros({4, 96});
  t["video_grid_thw"] = at::tensor({2, 1, 2}, at::kLong).view({1, 3});
  const std::string video = testing::argument_error([&] { m->logits(ModelInputs::from_tensors(t, "in.safetensors")); });
  EXPECT_NE(video.find("takes no video input"), std::string::npos) << video;
}

}  // namespace
}  // namespace vlm2mla
