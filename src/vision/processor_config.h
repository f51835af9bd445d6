// preprocessor_config.json of the supported HF image processors, with the class defaults filled in.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vision/resample.h"

namespace vlm2mla::vision {

// Closed list of processor families.
enum class ProcessorKind { kClip, kLlavaNext, kQwen2Vl };

// Which of the two implementations transformers 5 ships for each family:
//   kTorchvision: XImageProcessor (transformers 5; XImageProcessorFast before): torch tensors,
//                 torchvision's uint8 bicubic, rescale and normalize fused in float32;
//   kPil:         XImageProcessorPil (transformers 5; XImageProcessor in 4.x): PIL resize, NumPy
//                 rescale in float64 then float32, then normalize in float32.
enum class Backend { kTorchvision, kPil };

const char* to_string(ProcessorKind k);
const char* to_string(Backend b);
Backend parse_backend(const std::string& s, const std::string& what);  // "torchvision" | "pil"

struct ProcessorConfig {
  std::string source;                // the file it came from, for messages
  std::string image_processor_type;  // as written in the file
  ProcessorKind kind = ProcessorKind::kClip;
  Backend backend = Backend::kTorchvision;

  bool do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = true;
  bool do_convert_rgb = true, do_pad = true;
  // size: {"shortest_edge"} (CLIP, NeXT), {"height","width"}, or for Qwen {"shortest_edge": min
  // pixels, "longest_edge": max pixels}. 0 = absent.
  int64_t size_shortest_edge = 0, size_longest_edge = 0, size_height = 0, size_width = 0;
  int64_t crop_height = 0, crop_width = 0;
  int resample = 3;  // PIL enum; 3 = BICUBIC, the only one supported
  double rescale_factor = 1.0 / 255.0;
  std::vector<double> image_mean, image_std;  // 3 values each
  std::vector<std::pair<int64_t, int64_t>> image_grid_pinpoints;  // (height, width)
  // Qwen2-VL
  int64_t patch_size = 14, temporal_patch_size = 2, merge_size = 2;

  Resampler resampler() const { return backend == Backend::kPil ? Resampler::kPil : Resampler::kTorchUint8; }
};

// The image_processor_type values we accept, for error messages.
const std::vector<std::string>& supported_processor_types();

// Parses the JSON of a preprocessor_config.json. The backend: `backend` when given; else from the
// type name (a "...Fast" type -> torchvision, "...Pil" -> pil); else torchvision, which is what
// AutoImageProcessor picks in transformers 5 when torchvision is installed.
ProcessorConfig parse_processor_config(const nlohmann::json& j, const std::string& source,
                                       std::optional<Backend> backend = std::nullopt);

// Reads <model_dir>/preprocessor_config.json (or `model_dir` itself when it is a .json file).
// Missing file -> IoError naming it; unknown image_processor_type -> FormatError listing the
// supported ones.
ProcessorConfig load_processor_config(const std::string& model_dir, std::optional<Backend> backend = std::nullopt);

}  // namespace vlm2mla::vision
