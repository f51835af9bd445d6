#include "models/llava.h"

#include <cmath>

#include "core/error.h"
#include "vision/processors.h"

namespace vlm2mla {

namespace {
// Python's int(round(x, 7)): round to 7 decimals, then truncate toward zero.
int64_t py_int_round7(double x) { return static_cast<int64_t>(std::nearbyint(x * 1e7) / 1e7); }
}  // namespace

at::Tensor unpad_image(const at::Tensor& t, int64_t original_height, int64_t original_width) {
  const int64_t ch = t.size(1), cw = t.size(2);
  const double original_aspect = static_cast<double>(original_width) / original_height;
  const double current_aspect = static_cast<double>(cw) / ch;
  if (original_aspect > current_aspect) {
    const double scale = static_cast<double>(cw) / original_width;
    const int64_t new_height = py_int_round7(original_height * scale);
    const int64_t padding = (ch - new_height) / 2;
    return t.narrow(1, padding, ch - 2 * padding);
  }
  const double scale = static_cast<double>(ch) / original_height;
  const int64_t new_width = py_int_round7(original_width * scale);
  const int64_t padding = (cw - new_width) / 2;
  return t.narrow(2, padding, cw - 2 * padding);
}

LlavaVision LlavaVision::load(const LlavaConfig& config, bool next, int64_t text_hidden,
                              const LlavaWeightNames& names, const ParamFiller& fill) {
  ClipVisionTower tower = ClipVisionTower::load(config.vision, names.vision_tower, fill);
  const int64_t in = config.vision.hidden_size * static_cast<int64_t>(config.vision_feature_layers.size());
  LinearWeights l1, l2;
  const bool bias = config.multimodal_projector_bias;
  fill({names.projector + "linear_1.weight", {text_hidden, in}, &l1.weight});
  if (bias) fill({names.projector + "linear_1.bias", {text_hidden}, &l1.bias});
  fill({names.projector + "linear_2.weight", {text_hidden, text_hidden}, &l2.weight});
  if (bias) fill({names.projector + "linear_2.bias", {text_hidden}, &l2.bias});
  at::Tensor newline;
  if (next) fill({names.image_newline, {text_hidden}, &newline});
  return LlavaVision(config, next, std::move(tower), std::move(l1), std::move(l2), std::move(newline));
}

at::Tensor LlavaVision::select_and_project(const at::Tensor& pixel_values) const {
  const int64_t n_states = config_.vision.num_hidden_layers + 1;
  std::vector<int64_t> idx;
  int64_t needed = 0;
  for (int64_t layer : config_.vision_feature_layers) {
    idx.push_back(layer < 0 ? n_states + layer : layer);
    needed = std::max(needed, idx.back() + 1);
  }
  std::vector<at::Tensor> states = tower_.hidden_states(pixel_values, needed);
  std::vector<at::Tensor> picked;
  for (int64_t i : idx) {
    at::Tensor s = states[static_cast<size_t>(i)];  // [n, 1 + P, d_vision]
    picked.push_back(config_.vision_feature_select_strategy == "default" ? s.narrow(1, 1, s.size(1) - 1) : s);
  }
  at::Tensor selected = picked.size() == 1 ? picked[0] : at::cat(picked, -1);
  return linear(at::gelu(linear(selected, linear_1_)), linear_2_);  // [n, tokens, d_text]
}

int64_t LlavaVision::tokens_per_image(int64_t height, int64_t width) const {
  const auto& v = config_.vision;
  const int64_t base = v.num_patches() + (config_.vision_feature_select_strategy == "full" ? 1 : 0);
  if (!next_) return base;
  const auto [bh, bw] = vision::select_best_resolution(height, width, config_.image_grid_pinpoints);
  const int64_t side = v.image_size / v.patch_size;
  const int64_t gh = bh / v.image_size, gw = bw / v.image_size;
  // The unpadded grid of crop features plus one newline per row, after the base image's tokens.
  at::Tensor probe = at::empty({1, gh * side, gw * side}, at::TensorOptions().device(at::kMeta));
  at::Tensor unpadded = unpad_image(probe, height, width);
  return base + unpadded.size(1) * (unpadded.size(2) + 1);
}

at::Tensor LlavaVision::image_features(const at::Tensor& pixel_values,
                                       const at::Tensor& image_sizes) const {
  if (!next_) {
    VLM2MLA_CHECK(pixel_values.dim() == 4, ArgumentError, "pixel_values has shape ",
                  pixel_values.sizes(), ", expected [images, channels, height, width]");
    at::Tensor f = select_and_project(pixel_values);  // [n, tokens, d]
    return f.reshape({-1, f.size(-1)});
  }
  VLM2MLA_CHECK(pixel_values.dim() == 5, ArgumentError, "pixel_values has shape ",
                pixel_values.sizes(), ", expected [images, patches, channels, height, width] (LLaVA-NeXT)");
  VLM2MLA_CHECK(image_sizes.defined() && image_sizes.dim() == 2 && image_sizes.size(1) == 2 &&
                    image_sizes.size(0) == pixel_values.size(0),
                ArgumentError, "LLaVA-NeXT needs image_sizes [", pixel_values.size(0),
                ", 2] (height, width) beside pixel_values");
  const auto& v = config_.vision;
  const int64_t side = v.image_size / v.patch_size;
  at::Tensor sizes = image_sizes.to(at::kCPU).to(at::kLong);
  std::vector<at::Tensor> crops;
  std::vector<std::pair<int64_t, int64_t>> grids;
  for (int64_t i = 0; i < pixel_values.size(0); ++i) {
    const int64_t h = sizes[i][0].item<int64_t>(), w = sizes[i][1].item<int64_t>();
    VLM2MLA_CHECK(h > 0 && w > 0, ArgumentError, "image_sizes[", i, "] = (", h, ", ", w, ") must be positive");
    const auto [bh, bw] = vision::select_best_resolution(h, w, config_.image_grid_pinpoints);
    const int64_t gh = bh / v.image_size, gw = bw / v.image_size;
    const int64_t patches = gh * gw + 1;
    VLM2MLA_CHECK(patches <= pixel_values.size(1), ArgumentError, "image ", i, " of size ", h, "x", w,
                  " needs ", patches, " patches, but pixel_values holds ", pixel_values.size(1));
    crops.push_back(pixel_values[i].narrow(0, 0, patches));
    grids.emplace_back(gh, gw);
  }
  at::Tensor all = select_and_project(at::cat(crops, 0));  // [sum patches, side*side, d]
  std::vector<at::Tensor> packed;
  int64_t offset = 0;
  for (size_t i = 0; i < grids.size(); ++i) {
    const auto [gh, gw] = grids[i];
    at::Tensor f = all.narrow(0, offset, gh * gw + 1);
    offset += gh * gw + 1;
    at::Tensor base = f[0];  // [side*side, d]
    const int64_t d = f.size(-1);
    // [gh*gw, side*side, d] -> [d, gh*side, gw*side]
    at::Tensor grid = f.narrow(0, 1, gh * gw).view({gh, gw, side, side, d}).permute({4, 0, 2, 1, 3})
                          .contiguous().flatten(1, 2).flatten(2, 3);
    grid = unpad_image(grid, sizes[static_cast<int64_t>(i)][0].item<int64_t>(),
                       sizes[static_cast<int64_t>(i)][1].item<int64_t>());
    at::Tensor nl = image_newline_.view({d, 1, 1}).expand({d, grid.size(1), 1});
    grid = at::cat({grid, nl}, -1).flatten(1, 2).transpose(0, 1);  // [rows*(cols+1), d]
    packed.push_back(at::cat({base, grid}, 0));
  }
  return at::cat(packed, 0);
}

}  // namespace vlm2mla
