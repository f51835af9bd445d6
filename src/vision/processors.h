// The HF image processors for LLaVA-1.5 (CLIPImageProcessor), LLaVA-NeXT (LlavaNextImageProcessor,
// anyres) and Qwen2-VL / Qwen2.5-VL (Qwen2VLImageProcessor), in both transformers backends.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "vision/image.h"
#include "vision/processor_config.h"

namespace vlm2mla::vision {

// What the processor returns, under HF's names. Undefined tensors are not produced by that family.
struct ProcessedImages {
  at::Tensor pixel_values;    // float32: CLIP [n, 3, H, W]; NeXT [n, max_patches, 3, H, W];
                              //          Qwen [sum(t*h*w), 3 * temporal * patch * patch]
  at::Tensor image_grid_thw;  // int64 [n, 3] (Qwen)
  at::Tensor image_sizes;     // int64 [n, 2] as (height, width) of the input images (NeXT)
};

ProcessedImages preprocess(const ProcessorConfig& cfg, const std::vector<Image>& images);

// ---- the pieces, exposed for tests ---------------------------------------------------------------

// transformers' get_resize_output_image_size(size=shortest_edge, default_to_square=False):
// (height, width) with the short side = shortest_edge and the long side truncated.
std::pair<int64_t, int64_t> shortest_edge_size(int64_t height, int64_t width, int64_t shortest_edge);

// image_processing_utils.select_best_resolution: the (height, width) pinpoint that keeps the most
// of the image's resolution, ties broken by the least waste; the first wins on a full tie.
std::pair<int64_t, int64_t> select_best_resolution(int64_t height, int64_t width,
                                                   const std::vector<std::pair<int64_t, int64_t>>& pinpoints);

// get_patch_output_size: the aspect-preserving (height, width) that fits in target.
std::pair<int64_t, int64_t> patch_output_size(int64_t height, int64_t width, int64_t target_h, int64_t target_w);

// Qwen2-VL smart_resize: (height, width), multiples of factor, pixels within [min, max]. Throws
// ArgumentError, as transformers raises ValueError, when the aspect ratio exceeds 200.
std::pair<int64_t, int64_t> smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                         int64_t max_pixels);

// The processor's resize to (h, w) (bicubic, the backend's arithmetic; the image itself when the
// size is unchanged). ArgumentError for an empty or absurdly large size.
Image resize_image(const Image& img, int64_t h, int64_t w, const ProcessorConfig& cfg);

// Center crop to (h, w) as the backend does it (pads with 0 when the crop is larger; the two
// backends place odd padding differently).
Image center_crop(const Image& img, int64_t crop_h, int64_t crop_w, Backend backend);

// Rescale and normalize to float32 [3, H, W] with the backend's arithmetic.
at::Tensor to_normalized_chw(const Image& img, const ProcessorConfig& cfg);

// Qwen2-VL patchify of one normalized image [3, H, W] -> [grid_h * grid_w, 3 * t * p * p], rows
// ordered (h / merge, w / merge, merge_h, merge_w), columns (channel, temporal, patch_h, patch_w).
at::Tensor qwen_patchify(const at::Tensor& chw, int64_t patch_size, int64_t merge_size, int64_t temporal_patch_size);

}  // namespace vlm2mla::vision
