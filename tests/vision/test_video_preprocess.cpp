// Qwen2-VL video preprocessing (vision/video.h): the patch layout against the image patchify, frame
// padding, the config lookup and defaults, bad input, and parity with transformers 5.17's
// Qwen2VLVideoProcessor on the frames of tests/fixtures/vlm/qwen2_5_vl_video
// (scripts/make_video_fixtures.py).
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "support/test_support.h"
#include "vision/image.h"
#include "vision/processors.h"
#include "vision/video.h"

namespace vlm2mla::vision {
namespace {

using testing::TempDir;

// A deterministic w x h RGB image whose pixels differ everywhere (seed shifts the pattern).
Image pattern(int w, int h, int seed) {
  Image img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img.at(y, x, c) = static_cast<uint8_t>((x * 37 + y * 11 + c * 71 + seed * 53) % 256);
  return img;
}

// Row 0 of a video_grid_thw: (t, h, w).
std::vector<int64_t> grid0(const at::Tensor& grid) {
  return {grid[0][0].item<int64_t>(), grid[0][1].item<int64_t>(), grid[0][2].item<int64_t>()};
}

VideoProcessorConfig tiny_config(int64_t min_pixels = 64, int64_t max_pixels = 4096) {
  return parse_video_processor_config({{"min_pixels", min_pixels}, {"max_pixels", max_pixels}, {"patch_size", 4},
                                       {"temporal_patch_size", 2}, {"merge_size", 2}},
                                      "tiny.json");
}

// The image patchify repeats one frame temporal_patch_size times: a video of two identical frames
// must give exactly the image's rows, an independent check of the (t, h, w, channel, temporal) layout.
TEST(VideoPreprocess, TwoIdenticalFramesEqualTheImagePatchify) {
  const VideoProcessorConfig cfg = tiny_config();
  const Image f = pattern(16, 24, 1);
  const ProcessedVideos v = preprocess_videos(cfg, {{f, f}}, {});
  const ProcessedImages i = preprocess(cfg.frames, {f});
  EXPECT_TRUE(v.pixel_values_videos.equal(i.pixel_values));
  EXPECT_TRUE(v.video_grid_thw.equal(i.image_grid_thw));  // (1, 6, 4) both
}

// Three frames are padded to four by repeating the last: rows of frame group 1 are the patchify of
// (frame 2, frame 2); group 0 of (frame 0, frame 1). t = 2.
TEST(VideoPreprocess, OddFrameCountRepeatsTheLastFrame) {
  const VideoProcessorConfig cfg = tiny_config();
  const Image a = pattern(16, 16, 1), b = pattern(16, 16, 2), c = pattern(16, 16, 3);
  const ProcessedVideos v = preprocess_videos(cfg, {{a, b, c}}, {});
  EXPECT_EQ(grid0(v.video_grid_thw), (std::vector<int64_t>{2, 4, 4}));
  const ProcessedVideos g0 = preprocess_videos(cfg, {{a, b}}, {});
  const ProcessedVideos g1 = preprocess_videos(cfg, {{c, c}}, {});
  EXPECT_TRUE(v.pixel_values_videos.equal(at::cat({g0.pixel_values_videos, g1.pixel_values_videos}, 0)));
  // Frames differ, so the two temporal halves of a group's row differ: the layout is not frame-blind.
  const at::Tensor row = g0.pixel_values_videos[0].view({3, 2, 16});
  EXPECT_FALSE(row.select(1, 0).equal(row.select(1, 1)));
}

TEST(VideoPreprocess, SecondPerGridIsTemporalPatchOverFps) {
  const VideoProcessorConfig cfg = tiny_config();
  const Image f = pattern(8, 8, 0);
  const ProcessedVideos v = preprocess_videos(cfg, {{f, f}, {f, f, f, f}}, {0.5, 3.0});
  EXPECT_FLOAT_EQ(v.second_per_grid_ts[0].item<float>(), 4.0f);
  EXPECT_FLOAT_EQ(v.second_per_grid_ts[1].item<float>(), static_cast<float>(2.0 / 3.0));
  EXPECT_EQ(v.video_grid_thw.size(0), 2);
  // No fps: VideoMetadata's default of 24 frames per second.
  const ProcessedVideos d = preprocess_videos(cfg, {{f}}, {});
  EXPECT_FLOAT_EQ(d.second_per_grid_ts[0].item<float>(), static_cast<float>(2.0 / 24.0));
  EXPECT_EQ(grid0(d.video_grid_thw), (std::vector<int64_t>{1, 2, 2}));  // 1 frame padded to 2
}

TEST(VideoPreprocess, ResizesWithTheVideoMinMaxPixels) {
  // 50x38 -> round to multiples of 8: 48x40 = 1920 pixels, inside [256, 2048]: no scaling.
  const ProcessedVideos v = preprocess_videos(tiny_config(256, 2048), {{pattern(50, 38, 0)}}, {});
  EXPECT_EQ(grid0(v.video_grid_thw), (std::vector<int64_t>{1, 10, 12}));
  // max 1024: beta = sqrt(1900 / 1024); floor(38 / beta / 8) * 8 = 24, floor(50 / beta / 8) * 8 = 32.
  const ProcessedVideos s = preprocess_videos(tiny_config(256, 1024), {{pattern(50, 38, 0)}}, {});
  EXPECT_EQ(grid0(s.video_grid_thw), (std::vector<int64_t>{1, 6, 8}));
}

TEST(VideoPreprocess, CapPixelsPerFrameSharesTheTokenBudget) {
  // cap: total = int(max_video_tokens * 8 * 8 * 0.9) = 576 for 10 tokens; max pixels
  // max(min(4096, 576 * 2 // 4 frames = 288), int(64 * 1.05) = 67) = 288 -> 64x64 frames to 16x16.
  VideoProcessorConfig cfg = parse_video_processor_config(
      {{"min_pixels", 64}, {"max_pixels", 4096}, {"patch_size", 4}, {"merge_size", 2},
       {"cap_pixels_per_frame", true}, {"max_video_tokens", 10}},
      "cap.json");
  const Image f = pattern(64, 64, 0);
  const ProcessedVideos v = preprocess_videos(cfg, {{f, f, f, f}}, {});
  EXPECT_EQ(grid0(v.video_grid_thw), (std::vector<int64_t>{2, 4, 4}));
  cfg.cap_pixels_per_frame = false;
  EXPECT_EQ(grid0(preprocess_videos(cfg, {{f, f, f, f}}, {}).video_grid_thw), (std::vector<int64_t>{2, 16, 16}));
}

TEST(VideoPreprocess, ConfigDefaultsAndLookupOrder) {
  const VideoProcessorConfig d = parse_video_processor_config(nlohmann::json::object(), "empty.json");
  EXPECT_EQ(d.frames.size_shortest_edge, 128 * 28 * 28);  // Qwen2VLVideoProcessor.size
  EXPECT_EQ(d.frames.size_longest_edge, 28 * 28 * 768);
  EXPECT_EQ(d.frames.patch_size, 14);
  EXPECT_EQ(d.frames.temporal_patch_size, 2);
  EXPECT_EQ(d.frames.backend, Backend::kTorchvision);
  EXPECT_FALSE(d.cap_pixels_per_frame);
  // min_pixels / max_pixels override size, as Qwen2VLVideoProcessor.__init__ does.
  const VideoProcessorConfig o = parse_video_processor_config(
      {{"size", {{"shortest_edge", 100}, {"longest_edge", 200}}}, {"max_pixels", 300}}, "o.json");
  EXPECT_EQ(o.frames.size_shortest_edge, 100);
  EXPECT_EQ(o.frames.size_longest_edge, 300);

  TempDir dir;
  EXPECT_THROW(load_video_processor_config(dir.path()), IoError);
  io::write_json_file(dir.file("preprocessor_config.json"),
                      {{"image_processor_type", "Qwen2VLImageProcessor"}, {"min_pixels", 3136}, {"max_pixels", 12845056}});
  EXPECT_EQ(load_video_processor_config(dir.path()).frames.size_longest_edge, 12845056);  // the Hub's fallback
  io::write_json_file(dir.file("video_preprocessor_config.json"), {{"max_pixels", 5000}});
  EXPECT_EQ(load_video_processor_config(dir.path()).frames.size_longest_edge, 5000);
  io::write_json_file(dir.file("processor_config.json"), {{"video_processor", {{"max_pixels", 6000}}}});
  EXPECT_EQ(load_video_processor_config(dir.path()).frames.size_longest_edge, 6000);
}

TEST(VideoPreprocess, BadInput) {
  const VideoProcessorConfig cfg = tiny_config();
  auto message = [&](const std::vector<std::vector<Image>>& v, const std::vector<double>& fps) {
    return testing::argument_error([&] { preprocess_videos(cfg, v, fps); });
  };
  EXPECT_NE(message({{pattern(8, 8, 0), pattern(16, 8, 0)}}, {}).find("frame 1 is 16x8 but frame 0 is 8x8"),
            std::string::npos);
  EXPECT_NE(message({{}}, {}).find("no frames"), std::string::npos);
  EXPECT_NE(message({{pattern(8, 8, 0)}}, {0.0}).find("fps"), std::string::npos);
  EXPECT_NE(message({{pattern(8, 8, 0)}}, {1.0, 2.0}).find("2 fps values for 1 videos"), std::string::npos);
  EXPECT_THROW(parse_video_processor_config({{"do_sample_frames", true}}, "s.json"), FormatError);
  EXPECT_THROW(parse_video_processor_config({{"video_processor_type", "LlavaOnevisionVideoProcessor"}}, "t.json"),
               FormatError);
}

// ---- parity with transformers (tests/fixtures/vlm/qwen2_5_vl_video) ------------------------------

const std::string& video_fixture() {
  static const std::string dir = testing::fixtures_dir() + "/vlm/qwen2_5_vl_video";
  return dir;
}

std::vector<std::vector<Image>> fixture_frames(const nlohmann::json& meta) {
  std::vector<std::vector<Image>> videos;
  for (const auto& names : meta.at("frames")) {
    videos.emplace_back();
    for (const auto& n : names) videos.back().push_back(load_image(video_fixture() + "/" + n.get<std::string>()));
  }
  return videos;
}

// Tolerance reached: exact (0.0). The frames are RGB PNGs; resize (torchvision uint8 bicubic),
// fused rescale-normalize in float32 and the patch layout reproduce the processor bit for bit.
TEST(VideoPreprocessParity, MatchesQwen2VLVideoProcessor) {
  const auto meta = io::read_json_file(video_fixture() + "/meta.json");
  const auto inputs = io::read_safetensors(video_fixture() + "/inputs.safetensors");
  const VideoProcessorConfig cfg = load_video_processor_config(video_fixture());
  const ProcessedVideos v = preprocess_videos(cfg, fixture_frames(meta), meta.at("fps").get<std::vector<double>>());
  EXPECT_TRUE(v.video_grid_thw.equal(inputs.at("video_grid_thw")))
      << v.video_grid_thw << " vs " << inputs.at("video_grid_thw");
  EXPECT_TRUE(v.second_per_grid_ts.equal(inputs.at("second_per_grid_ts")));
  ASSERT_EQ(v.pixel_values_videos.sizes(), inputs.at("pixel_values_videos").sizes());
  const double err = (v.pixel_values_videos - inputs.at("pixel_values_videos")).abs().max().item<double>();
  RecordProperty("max_abs_error", std::to_string(err));
  EXPECT_EQ(err, 0.0);
  // The image beside them, through the image processor of the same directory.
  const ProcessedImages i = preprocess(load_processor_config(video_fixture()), {load_image(video_fixture() + "/image0.png")});
  EXPECT_TRUE(i.pixel_values.equal(inputs.at("pixel_values")));
  EXPECT_TRUE(i.image_grid_thw.equal(inputs.at("image_grid_thw")));
}

TEST(VideoPreprocessParity, CliWritesTheProcessorsTensors) {
  const auto meta = io::read_json_file(video_fixture() + "/meta.json");
  const auto inputs = io::read_safetensors(video_fixture() + "/inputs.safetensors");
  TempDir tmp;
  std::vector<std::string> args = {"preprocess", "--model", video_fixture(), "--image", video_fixture() + "/image0.png",
                                   "--fps", "0.5", "--out", tmp.file("v.safetensors"), "--video"};
  for (const auto& n : meta.at("frames")[0]) args.push_back(video_fixture() + "/" + n.get<std::string>());
  const testing::CliResult r = testing::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto out = io::read_safetensors(tmp.file("v.safetensors"));
  const int64_t rows0 = inputs.at("video_grid_thw")[0].prod().item<int64_t>();  // video 0's patches
  EXPECT_TRUE(out.at("pixel_values_videos").equal(inputs.at("pixel_values_videos").narrow(0, 0, rows0)));
  EXPECT_TRUE(out.at("video_grid_thw").equal(inputs.at("video_grid_thw").narrow(0, 0, 1)));
  EXPECT_TRUE(out.at("second_per_grid_ts").equal(inputs.at("second_per_grid_ts").narrow(0, 0, 1)));
  EXPECT_TRUE(out.at("pixel_values").equal(inputs.at("pixel_values")));
  // --fps without --video is refused; a frame of another size names the file.
  const testing::CliResult bad = testing::run_cli({"preprocess", "--model", video_fixture(), "--video",
                                                   video_fixture() + "/frames/v0_f0.png",
                                                   video_fixture() + "/frames/v1_f0.png", "--out", tmp.file("b")});
  EXPECT_EQ(bad.exit_code, 1) << bad.err;
  EXPECT_NE(bad.err.find("the frames of a video must have one size"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace vlm2mla::vision
