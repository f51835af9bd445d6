#include "vision/processors.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace vlm2mla::vision {

std::pair<int64_t, int64_t> shortest_edge_size(int64_t height, int64_t width, int64_t shortest_edge) {
  const int64_t short_side = std::min(height, width), long_side = std::max(height, width);
  // Python: int(size * long / short), a true division truncated toward zero.
  const int64_t new_long =
      static_cast<int64_t>(static_cast<double>(shortest_edge * long_side) / static_cast<double>(short_side));
  return width <= height ? std::make_pair(new_long, shortest_edge) : std::make_pair(shortest_edge, new_long);
}

std::pair<int64_t, int64_t> select_best_resolution(int64_t height, int64_t width,
                                                   const std::vector<std::pair<int64_t, int64_t>>& pinpoints) {
  VLM2MLA_CHECK(!pinpoints.empty(), ArgumentError, "select_best_resolution: no image_grid_pinpoints");
  std::pair<int64_t, int64_t> best{0, 0};
  int64_t max_effective = 0;
  double min_wasted = std::numeric_limits<double>::infinity();
  bool found = false;
  for (const auto& [h, w] : pinpoints) {
    const double scale = std::min(static_cast<double>(w) / width, static_cast<double>(h) / height);
    const int64_t dw = static_cast<int64_t>(width * scale), dh = static_cast<int64_t>(height * scale);
    const int64_t effective = std::min(dw * dh, width * height);
    const int64_t wasted = w * h - effective;
    if (effective > max_effective || (effective == max_effective && static_cast<double>(wasted) < min_wasted)) {
      max_effective = effective;
      min_wasted = static_cast<double>(wasted);
      best = {h, w};
      found = true;
    }
  }
  // Python returns None here (only possible when every pinpoint gives zero effective pixels).
  VLM2MLA_CHECK(found, ArgumentError, "select_best_resolution: no pinpoint fits a ", width, "x", height, " image");
  return best;
}

std::pair<int64_t, int64_t> patch_output_size(int64_t height, int64_t width, int64_t target_h, int64_t target_w) {
  const double scale_w = static_cast<double>(target_w) / width;
  const double scale_h = static_cast<double>(target_h) / height;
  if (scale_w < scale_h)
    return {std::min(static_cast<int64_t>(std::ceil(height * scale_w)), target_h), target_w};
  return {target_h, std::min(static_cast<int64_t>(std::ceil(width * scale_h)), target_w)};
}

std::pair<int64_t, int64_t> smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                         int64_t max_pixels) {
  VLM2MLA_CHECK(height > 0 && width > 0, ArgumentError, "smart_resize: empty image (", width, "x", height, ")");
  const double ratio = static_cast<double>(std::max(height, width)) / static_cast<double>(std::min(height, width));
  if (ratio > 200) {
    std::ostringstream os;
    os.precision(17);
    os << "absolute aspect ratio must be smaller than 200, got " << ratio << " (image " << width << "x" << height
       << "; Qwen2-VL's smart_resize refuses it)";
    throw ArgumentError(os.str());
  }
  const double f = static_cast<double>(factor);
  // Python's round() rounds half to even, as nearbyint does in the default rounding mode.
  int64_t h_bar = static_cast<int64_t>(std::nearbyint(height / f)) * factor;
  int64_t w_bar = static_cast<int64_t>(std::nearbyint(width / f)) * factor;
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(static_cast<double>(height * width) / static_cast<double>(max_pixels));
    h_bar = std::max(factor, static_cast<int64_t>(std::floor(height / beta / f)) * factor);
    w_bar = std::max(factor, static_cast<int64_t>(std::floor(width / beta / f)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / static_cast<double>(height * width));
    h_bar = static_cast<int64_t>(std::ceil(height * beta / f)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(width * beta / f)) * factor;
  }
  return {h_bar, w_bar};
}

namespace {

// Copies img into a zero canvas of (h, w) at (top, left); parts outside are cut.
Image paste(const Image& img, int64_t h, int64_t w, int64_t top, int64_t left) {
  Image out(static_cast<int>(w), static_cast<int>(h));
  for (int64_t y = 0; y < img.height; ++y) {
    const int64_t oy = y + top;
    if (oy < 0 || oy >= h) continue;
    for (int64_t x = 0; x < img.width; ++x) {
      const int64_t ox = x + left;
      if (ox < 0 || ox >= w) continue;
      for (int c = 0; c < 3; ++c) out.at(static_cast<int>(oy), static_cast<int>(ox), c) = img.at(y, x, c);
    }
  }
  return out;
}

Image crop(const Image& img, int64_t top, int64_t left, int64_t h, int64_t w) {  // inside the image
  return paste(img, h, w, -top, -left);
}

Image resize_to(const Image& img, int64_t h, int64_t w, const ProcessorConfig& cfg) {
  VLM2MLA_CHECK(h > 0 && w > 0, ArgumentError, cfg.source, ": resizing a ", img.width, "x", img.height,
                " image gives an empty size (", w, "x", h, ")");
  VLM2MLA_CHECK(h < (1 << 20) && w < (1 << 20), ArgumentError, cfg.source, ": resizing a ", img.width, "x",
                img.height, " image gives ", w, "x", h, ", too large");
  if (h == img.height && w == img.width) return img;  // both backends return the input unchanged
  return resize_bicubic(img, static_cast<int>(w), static_cast<int>(h), cfg.resampler());
}

// The processor's resize with its `size` dict (shortest_edge or height/width).
Image resize_with_size(const Image& img, const ProcessorConfig& cfg) {
  if (cfg.size_shortest_edge > 0 && cfg.size_longest_edge == 0) {
    auto [h, w] = shortest_edge_size(img.height, img.width, cfg.size_shortest_edge);
    return resize_to(img, h, w, cfg);
  }
  VLM2MLA_CHECK(cfg.size_height > 0 && cfg.size_width > 0, FormatError, cfg.source,
                ": 'size' must contain 'shortest_edge' or 'height' and 'width'");
  return resize_to(img, cfg.size_height, cfg.size_width, cfg);
}

}  // namespace

Image resize_image(const Image& img, int64_t h, int64_t w, const ProcessorConfig& cfg) {
  return resize_to(img, h, w, cfg);
}

Image center_crop(const Image& img, int64_t crop_h, int64_t crop_w, Backend backend) {
  const int64_t h = img.height, w = img.width;
  switch (backend) {
    case Backend::kPil: {
      // image_transforms.center_crop: floor offsets; if the crop is larger, a zero canvas with the
      // image placed at ceil((new - orig) / 2).
      auto floordiv = [](int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
      int64_t top = floordiv(h - crop_h, 2), left = floordiv(w - crop_w, 2);
      if (top >= 0 && left >= 0 && top + crop_h <= h && left + crop_w <= w) return crop(img, top, left, crop_h, crop_w);
      const int64_t nh = std::max(crop_h, h), nw = std::max(crop_w, w);
      const int64_t top_pad = (nh - h + 1) / 2, left_pad = (nw - w + 1) / 2;
      Image canvas = paste(img, nh, nw, top_pad, left_pad);
      top += top_pad;
      left += left_pad;
      const int64_t y0 = std::max<int64_t>(0, top), y1 = std::min(nh, top + crop_h);
      const int64_t x0 = std::max<int64_t>(0, left), x1 = std::min(nw, left + crop_w);
      return crop(canvas, y0, x0, y1 - y0, x1 - x0);
    }
    case Backend::kTorchvision: {
      Image cur = img;
      int64_t ch = h, cw = w;
      if (crop_w > w || crop_h > h) {
        const int64_t pl = crop_w > w ? (crop_w - w) / 2 : 0, pt = crop_h > h ? (crop_h - h) / 2 : 0;
        const int64_t pr = crop_w > w ? (crop_w - w + 1) / 2 : 0, pb = crop_h > h ? (crop_h - h + 1) / 2 : 0;
        ch = h + pt + pb;
        cw = w + pl + pr;
        cur = paste(img, ch, cw, pt, pl);
        if (crop_w == cw && crop_h == ch) return cur;
      }
      const int64_t top = static_cast<int64_t>((ch - crop_h) / 2.0), left = static_cast<int64_t>((cw - crop_w) / 2.0);
      return crop(cur, top, left, crop_h, crop_w);
    }
  }
  return img;
}

at::Tensor to_normalized_chw(const Image& img, const ProcessorConfig& cfg) {
  const int64_t h = img.height, w = img.width;
  at::Tensor out = at::empty({3, h, w}, at::kFloat);  // [3, h, w]
  float* o = out.data_ptr<float>();
  const size_t plane = static_cast<size_t>(h) * w;
  for (int c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(cfg.image_mean[c]);
    const float stdv = static_cast<float>(cfg.image_std[c]);
    // Per-backend arithmetic, each step rounded to float32 as numpy / torch round it.
    float m = mean, s = stdv;
    if (cfg.backend == Backend::kTorchvision && cfg.do_rescale && cfg.do_normalize) {
      // _fuse_mean_std_and_rescale_factor: torch.tensor(mean) * (1.0 / rescale_factor), in float32.
      const float inv = static_cast<float>(1.0 / cfg.rescale_factor);
      m = mean * inv;
      s = stdv * inv;
    }
    const float rf32 = static_cast<float>(cfg.rescale_factor);
    for (size_t i = 0; i < plane; ++i) {
      const uint8_t x = img.rgb[i * 3 + c];
      float v = 0.0f;
      switch (cfg.backend) {
        case Backend::kTorchvision:
          if (cfg.do_normalize) {
            const float d = static_cast<float>(x) - m;  // normalize(x.float(), mean * 255, std * 255)
            v = d / s;
          } else if (cfg.do_rescale) {
            v = static_cast<float>(x) * rf32;  // uint8 tensor * python float -> float32
          } else {
            v = static_cast<float>(x);
          }
          break;
        case Backend::kPil:
          v = cfg.do_rescale ? static_cast<float>(static_cast<double>(x) * cfg.rescale_factor)  // float64, then float32
                             : static_cast<float>(x);
          if (cfg.do_normalize) {
            const float d = v - m;
            v = d / s;
          }
          break;
      }
      o[static_cast<size_t>(c) * plane + i] = v;
    }
  }
  return out;
}

at::Tensor qwen_patchify(const at::Tensor& chw, int64_t p, int64_t m, int64_t t) {
  const int64_t c = chw.size(0), h = chw.size(1), w = chw.size(2);
  VLM2MLA_CHECK(h % (p * m) == 0 && w % (p * m) == 0, ArgumentError, "Qwen2-VL patchify: image ", w, "x", h,
                " is not a multiple of patch_size * merge_size = ", p * m);
  const int64_t gh = h / p, gw = w / p;
  // [c, h, w] -> [t, c, gh/m, m, p, gw/m, m, p] -> [gh/m, gw/m, m, m, c, t, p, p]
  at::Tensor x = chw.unsqueeze(0).expand({t, c, h, w}).reshape({t, c, gh / m, m, p, gw / m, m, p});
  x = x.permute({2, 5, 3, 6, 1, 0, 4, 7});
  return x.reshape({gh * gw, c * t * p * p}).contiguous();  // [gh * gw, c * t * p * p]
}

namespace {

ProcessedImages preprocess_clip(const ProcessorConfig& cfg, const std::vector<Image>& images) {
  std::vector<at::Tensor> out;
  for (const Image& src : images) {
    Image img = cfg.do_resize ? resize_with_size(src, cfg) : src;
    if (cfg.do_center_crop) img = center_crop(img, cfg.crop_height, cfg.crop_width, cfg.backend);
    out.push_back(to_normalized_chw(img, cfg));
  }
  for (const auto& t : out)
    VLM2MLA_CHECK(t.sizes() == out[0].sizes(), ArgumentError, cfg.source,
                  ": images of different processed sizes cannot be stacked (", out[0].sizes(), " vs ", t.sizes(),
                  "); enable do_center_crop");
  ProcessedImages r;
  r.pixel_values = at::stack(out, 0);  // [n, 3, H, W]
  return r;
}

ProcessedImages preprocess_llava_next(const ProcessorConfig& cfg, const std::vector<Image>& images) {
  const int64_t base_h = cfg.size_height > 0 && cfg.size_width > 0 ? cfg.size_height : cfg.size_shortest_edge;
  const int64_t base_w = cfg.size_height > 0 && cfg.size_width > 0 ? cfg.size_width : cfg.size_shortest_edge;
  const int64_t patch = cfg.crop_height > 0 ? cfg.crop_height : (cfg.size_height > 0 ? cfg.size_height : cfg.size_shortest_edge);
  VLM2MLA_CHECK(patch > 0 && base_h > 0 && base_w > 0, FormatError, cfg.source,
                ": LLaVA-NeXT needs crop_size or size to set the patch size");
  std::vector<at::Tensor> per_image;
  std::vector<int64_t> sizes;
  for (const Image& src : images) {
    const auto [bh, bw] = select_best_resolution(src.height, src.width, cfg.image_grid_pinpoints);
    const auto [nh, nw] = patch_output_size(src.height, src.width, bh, bw);
    const Image resized = resize_to(src, nh, nw, cfg);
    // Pad to the pinpoint, centered; the odd pixel goes right / bottom.
    const Image padded = paste(resized, bh, bw, (bh - nh) / 2, (bw - nw) / 2);
    std::vector<Image> patches;
    patches.push_back(resize_to(src, base_h, base_w, cfg));  // the whole image, squashed
    for (int64_t y = 0; y < bh; y += patch)
      for (int64_t x = 0; x < bw; x += patch)
        patches.push_back(crop(padded, y, x, std::min(patch, bh - y), std::min(patch, bw - x)));
    std::vector<at::Tensor> pv;
    for (Image& p : patches) {
      if (cfg.do_resize) p = resize_with_size(p, cfg);
      if (cfg.do_center_crop) p = center_crop(p, cfg.crop_height, cfg.crop_width, cfg.backend);
      pv.push_back(to_normalized_chw(p, cfg));
    }
    for (const auto& t : pv)
      VLM2MLA_CHECK(t.sizes() == pv[0].sizes(), ArgumentError, cfg.source, ": LLaVA-NeXT patches of different sizes (",
                    pv[0].sizes(), " vs ", t.sizes(), ") cannot be stacked");
    per_image.push_back(at::stack(pv, 0));  // [patches, 3, H, W]
    sizes.push_back(src.height);
    sizes.push_back(src.width);
  }
  int64_t max_patches = 0;
  for (const auto& t : per_image) max_patches = std::max(max_patches, t.size(0));
  for (auto& t : per_image) {
    if (t.size(0) == max_patches) continue;
    VLM2MLA_CHECK(cfg.do_pad, ArgumentError, cfg.source,
                  ": images give different numbers of patches and do_pad is false; cannot batch them");
    at::Tensor padded = at::zeros({max_patches, t.size(1), t.size(2), t.size(3)}, at::kFloat);
    padded.narrow(0, 0, t.size(0)).copy_(t);
    t = padded;
  }
  ProcessedImages r;
  r.pixel_values = at::stack(per_image, 0);  // [n, max_patches, 3, H, W]
  r.image_sizes = at::tensor(sizes, at::kLong).reshape({static_cast<int64_t>(images.size()), 2});
  return r;
}

ProcessedImages preprocess_qwen2_vl(const ProcessorConfig& cfg, const std::vector<Image>& images) {
  std::vector<at::Tensor> rows;
  std::vector<int64_t> grids;
  for (const Image& src : images) {
    Image img = src;
    if (cfg.do_resize) {
      const auto [h, w] = smart_resize(src.height, src.width, cfg.patch_size * cfg.merge_size, cfg.size_shortest_edge,
                                       cfg.size_longest_edge);
      img = resize_to(src, h, w, cfg);
    }
    rows.push_back(qwen_patchify(to_normalized_chw(img, cfg), cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size));
    grids.insert(grids.end(), {1, img.height / cfg.patch_size, img.width / cfg.patch_size});
  }
  ProcessedImages r;
  r.pixel_values = at::cat(rows, 0);  // [sum(t*h*w), 3 * t * p * p]
  r.image_grid_thw = at::tensor(grids, at::kLong).reshape({static_cast<int64_t>(images.size()), 3});
  return r;
}

}  // namespace

ProcessedImages preprocess(const ProcessorConfig& cfg, const std::vector<Image>& images) {
  VLM2MLA_CHECK(!images.empty(), ArgumentError, "preprocess: no images");
  for (const Image& img : images)
    VLM2MLA_CHECK(img.width > 0 && img.height > 0 &&
                      img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3,
                  ArgumentError, "preprocess: malformed image (", img.width, "x", img.height, ", ", img.rgb.size(),
                  " bytes)");
  switch (cfg.kind) {
    case ProcessorKind::kClip: return preprocess_clip(cfg, images);
    case ProcessorKind::kLlavaNext: return preprocess_llava_next(cfg, images);
    case ProcessorKind::kQwen2Vl: return preprocess_qwen2_vl(cfg, images);
  }
  throw ArgumentError("preprocess: unknown processor kind");
}

}  // namespace vlm2mla::vision
