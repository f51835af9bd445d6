#include "vision/resample.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vlm2mla::vision {

namespace {

// Pillow: bicubic_filter, a = -0.5, second branch written (((x - 5) * x + 8) * x - 4) * a.
double pil_bicubic(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// ATen: HelperInterpCubic::aa_filter with cubic_convolution1/2, A = -0.5.
double aten_bicubic(double x) {
  const double A = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2.0) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0.0;
}

}  // namespace

AxisWeightsF64 bicubic_weights_f64(int in_size, int out_size, Resampler r) {
  VLM2MLA_CHECK(in_size > 0 && out_size > 0, ArgumentError, "bicubic resize: sizes must be positive (", in_size,
                " -> ", out_size, ")");
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;  // bicubic support 2, widened when downscaling
  AxisWeightsF64 w;
  w.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  w.start.resize(out_size);
  w.count.resize(out_size);
  w.k.assign(static_cast<size_t>(out_size) * w.ksize, 0.0);
  const double inv = 1.0 / filterscale;
  for (int i = 0; i < out_size; ++i) {
    const double center = r == Resampler::kPil ? 0.0 + (i + 0.5) * scale : scale * (i + 0.5);
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    int64_t n = xmax - xmin;
    if (r == Resampler::kTorchUint8) n = std::clamp<int64_t>(n, 0, w.ksize);
    double* k = &w.k[static_cast<size_t>(i) * w.ksize];
    double total = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const double x = (j + xmin - center + 0.5) * inv;
      const double v = r == Resampler::kPil ? pil_bicubic(x) : aten_bicubic(x);
      k[j] = v;
      total += v;
    }
    if (total != 0.0)
      for (int64_t j = 0; j < n; ++j) k[j] /= total;
    w.start[i] = static_cast<int>(xmin);
    w.count[i] = static_cast<int>(n);
  }
  return w;
}

AxisWeights bicubic_weights(int in_size, int out_size, Resampler r) {
  AxisWeightsF64 f = bicubic_weights_f64(in_size, out_size, r);
  AxisWeights w;
  w.in_size = in_size;
  w.out_size = out_size;
  w.ksize = f.ksize;
  w.start = f.start;
  w.count = f.count;
  if (r == Resampler::kPil) {
    w.precision = 22;  // PRECISION_BITS = 32 - 8 - 2
  } else {
    // _compute_index_ranges_int16_weights: the largest precision (< 22) under which the largest
    // weight of the axis, doubled, still fits int16.
    double wt_max = 0.0;
    for (int i = 0; i < out_size; ++i)
      for (int j = 0; j < f.count[i]; ++j) wt_max = std::max(wt_max, f.k[static_cast<size_t>(i) * f.ksize + j]);
    int p = 0;
    for (p = 0; p < 22; ++p) {
      const int next = static_cast<int>(0.5 + wt_max * (1 << (p + 1)));
      if (next >= (1 << 15)) break;
    }
    w.precision = p;
  }
  w.k.resize(f.k.size());
  const double one = static_cast<double>(1 << w.precision);
  for (size_t i = 0; i < f.k.size(); ++i) {
    const double v = f.k[i] * one;
    w.k[i] = v < 0 ? static_cast<int32_t>(-0.5 + v) : static_cast<int32_t>(0.5 + v);
    if (r == Resampler::kTorchUint8) w.k[i] = static_cast<int16_t>(w.k[i]);  // stored as int16
  }
  return w;
}

namespace {

inline uint8_t round_clamp(int64_t acc, int precision) {
  if (acc < 0) return 0;
  const int64_t v = acc >> precision;
  return static_cast<uint8_t>(v > 255 ? 255 : v);
}

Image horizontal(const Image& in, const AxisWeights& w) {  // [h, w_in, 3] -> [h, w_out, 3]
  Image out(w.out_size, in.height);
  const int64_t half = int64_t{1} << (w.precision - 1);
  for (int y = 0; y < in.height; ++y) {
    const uint8_t* row = &in.rgb[static_cast<size_t>(y) * in.width * 3];
    for (int x = 0; x < w.out_size; ++x) {
      const int32_t* k = &w.k[static_cast<size_t>(x) * w.ksize];
      const int s = w.start[x], n = w.count[x];
      for (int c = 0; c < 3; ++c) {
        int64_t acc = half;
        for (int j = 0; j < n; ++j) acc += static_cast<int64_t>(row[(s + j) * 3 + c]) * k[j];
        out.at(y, x, c) = round_clamp(acc, w.precision);
      }
    }
  }
  return out;
}

Image vertical(const Image& in, const AxisWeights& w) {  // [h_in, w, 3] -> [h_out, w, 3]
  Image out(in.width, w.out_size);
  const int64_t half = int64_t{1} << (w.precision - 1);
  const size_t stride = static_cast<size_t>(in.width) * 3;
  for (int y = 0; y < w.out_size; ++y) {
    const int32_t* k = &w.k[static_cast<size_t>(y) * w.ksize];
    const int s = w.start[y], n = w.count[y];
    for (size_t i = 0; i < stride; ++i) {
      int64_t acc = half;
      for (int j = 0; j < n; ++j) acc += static_cast<int64_t>(in.rgb[(s + j) * stride + i]) * k[j];
      out.rgb[static_cast<size_t>(y) * stride + i] = round_clamp(acc, w.precision);
    }
  }
  return out;
}

}  // namespace

Image resize_bicubic(const Image& in, int out_w, int out_h, Resampler r) {
  VLM2MLA_CHECK(in.width > 0 && in.height > 0 && out_w > 0 && out_h > 0, ArgumentError,
                "bicubic resize: empty size (", in.width, "x", in.height, " -> ", out_w, "x", out_h, ")");
  Image cur = in;
  if (out_w != in.width) cur = horizontal(cur, bicubic_weights(in.width, out_w, r));
  if (out_h != in.height) cur = vertical(cur, bicubic_weights(in.height, out_h, r));
  return cur;
}

}  // namespace vlm2mla::vision
