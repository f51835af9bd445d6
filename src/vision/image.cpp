#include "vision/image.h"

#include <stb_image.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"

namespace vlm2mla::vision {

namespace {

enum class Format { kPng, kJpeg, kOther };

Format sniff(const std::string& b) {
  static const char kPngMagic[] = "\x89PNG\r\n\x1a\n";
  if (b.size() >= 8 && std::memcmp(b.data(), kPngMagic, 8) == 0) return Format::kPng;
  if (b.size() >= 3 && static_cast<uint8_t>(b[0]) == 0xFF && static_cast<uint8_t>(b[1]) == 0xD8 &&
      static_cast<uint8_t>(b[2]) == 0xFF)
    return Format::kJpeg;
  return Format::kOther;
}

// stb decodes a JPEG cut short by filling the missing blocks; PIL refuses it ("image file is
// truncated"). A complete baseline or progressive JPEG has an EOI marker after its last scan.
bool jpeg_has_end_marker(const std::string& b) {
  size_t last_sos = std::string::npos;
  for (size_t i = 0; i + 1 < b.size(); ++i)
    if (static_cast<uint8_t>(b[i]) == 0xFF && static_cast<uint8_t>(b[i + 1]) == 0xDA) last_sos = i;
  if (last_sos == std::string::npos) return false;
  for (size_t i = last_sos + 2; i + 1 < b.size(); ++i)
    if (static_cast<uint8_t>(b[i]) == 0xFF && static_cast<uint8_t>(b[i + 1]) == 0xD9) return true;
  return false;
}

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown reason";
}

std::string read_all(const std::string& path) {
  VLM2MLA_CHECK(fs::exists(path), IoError, path, ": no such file");
  VLM2MLA_CHECK(!fs::is_directory(path), IoError, path, ": is a directory, expected an image file");
  std::ifstream in(path, std::ios::binary);
  VLM2MLA_CHECK(in.good(), IoError, path, ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  VLM2MLA_CHECK(!in.bad(), IoError, path, ": read failed");
  return ss.str();
}

}  // namespace

Image decode_image(const std::string& bytes, const std::string& name) {
  VLM2MLA_CHECK(!bytes.empty(), FormatError, name, ": empty file (0 bytes), expected a PNG or JPEG image");
  const Format format = sniff(bytes);
  VLM2MLA_CHECK(format != Format::kOther, FormatError, name,
                ": unsupported image format (only PNG and JPEG are read; the file starts with neither "
                "signature)");
  VLM2MLA_CHECK(bytes.size() <= static_cast<size_t>(INT32_MAX), FormatError, name, ": file too large");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  int w = 0, h = 0, channels = 0;
  VLM2MLA_CHECK(stbi_info_from_memory(data, len, &w, &h, &channels), FormatError, name,
                ": not a readable ", format == Format::kPng ? "PNG" : "JPEG", " image (stb_image: ",
                stb_reason(), ")");
  if (format == Format::kJpeg)
    VLM2MLA_CHECK(jpeg_has_end_marker(bytes), FormatError, name,
                  ": truncated JPEG (no end-of-image marker after the last scan; PIL refuses such "
                  "files too)");
  Image img;
  if (format == Format::kPng && stbi_is_16_bit_from_memory(data, len)) {
    std::unique_ptr<stbi_us, void (*)(void*)> px(stbi_load_16_from_memory(data, len, &w, &h, &channels, 0),
                                                 stbi_image_free);
    VLM2MLA_CHECK(px != nullptr, FormatError, name, ": cannot decode the 16-bit PNG (stb_image: ",
                  stb_reason(), ")");
    img = Image(w, h);
    const size_t n = static_cast<size_t>(w) * h;
    for (size_t i = 0; i < n; ++i) {
      const stbi_us* p = px.get() + i * channels;
      for (int c = 0; c < 3; ++c) {
        uint8_t v;
        if (channels <= 2)  // I;16 clips; LA;16B keeps the high byte
          v = channels == 1 ? static_cast<uint8_t>(std::min<int>(p[0], 255)) : static_cast<uint8_t>(p[0] >> 8);
        else
          v = static_cast<uint8_t>(p[c] >> 8);
        img.rgb[i * 3 + c] = v;
      }
    }
    return img;
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> px(stbi_load_from_memory(data, len, &w, &h, &channels, 3),
                                               stbi_image_free);
  VLM2MLA_CHECK(px != nullptr, FormatError, name, ": cannot decode the ",
                format == Format::kPng ? "PNG" : "JPEG", " image (stb_image: ", stb_reason(), ")");
  VLM2MLA_CHECK(w > 0 && h > 0, FormatError, name, ": image has no pixels (", w, "x", h, ")");
  img.width = w;
  img.height = h;
  img.rgb.assign(px.get(), px.get() + static_cast<size_t>(w) * h * 3);
  return img;
}

Image load_image(const std::string& path) { return decode_image(read_all(path), path); }

}  // namespace vlm2mla::vision
