// Parity with the HF image processors (transformers 5.17, both backends), against the fixtures of
// scripts/make_image_fixtures.py in tests/fixtures/images (skipped, saying so, when absent).
//
// The processors run here on the pixels PIL decoded (decoded.safetensors), so decoder and processor
// differences are measured separately:
//   * processors: expected bit-exact, every element, for both the torchvision backend (torch's
//     uint8 antialiased bicubic, int16 weights) and the PIL backend (Pillow's fixed-point bicubic);
//     kProcessorTol is the bound asserted (measured: 0, see the log lines "max abs err").
//   * decoding: PNG bit-exact with PIL; JPEG differs (stb_image's IDCT / upsampling / color
//     conversion vs libjpeg-turbo's), bounded by kJpegMaxLevels uint8 levels (measured: 2).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "support/test_support.h"
#include "vision/image.h"
#include "vision/processor_config.h"
#include "vision/processors.h"

namespace vlm2mla::vision {
namespace {

constexpr double kProcessorTol = 0.0;  // exact
constexpr int kJpegMaxLevels = 3;  // measured on the fixtures: 2 (on 0.4-6.6% of samples)

std::string fixture_dir() { return testing::fixtures_dir() + "/images"; }
bool have_fixtures() { return fs::exists(fixture_dir() + "/meta.json"); }
#define VLM2MLA_NEED_IMAGE_FIXTURES()                                                                    \
  if (!have_fixtures())                                                                                 \
  GTEST_SKIP() << "tests/fixtures/images is absent: make it where transformers is installed with "      \
                  "`python3 scripts/make_image_fixtures.py --out tests/fixtures/images`"

Image from_hwc(const at::Tensor& t) {  // uint8 [h, w, 3]
  at::Tensor c = t.contiguous();
  Image img(static_cast<int>(c.size(1)), static_cast<int>(c.size(0)));
  std::memcpy(img.rgb.data(), c.data_ptr<uint8_t>(), img.rgb.size());
  return img;
}

const nlohmann::json& meta() {
  static const nlohmann::json m = io::read_json_file(fixture_dir() + "/meta.json");
  return m;
}
const std::map<std::string, at::Tensor>& decoded() {
  static const std::map<std::string, at::Tensor> d = io::read_safetensors(fixture_dir() + "/decoded.safetensors");
  return d;
}

TEST(VisionParity, DecoderMatchesPil) {
  VLM2MLA_NEED_IMAGE_FIXTURES();
  for (const auto& rec : meta().at("images")) {
    const std::string name = rec.at("name");
    if (!rec.at("pil_error").is_null()) continue;
    SCOPED_TRACE(name);
    Image ours = load_image(fixture_dir() + "/" + rec.at("file").get<std::string>());
    Image pil = from_hwc(decoded().at(name));
    ASSERT_EQ(ours.width, pil.width);
    ASSERT_EQ(ours.height, pil.height);
    int max_diff = 0;
    size_t differing = 0;
    for (size_t i = 0; i < ours.rgb.size(); ++i) {
      const int dlt = std::abs(int(ours.rgb[i]) - int(pil.rgb[i]));
      max_diff = std::max(max_diff, dlt);
      differing += dlt != 0;
    }
    std::printf("[decode] %-16s %-4s %-4s max |stb - PIL| = %d levels, %zu of %zu samples differ\n", name.c_str(),
                rec.at("format").get<std::string>().c_str(), rec.at("mode").get<std::string>().c_str(), max_diff,
                differing, ours.rgb.size());
    if (rec.at("format") == "PNG")
      EXPECT_EQ(max_diff, 0);
    else
      EXPECT_LE(max_diff, kJpegMaxLevels);
  }
}

struct Stats {
  double max_abs = 0;
  int64_t differing = 0, total = 0, cases = 0;
};

void compare_case(const nlohmann::json& cfg_meta, const nlohmann::json& c, const ProcessorConfig& cfg,
                  const std::map<std::string, at::Tensor>& expected, Stats& st) {
  const std::string key = c.at("key");
  std::vector<Image> images;
  std::string names;
  for (const auto& n : c.at("images")) {
    images.push_back(from_hwc(decoded().at(n.get<std::string>())));
    names += n.get<std::string>() + " ";
  }
  SCOPED_TRACE(key + ": " + names);
  if (!c.at("error").is_null()) {
    const std::string hf = c.at("error");
    std::string core = hf.substr(hf.find(": ") + 2);
    core = core.substr(0, core.find(", got"));
    try {
      preprocess(cfg, images);
      ADD_FAILURE() << "HF raised '" << hf << "', we did not";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(core), std::string::npos) << "ours: " << e.what() << "\nHF: " << hf;
    }
    return;
  }
  ProcessedImages out = preprocess(cfg, images);
  ++st.cases;
  std::vector<int64_t> shape;
  for (const auto& s : c.at("shape")) shape.push_back(s.get<int64_t>());
  ASSERT_EQ(out.pixel_values.sizes(), at::IntArrayRef(shape));
  at::Tensor got = out.pixel_values.reshape({-1}).to(at::kDouble), want;
  if (cfg_meta.at("storage") == "full") {
    want = expected.at(key + ".pixel_values").reshape({-1}).to(at::kDouble);
  } else {
    const int64_t stride = c.at("stride");
    got = got.slice(0, 0, got.size(0), stride);
    want = expected.at(key + ".pixel_values.sampled").to(at::kDouble);
    const double sum = out.pixel_values.to(at::kDouble).sum().item<double>();
    EXPECT_NEAR(sum, c.at("sum").get<double>(), 1e-9 * c.at("abs_sum").get<double>() + kProcessorTol * got.numel());
  }
  ASSERT_EQ(got.sizes(), want.sizes());
  at::Tensor diff = (got - want).abs();
  st.max_abs = std::max(st.max_abs, diff.max().item<double>());
  st.differing += diff.gt(0).sum().item<int64_t>();
  st.total += diff.numel();
  EXPECT_LE(diff.max().item<double>(), kProcessorTol);
  for (const char* extra : {"image_grid_thw", "image_sizes"}) {
    const std::string k = key + "." + extra;
    if (!expected.count(k)) continue;
    const at::Tensor& ours = std::string(extra) == "image_grid_thw" ? out.image_grid_thw : out.image_sizes;
    ASSERT_TRUE(ours.defined()) << extra;
    EXPECT_TRUE(at::equal(ours, expected.at(k))) << extra << ": ours " << ours << " HF " << expected.at(k);
  }
}

class VisionProcessorParity : public ::testing::TestWithParam<std::string> {};

TEST_P(VisionProcessorParity, MatchesHf) {
  VLM2MLA_NEED_IMAGE_FIXTURES();
  const nlohmann::json* cfg_meta = nullptr;
  for (const auto& c : meta().at("configs"))
    if (c.at("name") == GetParam()) cfg_meta = &c;
  ASSERT_NE(cfg_meta, nullptr) << GetParam() << " missing from meta.json";
  const std::string dir = fixture_dir() + "/" + cfg_meta->at("dir").get<std::string>();
  // Our default backend is the one AutoImageProcessor picks.
  if (cfg_meta->contains("auto_backend"))
    EXPECT_EQ(to_string(load_processor_config(dir).backend), cfg_meta->at("auto_backend").get<std::string>());
  ASSERT_FALSE(cfg_meta->at("classes").empty());
  for (const auto& run : cfg_meta->at("classes")) {
    const std::string cls = run.at("class");
    SCOPED_TRACE(cls);
    const ProcessorConfig cfg = load_processor_config(dir, parse_backend(run.at("backend"), "meta.json"));
    const auto expected = io::read_safetensors(fixture_dir() + "/" + run.at("file").get<std::string>());
    Stats st;
    for (const auto& c : run.at("cases")) compare_case(*cfg_meta, c, cfg, expected, st);
    std::printf("[parity] %-24s %-28s (%s): %lld cases, max abs err %.3g, %lld of %lld values differ\n",
                GetParam().c_str(), cls.c_str(), to_string(cfg.backend), static_cast<long long>(st.cases), st.max_abs,
                static_cast<long long>(st.differing), static_cast<long long>(st.total));
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, VisionProcessorParity,
                         ::testing::Values("tiny-clip", "tiny-clip-bigcrop", "tiny-llava-next", "tiny-qwen2-vl",
                                           "small-qwen2-vl-p14", "llava-1.5-7b-hf", "llama3-llava-next-8b-hf",
                                           "qwen2.5-vl-7b-instruct"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace vlm2mla::vision
