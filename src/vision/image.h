// Decoded images: 8-bit RGB, as PIL's Image.open(path).convert("RGB") gives them to the HF processors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vlm2mla::vision {

// 8-bit RGB pixels, row-major, interleaved: rgb[(y * width + x) * 3 + c].  // [h, w, 3]
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * h * 3, 0) {}
  uint8_t& at(int y, int x, int c) { return rgb[(static_cast<size_t>(y) * width + x) * 3 + c]; }
  uint8_t at(int y, int x, int c) const { return rgb[(static_cast<size_t>(y) * width + x) * 3 + c]; }
};

// Reads and decodes a PNG or JPEG file (stb_image) into RGB the way PIL's convert("RGB") does:
//   grayscale (L, 8-bit)      -> R = G = B = L
//   gray + alpha (LA)         -> alpha dropped, not composited (PIL drops it too)
//   RGBA                      -> alpha dropped, not composited
//   palette (P), with or without tRNS -> the palette's RGB
//   16-bit RGB/RGBA/LA PNG    -> the high byte of each sample (PIL's "RGB;16B" unpacker)
//   16-bit grayscale PNG      -> min(value, 255) (PIL opens it as mode I;16 and clips to 8 bits)
// EXIF orientation is ignored: the HF processors do not apply it either (only
// transformers.image_utils.load_image calls ImageOps.exif_transpose before a processor runs).
// Errors: IoError (missing, a directory, unreadable), FormatError (empty, not PNG/JPEG, corrupt,
// truncated JPEG without its end marker), each naming the file and what stb said.
Image load_image(const std::string& path);

// The same from bytes in memory; `name` is used in error messages.
Image decode_image(const std::string& bytes, const std::string& name);

}  // namespace vlm2mla::vision
