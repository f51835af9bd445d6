// `vlm2mla preprocess` end to end: outputs equal the library's, and bad input gives exit 1 with
// "error: ..." naming the file, never a crash, never a half-written output.
#include <gtest/gtest.h>
#include <stb_image_write.h>

#include "core/fs.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "support/test_support.h"
#include "vision/image.h"
#include "vision/processor_config.h"
#include "vision/processors.h"

namespace vlm2mla::vision {
namespace {

using testing::CliResult;
using testing::run_cli;
using testing::TempDir;

void expect_error(const CliResult& r, const std::vector<std::string>& parts) {
  EXPECT_FALSE(r.crashed) << "crashed; stderr: " << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "missing '" << p << "' in: " << r.err;
}

// A model directory with a preprocessor_config.json and two PNG images beside it.
struct CliSetup {
  TempDir dir;
  std::string model, img_a, img_b;
  explicit CliSetup(const std::string& config_json) {
    model = dir.file("model");
    fs::create_directories(model);
    testing::write_bytes(model + "/preprocessor_config.json", config_json);
    img_a = dir.file("a.png");
    img_b = dir.file("b.png");
    std::vector<uint8_t> a(37 * 23 * 3), b(20 * 45 * 4);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 13 % 251);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 % 253);
    EXPECT_TRUE(stbi_write_png(img_a.c_str(), 37, 23, 3, a.data(), 37 * 3));
    EXPECT_TRUE(stbi_write_png(img_b.c_str(), 20, 45, 4, b.data(), 20 * 4));
  }
};

const char* kQwen = R"({"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 64, "max_pixels": 1024,
                        "patch_size": 4, "temporal_patch_size": 2, "merge_size": 2})";
const char* kNext = R"({"image_processor_type": "LlavaNextImageProcessor", "size": {"shortest_edge": 12},
                        "crop_size": {"height": 12, "width": 12}, "image_grid_pinpoints": [[12, 24], [24, 12], [24, 24]]})";
const char* kClip = R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 10},
                        "crop_size": {"height": 10, "width": 10}})";

TEST(VisionCli, OutputsEqualTheLibrary) {
  for (const char* cfg_json : {kQwen, kNext, kClip}) {
    for (const char* backend : {"", "pil"}) {
      CliSetup s(cfg_json);
      const std::string out = s.dir.file("out.safetensors");
      std::vector<std::string> args = {"preprocess", "--model", s.model, "--image", s.img_a, "--image", s.img_b, "--out", out};
      if (*backend) args.insert(args.end(), {"--backend", backend});
      CliResult r = run_cli(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      auto t = io::read_safetensors(out);
      const ProcessorConfig cfg = load_processor_config(
          s.model, *backend ? std::optional<Backend>(parse_backend(backend, "test")) : std::nullopt);
      ProcessedImages want = preprocess(cfg, {load_image(s.img_a), load_image(s.img_b)});
      ASSERT_TRUE(t.count("pixel_values"));
      EXPECT_EQ(t.at("pixel_values").scalar_type(), at::kFloat);
      EXPECT_TRUE(at::equal(t.at("pixel_values"), want.pixel_values));
      if (want.image_grid_thw.defined()) {
        EXPECT_EQ(t.at("image_grid_thw").scalar_type(), at::kLong);
        EXPECT_TRUE(at::equal(t.at("image_grid_thw"), want.image_grid_thw));
      }
      if (want.image_sizes.defined()) {
        EXPECT_TRUE(at::equal(t.at("image_sizes"), want.image_sizes));
        EXPECT_EQ(t.at("image_sizes")[1][0].item<int64_t>(), 45);  // (height, width)
      }
      EXPECT_EQ(t.count("image_grid_thw") + t.count("image_sizes"), cfg.kind == ProcessorKind::kClip ? 0u : 1u);
    }
  }
}

TEST(VisionCli, MissingConfig) {
  CliSetup s(kQwen);
  fs::remove_all(s.model + "/preprocessor_config.json");
  const std::string out = s.dir.file("o.safetensors");
  expect_error(run_cli({"preprocess", "--model", s.model, "--image", s.img_a, "--out", out}),
               {"preprocessor_config.json", "missing"});
  EXPECT_FALSE(fs::exists(out));
}

TEST(VisionCli, UnknownProcessorType) {
  CliSetup s(R"({"image_processor_type": "SiglipImageProcessor"})");
  expect_error(run_cli({"preprocess", "--model", s.model, "--image", s.img_a, "--out", s.dir.file("o")}),
               {"preprocessor_config.json", "SiglipImageProcessor", "CLIPImageProcessor", "LlavaNextImageProcessor",
                "Qwen2VLImageProcessor"});
}

TEST(VisionCli, BadImages) {
  CliSetup s(kClip);
  const std::string out = s.dir.file("o.safetensors");
  auto run = [&](const std::string& img) {
    return run_cli({"preprocess", "--model", s.model, "--image", s.img_a, "--image", img, "--out", out});
  };
  testing::write_bytes(s.dir.file("zero.png"), "");
  expect_error(run(s.dir.file("zero.png")), {"zero.png", "0 bytes"});
  testing::write_bytes(s.dir.file("junk.jpg"), std::string("\xff\xd8\xff\xe0", 4) + std::string(100, '\x01'));
  expect_error(run(s.dir.file("junk.jpg")), {"junk.jpg", "stb_image"});
  expect_error(run(s.dir.path()), {s.dir.path(), "directory"});
  expect_error(run(s.dir.file("nope.png")), {"nope.png"});
  const std::string png = testing::read_bytes(s.img_a);
  testing::write_bytes(s.dir.file("cut.png"), png.substr(0, png.size() / 2));
  expect_error(run(s.dir.file("cut.png")), {"cut.png"});
  EXPECT_FALSE(fs::exists(out));
  // A usage error (no --image) is CLI11's exit code, not 1.
  CliResult r = run_cli({"preprocess", "--model", s.model, "--out", out});
  EXPECT_GE(r.exit_code, 2) << r.err;
}

TEST(VisionCli, QwenAspectRatio) {
  CliSetup s(kQwen);
  std::vector<uint8_t> px(201 * 3, 100);
  const std::string img = s.dir.file("thin.png");
  ASSERT_TRUE(stbi_write_png(img.c_str(), 201, 1, 3, px.data(), 201 * 3));
  const std::string out = s.dir.file("o.safetensors");
  expect_error(run_cli({"preprocess", "--model", s.model, "--image", img, "--out", out}),
               {"absolute aspect ratio must be smaller than 200"});
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace vlm2mla::vision
