// Qwen2-VL / Qwen2.5-VL video preprocessing (transformers 5.17's Qwen2VLVideoProcessor) for a video
// given as its frames, already sampled, as image files: no video-file decoding, no frame sampling.
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "vision/image.h"
#include "vision/processor_config.h"

namespace vlm2mla::vision {

// The frame rate VideoMetadata.sampled_fps reports for frames that carry none (transformers 5.17):
// what Qwen2_5_VLProcessor divides temporal_patch_size by when no fps is given.
constexpr double kDefaultVideoFps = 24.0;

struct VideoProcessorConfig {
  // size (min / max pixels: the video processor's own defaults, 128*28*28 and 28*28*768), patch,
  // temporal patch and merge sizes, rescale, mean, std; always the torchvision backend
  // (BaseVideoProcessor is a TorchvisionBackend).
  ProcessorConfig frames;
  // cap_pixels_per_frame: max pixels per frame also bounded by an even share of max_video_tokens'
  // pixels (floored at 1.05 * min pixels). transformers 5.17 leaves it off unless the config sets it.
  bool cap_pixels_per_frame = false;
  int64_t max_video_tokens = 128000;
};

// A video processor config's JSON (Qwen2VLVideoProcessor's keys; an image processor's
// preprocessor_config.json is read the same way, as transformers falls back to it).
// FormatError for another video_processor_type, or for do_sample_frames = true (frame sampling is
// not supported: give the frames already sampled).
VideoProcessorConfig parse_video_processor_config(const nlohmann::json& j, const std::string& source);

// As transformers' video processor from_pretrained finds it in `model_dir`: processor_config.json's
// "video_processor", else video_preprocessor_config.json, else preprocessor_config.json. IoError
// naming the three when none exists.
VideoProcessorConfig load_video_processor_config(const std::string& model_dir);

struct ProcessedVideos {
  at::Tensor pixel_values_videos;  // float32 [sum t*h*w, 3 * temporal * patch * patch]
  at::Tensor video_grid_thw;       // int64 [videos, 3]
  at::Tensor second_per_grid_ts;   // float32 [videos]: temporal_patch_size / fps, as the processor
};

// Each video's frames (all of one size): smart_resize (factor patch * merge, the config's min / max
// pixels), bicubic resize, rescale and normalize (torchvision arithmetic), frames padded to a
// multiple of temporal_patch_size by repeating the last, then patchified. fps: one per video, or
// empty for kDefaultVideoFps. ArgumentError for an empty video, frames of different sizes, or a
// non-positive fps.
ProcessedVideos preprocess_videos(const VideoProcessorConfig& cfg, const std::vector<std::vector<Image>>& videos,
                                  const std::vector<double>& fps);

// Patchify of one video's normalized frames [T, 3, H, W] (T a multiple of temporal_patch_size) ->
// [T / temporal * gh * gw, 3 * temporal * p * p]: rows ordered (t, h / merge, w / merge, merge_h,
// merge_w), columns (channel, temporal, patch_h, patch_w).
at::Tensor qwen_patchify_frames(const at::Tensor& tchw, int64_t patch_size, int64_t merge_size,
                                int64_t temporal_patch_size);

}  // namespace vlm2mla::vision
