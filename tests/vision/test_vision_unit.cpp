// Unit tests of the preprocessing pieces that need no fixtures: the geometry helpers against cases
// computed by hand from transformers' formulas, the bicubic weights and outputs on tiny arrays
// computed by hand from the filter, the Qwen patch order on a synthetic image, config parsing.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "vision/processor_config.h"
#include "vision/processors.h"
#include "support/test_support.h"
#include "vision/resample.h"

namespace vlm2mla::vision {
namespace {

using P = std::pair<int64_t, int64_t>;
const std::vector<P> kNextPinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};

TEST(VisionGeometry, SelectBestResolution) {
  // 800x600: effective pixels 150528, 84672, 338688, 84672, 150528 -> 672x672.
  EXPECT_EQ(select_best_resolution(600, 800, kNextPinpoints), P(672, 672));
  // 1000x100: (336, 1008) keeps all 100000 pixels (1008x100 capped at the original).
  EXPECT_EQ(select_best_resolution(100, 1000, kNextPinpoints), P(336, 1008));
  // 100x1000, transposed.
  EXPECT_EQ(select_best_resolution(1000, 100, kNextPinpoints), P(1008, 336));
  // 10x10: every pinpoint keeps all 100 pixels; the least waste wins, the first one on a tie.
  EXPECT_EQ(select_best_resolution(10, 10, kNextPinpoints), P(336, 672));
  EXPECT_EQ(select_best_resolution(10, 10, {{56, 56}, {28, 56}, {56, 28}}), P(28, 56));
  EXPECT_THROW(select_best_resolution(10, 10, {}), ArgumentError);
}

TEST(VisionGeometry, PatchOutputSize) {
  EXPECT_EQ(patch_output_size(61, 97, 56, 56), P(36, 56));  // ceil(61 * 56/97) = ceil(35.2)
  EXPECT_EQ(patch_output_size(97, 61, 56, 56), P(56, 36));
  EXPECT_EQ(patch_output_size(600, 800, 672, 672), P(504, 672));
  EXPECT_EQ(patch_output_size(1, 1, 28, 56), P(28, 28));
}

TEST(VisionGeometry, ShortestEdgeSize) {
  EXPECT_EQ(shortest_edge_size(61, 97, 28), P(28, 44));  // int(28 * 97 / 61) = int(44.5)
  EXPECT_EQ(shortest_edge_size(97, 61, 28), P(44, 28));
  EXPECT_EQ(shortest_edge_size(20, 4000, 336), P(336, 67200));
  EXPECT_EQ(shortest_edge_size(1, 1, 336), P(336, 336));
}

TEST(VisionGeometry, SmartResize) {
  EXPECT_EQ(smart_resize(61, 97, 28, 3136, 12845056), P(56, 84));
  EXPECT_EQ(smart_resize(1, 1, 28, 3136, 12845056), P(56, 56));        // min_pixels branch
  EXPECT_EQ(smart_resize(20, 4000, 28, 3136, 12845056), P(28, 4004));  // aspect ratio exactly 200
  EXPECT_EQ(smart_resize(1000, 1000, 28, 3136, 100000), P(308, 308));  // max_pixels branch
  EXPECT_EQ(smart_resize(10, 20, 28, 3136, 12845056), P(56, 84));      // ceil(1.41), ceil(2.83)
  // Python's round() rounds half to even: 42/28 = 1.5 -> 2, 70/28 = 2.5 -> 2.
  EXPECT_EQ(smart_resize(42, 70, 28, 0, 1 << 30), P(56, 56));
  const std::string ratio = testing::argument_error([] { smart_resize(1, 201, 28, 3136, 12845056); });
  EXPECT_NE(ratio.find("absolute aspect ratio must be smaller than 200, got 201"), std::string::npos) << ratio;
}

// A 1-row image whose three channels hold the same values.
Image row_image(const std::vector<uint8_t>& v) {
  Image img(static_cast<int>(v.size()), 1);
  for (size_t x = 0; x < v.size(); ++x)
    for (int c = 0; c < 3; ++c) img.at(0, static_cast<int>(x), c) = v[x];
  return img;
}
std::vector<int> row_of(const Image& img, int c = 0) {
  std::vector<int> out;
  for (int x = 0; x < img.width; ++x) out.push_back(img.at(0, x, c));
  return out;
}

TEST(VisionResample, PilWeightsByHand) {
  // Upscaling 2 -> 4: support 2; output 0 has center 0.25 and reads inputs 0, 1 at distances
  // 0.25 and 1.25: f(0.25) = 0.8671875, f(1.25) = -0.0703125, normalized by their sum 0.796875.
  AxisWeightsF64 w = bicubic_weights_f64(2, 4, Resampler::kPil);
  EXPECT_EQ(w.ksize, 5);
  EXPECT_EQ(w.start[0], 0);
  EXPECT_EQ(w.count[0], 2);
  EXPECT_DOUBLE_EQ(w.k[0], 0.8671875 / 0.796875);
  EXPECT_DOUBLE_EQ(w.k[1], -0.0703125 / 0.796875);
  // Downscaling 4 -> 2: support 4, filter stretched by 2; output 0 reads inputs 0..3 at scaled
  // distances -0.25, 0.25, 0.75, 1.25.
  AxisWeightsF64 d = bicubic_weights_f64(4, 2, Resampler::kPil);
  EXPECT_EQ(d.ksize, 9);
  EXPECT_EQ(d.count[0], 4);
  const double s = 0.8671875 * 2 + 0.2265625 - 0.0703125;
  EXPECT_DOUBLE_EQ(d.k[0], 0.8671875 / s);
  EXPECT_DOUBLE_EQ(d.k[2], 0.2265625 / s);
  EXPECT_DOUBLE_EQ(d.k[3], -0.0703125 / s);
  // Fixed point: 22 fractional bits, rounded half away from zero.
  AxisWeights q = bicubic_weights(2, 4, Resampler::kPil);
  EXPECT_EQ(q.precision, 22);
  EXPECT_EQ(q.k[0], 4564390);   // 1.0882353 * 2^22 = 4564389.65
  EXPECT_EQ(q.k[1], -370086);   // -0.0882353 * 2^22 = -370085.65
}

TEST(VisionResample, PilOutputsByHand) {
  // [100, 200] -> 4: 1.0882*100 - 0.0882*200 = 91.18 -> 91; 0.7929*100 + 0.2071*200 = 120.71 -> 121;
  // mirrored: 179, 209.
  EXPECT_EQ(row_of(resize_bicubic(row_image({100, 200}), 4, 1, Resampler::kPil)), (std::vector<int>{91, 121, 179, 209}));
  // Overshoot is clipped: [0, 255] -> 4 gives -22.5 -> 0 and 277.5 -> 255 at the ends; 52.8 -> 53.
  EXPECT_EQ(row_of(resize_bicubic(row_image({0, 255}), 4, 1, Resampler::kPil)), (std::vector<int>{0, 53, 202, 255}));
  // [10, 20, 30, 40] -> 2: 30 / 1.890625 = 15.87 -> 16; 64.53125 / 1.890625 = 34.13 -> 34.
  EXPECT_EQ(row_of(resize_bicubic(row_image({10, 20, 30, 40}), 2, 1, Resampler::kPil)), (std::vector<int>{16, 34}));
  EXPECT_EQ(row_of(resize_bicubic(row_image({10, 20, 30, 40}), 2, 1, Resampler::kTorchUint8)),
            (std::vector<int>{16, 34}));
  // Same size: identity, both resamplers.
  Image img = row_image({3, 250, 7, 99});
  EXPECT_EQ(resize_bicubic(img, 4, 1, Resampler::kPil).rgb, img.rgb);
  EXPECT_EQ(resize_bicubic(img, 4, 1, Resampler::kTorchUint8).rgb, img.rgb);
  // A constant image stays constant under any resize (weights sum to one).
  Image flat(7, 5);
  std::fill(flat.rgb.begin(), flat.rgb.end(), 123);
  for (Resampler r : {Resampler::kPil, Resampler::kTorchUint8}) {
    Image out = resize_bicubic(flat, 3, 11, r);
    for (uint8_t v : out.rgb) EXPECT_EQ(v, 123);
  }
}

TEST(VisionResample, TorchInt16Precision) {
  // The largest weight of 4 -> 2 is 0.8671875 / 1.890625 = 0.4587; the precision is the largest p
  // with round(0.4587 * 2^(p+1)) < 2^15, i.e. p = 16 (2^17 * 0.4587 = 60119 stops the search).
  AxisWeights q = bicubic_weights(4, 2, Resampler::kTorchUint8);
  EXPECT_EQ(q.precision, 16);
  EXPECT_EQ(q.k[0], 30060);  // 0.458677686 * 65536 = 30059.9
  // Identity-sized axis: weight 1 -> p = 14.
  EXPECT_EQ(bicubic_weights(5, 5, Resampler::kTorchUint8).precision, 14);
}

TEST(VisionQwen, PatchifyOrder) {
  // v(c, y, x) = 100c + 10y + x on a 3x4x4 image; patch 1, merge 2, temporal 2.
  at::Tensor img = at::empty({3, 4, 4}, at::kFloat);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) img[c][y][x] = 100 * c + 10 * y + x;
  at::Tensor p = qwen_patchify(img, 1, 2, 2);
  ASSERT_EQ(p.sizes(), at::IntArrayRef({16, 6}));
  // Rows: (block_y, block_x, merge_y, merge_x); columns: (channel, temporal).
  for (int by = 0; by < 2; ++by)
    for (int bx = 0; bx < 2; ++bx)
      for (int my = 0; my < 2; ++my)
        for (int mx = 0; mx < 2; ++mx) {
          const int row = ((by * 2 + bx) * 2 + my) * 2 + mx;
          const int y = by * 2 + my, x = bx * 2 + mx;
          for (int c = 0; c < 3; ++c)
            for (int t = 0; t < 2; ++t) EXPECT_EQ(p[row][c * 2 + t].item<float>(), 100 * c + 10 * y + x);
        }
  EXPECT_EQ(p[4][0].item<float>(), 2);   // row 4 = block (0, 1): pixel (0, 2)
  EXPECT_EQ(p[2][0].item<float>(), 10);  // row 2 = merge (1, 0): pixel (1, 0)
  // Patch 2, merge 1, temporal 2: one row holds channel-major, then temporal, then the 2x2 patch.
  at::Tensor q = qwen_patchify(img, 2, 1, 2);
  ASSERT_EQ(q.sizes(), at::IntArrayRef({4, 24}));
  EXPECT_EQ(q[1][0].item<float>(), 2);       // patch (0, 1) starts at pixel (0, 2)
  EXPECT_EQ(q[0][3].item<float>(), 11);      // t = 0, (1, 1)
  EXPECT_EQ(q[0][4].item<float>(), 0);       // t = 1 repeats the frame
  EXPECT_EQ(q[0][8].item<float>(), 100);     // channel 1
  EXPECT_THROW(qwen_patchify(img, 3, 1, 2), ArgumentError);
}

TEST(VisionConfig, DefaultsAndOverrides) {
  auto j = nlohmann::json::parse(R"({"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 100,
                                     "max_pixels": 1000, "patch_size": 4})");
  ProcessorConfig c = parse_processor_config(j, "q.json");
  EXPECT_EQ(c.kind, ProcessorKind::kQwen2Vl);
  EXPECT_EQ(c.backend, Backend::kTorchvision);
  EXPECT_EQ(c.size_shortest_edge, 100);
  EXPECT_EQ(c.size_longest_edge, 1000);
  EXPECT_EQ(c.patch_size, 4);
  EXPECT_EQ(c.merge_size, 2);
  auto k = nlohmann::json::parse(R"({"image_processor_type": "CLIPImageProcessorPil", "size": 30, "crop_size": 20})");
  ProcessorConfig d = parse_processor_config(k, "c.json");
  EXPECT_EQ(d.backend, Backend::kPil);
  EXPECT_EQ(d.size_shortest_edge, 30);
  EXPECT_EQ(d.crop_height, 20);
  EXPECT_EQ(d.image_mean.size(), 3u);
  EXPECT_EQ(parse_processor_config(k, "c.json", Backend::kTorchvision).backend, Backend::kTorchvision);
  auto n = nlohmann::json::parse(R"({"image_processor_type": "LlavaNextImageProcessorFast"})");
  ProcessorConfig e = parse_processor_config(n, "n.json");
  EXPECT_EQ(e.backend, Backend::kTorchvision);
  EXPECT_EQ(e.image_grid_pinpoints.size(), 5u);
}

TEST(VisionConfig, Errors) {
  try {
    parse_processor_config(nlohmann::json::parse(R"({"image_processor_type": "SiglipImageProcessor"})"), "x.json");
    FAIL();
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("x.json"), std::string::npos);
    EXPECT_NE(m.find("SiglipImageProcessor"), std::string::npos);
    EXPECT_NE(m.find("Qwen2VLImageProcessor"), std::string::npos) << m;
  }
  EXPECT_THROW(parse_processor_config(nlohmann::json::parse("{}"), "x.json"), FormatError);
  EXPECT_THROW(parse_processor_config(
                   nlohmann::json::parse(R"({"image_processor_type": "CLIPImageProcessor", "resample": 2})"), "x"),
               FormatError);
  try {
    load_processor_config("/nonexistent/model");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model/preprocessor_config.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_processor_config("/nonexistent/pp.json"), IoError);
  EXPECT_THROW(parse_backend("cuda", "--backend"), ArgumentError);
}

TEST(VisionProcessors, OddSizes) {
  Image one(1, 1);
  one.rgb = {10, 200, 30};
  Image wide(4000, 20);
  for (size_t i = 0; i < wide.rgb.size(); ++i) wide.rgb[i] = static_cast<uint8_t>(i * 7);
  for (Backend b : {Backend::kTorchvision, Backend::kPil}) {
    auto clip = parse_processor_config(
        nlohmann::json::parse(R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 8},
                                   "crop_size": {"height": 8, "width": 8}})"), "clip", b);
    EXPECT_EQ(preprocess(clip, {one, wide}).pixel_values.sizes(), at::IntArrayRef({2, 3, 8, 8}));
    auto next = parse_processor_config(
        nlohmann::json::parse(R"({"image_processor_type": "LlavaNextImageProcessor", "size": {"shortest_edge": 8},
                                   "crop_size": 8, "image_grid_pinpoints": [[8, 16], [16, 8], [16, 16]]})"), "next", b);
    ProcessedImages n = preprocess(next, {one, wide});
    // Both fit no pinpoint (4000x20 scales to zero rows; 1x1 keeps its one pixel everywhere): the
    // least waste, 8x16, wins -> 1 + 2 patches each.
    EXPECT_EQ(n.pixel_values.sizes(), at::IntArrayRef({2, 3, 3, 8, 8}));
    EXPECT_EQ(n.image_sizes.sizes(), at::IntArrayRef({2, 2}));
    EXPECT_EQ(n.image_sizes[1][0].item<int64_t>(), 20);
    EXPECT_EQ(n.image_sizes[1][1].item<int64_t>(), 4000);
    auto qwen = parse_processor_config(
        nlohmann::json::parse(R"({"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 64,
                                   "max_pixels": 4096, "patch_size": 4})"), "qwen", b);
    ProcessedImages q = preprocess(qwen, {one, wide});
    EXPECT_EQ(q.image_grid_thw.sizes(), at::IntArrayRef({2, 3}));
    EXPECT_EQ(q.pixel_values.size(1), 3 * 2 * 4 * 4);
    Image too_wide(4020, 20);
    EXPECT_THROW(preprocess(qwen, {too_wide}), ArgumentError);
  }
}

}  // namespace
}  // namespace vlm2mla::vision
