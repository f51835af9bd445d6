// Image decoding: PIL's convert("RGB") semantics for every PNG color type we write here with
// stb_image_write, and clear errors naming the file for everything that is not a complete PNG/JPEG.
#include <gtest/gtest.h>
#include <stb_image_write.h>

#include "core/error.h"
#include "support/test_support.h"
#include "vision/image.h"

namespace vlm2mla::vision {
namespace {

using testing::TempDir;

std::string write_png(const TempDir& d, const std::string& name, int w, int h, int comp, const std::vector<uint8_t>& px) {
  const std::string path = d.file(name);
  EXPECT_TRUE(stbi_write_png(path.c_str(), w, h, comp, px.data(), w * comp));
  return path;
}

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  return v;
}

template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(VisionDecode, ColorTypesToRgb) {
  TempDir d;
  const int w = 5, h = 3;
  for (int comp : {1, 2, 3, 4}) {
    auto px = pattern(static_cast<size_t>(w) * h * comp);
    Image img = load_image(write_png(d, "c" + std::to_string(comp) + ".png", w, h, comp, px));
    ASSERT_EQ(img.width, w);
    ASSERT_EQ(img.height, h);
    for (int i = 0; i < w * h; ++i)
      for (int c = 0; c < 3; ++c) {
        // gray (and gray+alpha) -> replicated; RGB(A) -> its RGB; alpha dropped, never composited
        const uint8_t want = comp <= 2 ? px[i * comp] : px[i * comp + c];
        ASSERT_EQ(img.rgb[i * 3 + c], want) << "comp " << comp << " pixel " << i;
      }
  }
}

TEST(VisionDecode, OddSizes) {
  TempDir d;
  Image one = load_image(write_png(d, "one.png", 1, 1, 3, {1, 2, 3}));
  EXPECT_EQ(one.rgb, (std::vector<uint8_t>{1, 2, 3}));
  Image wide = load_image(write_png(d, "wide.png", 4000, 20, 3, pattern(4000 * 20 * 3)));
  EXPECT_EQ(wide.width, 4000);
  EXPECT_EQ(wide.height, 20);
}

TEST(VisionDecode, Jpeg) {
  TempDir d;
  const std::string path = d.file("a.jpg");
  auto px = pattern(16 * 8 * 3);
  ASSERT_TRUE(stbi_write_jpg(path.c_str(), 16, 8, 3, px.data(), 95));
  Image img = load_image(path);
  EXPECT_EQ(img.width, 16);
  EXPECT_EQ(img.height, 8);
  // Truncated: cut before the end-of-image marker.
  const std::string bytes = testing::read_bytes(path);
  testing::write_bytes(d.file("cut.jpg"), bytes.substr(0, bytes.size() - 40));
  expect_error([&] { load_image(d.file("cut.jpg")); }, {"cut.jpg", "truncated"});
  testing::write_bytes(d.file("header.jpg"), bytes.substr(0, 20));
  expect_error([&] { load_image(d.file("header.jpg")); }, {"header.jpg"});
}

TEST(VisionDecode, BadFiles) {
  TempDir d;
  expect_error([&] { load_image(d.file("missing.png")); }, {"missing.png", "no such file"});
  expect_error([&] { load_image(d.path()); }, {d.path(), "directory"});
  testing::write_bytes(d.file("empty.png"), "");
  expect_error([&] { load_image(d.file("empty.png")); }, {"empty.png", "0 bytes"});
  testing::write_bytes(d.file("text.png"), "hello, not an image");
  expect_error([&] { load_image(d.file("text.png")); }, {"text.png", "unsupported image format"});
  testing::write_bytes(d.file("gif.gif"), "GIF89a\x01\x00\x01\x00\x00\x00\x00;");
  expect_error([&] { load_image(d.file("gif.gif")); }, {"gif.gif", "only PNG and JPEG"});
  // A PNG signature followed by garbage: stb's reason is part of the message.
  testing::write_bytes(d.file("bad.png"), std::string("\x89PNG\r\n\x1a\n", 8) + std::string(64, 'x'));
  expect_error([&] { load_image(d.file("bad.png")); }, {"bad.png", "stb_image"});
  // A truncated PNG (IDAT cut).
  const std::string good = testing::read_bytes(write_png(d, "g.png", 64, 64, 3, pattern(64 * 64 * 3)));
  testing::write_bytes(d.file("cut.png"), good.substr(0, good.size() / 2));
  expect_error([&] { load_image(d.file("cut.png")); }, {"cut.png"});
}

// Corrupted files (bytes flipped, cut anywhere): a clean Error or a decoded image, never a crash.
TEST(VisionDecode, MutatedFilesNeverCrash) {
  TempDir d;
  const std::string png = testing::read_bytes(write_png(d, "m.png", 23, 17, 4, pattern(23 * 17 * 4)));
  auto px = pattern(24 * 16 * 3);
  ASSERT_TRUE(stbi_write_jpg(d.file("m.jpg").c_str(), 24, 16, 3, px.data(), 90));
  const std::string jpg = testing::read_bytes(d.file("m.jpg"));
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  int decoded = 0, refused = 0;
  for (const std::string* base : {&png, &jpg}) {
    for (int trial = 0; trial < 300; ++trial) {
      std::string b = *base;
      const int flips = 1 + next() % 8;
      for (int f = 0; f < flips; ++f) b[8 + next() % (b.size() - 8)] = static_cast<char>(next() >> 24);
      if (trial % 3 == 0) b.resize(next() % b.size());
      try {
        Image img = decode_image(b, "mutated");
        EXPECT_EQ(img.rgb.size(), static_cast<size_t>(img.width) * img.height * 3);
        ++decoded;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("mutated"), std::string::npos) << e.what();
        ++refused;
      }
    }
  }
  EXPECT_EQ(decoded + refused, 600);
}

}  // namespace
}  // namespace vlm2mla::vision
