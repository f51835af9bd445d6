// Bicubic resizing of 8-bit RGB images, bit-exact with the two resamplers the HF processors use:
//   kPil:        Pillow's Image.resize(size, BICUBIC) (src/libImaging/Resample.c): separable, the
//                horizontal pass first, filter support scaled by the downscale factor (antialias),
//                double weights normalized per output pixel, rounded to fixed point with 22 fractional
//                bits, each pass rounded and clipped to uint8.
//   kTorchUint8: torch.nn.functional.interpolate(uint8, mode="bicubic", antialias=True) on CPU, the
//                path torchvision's resize takes for uint8 images (the HF torchvision-backend
//                processors): the same support and centering, the Keys cubic written as ATen writes
//                it, weights quantized to int16 with a per-axis precision chosen from the largest
//                weight, width pass first, each pass rounded and clamped to uint8.
// Both skip an axis whose size does not change (an identity there).
#pragma once

#include <cstdint>
#include <vector>

#include "vision/image.h"

namespace vlm2mla::vision {

enum class Resampler { kPil, kTorchUint8 };

// The integer weights of one axis: output i reads inputs [start[i], start[i] + count[i]) with
// weights k[i * ksize + j]; sum + (1 << (precision - 1)), shifted right by precision, clamped.
struct AxisWeights {
  int in_size = 0, out_size = 0, ksize = 0, precision = 0;
  std::vector<int> start, count;
  std::vector<int32_t> k;  // [out_size, ksize]
};

// The double weights before quantization (normalized to sum 1), for tests: [out_size, ksize].
struct AxisWeightsF64 {
  int ksize = 0;
  std::vector<int> start, count;
  std::vector<double> k;
};
AxisWeightsF64 bicubic_weights_f64(int in_size, int out_size, Resampler r);
AxisWeights bicubic_weights(int in_size, int out_size, Resampler r);

// Resizes to out_w x out_h (both >= 1). Throws ArgumentError on empty sizes.
Image resize_bicubic(const Image& in, int out_w, int out_h, Resampler r);

}  // namespace vlm2mla::vision
