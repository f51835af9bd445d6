#include "vision/video.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"
#include "vision/processors.h"

namespace vlm2mla::vision {

VideoProcessorConfig parse_video_processor_config(const nlohmann::json& j, const std::string& source) {
  VLM2MLA_CHECK(j.is_object(), FormatError, source, ": expected a JSON object");
  if (j.contains("video_processor_type") && !j.at("video_processor_type").is_null()) {
    const auto& t = j.at("video_processor_type");
    VLM2MLA_CHECK(t.is_string() && (t.get<std::string>() == "Qwen2VLVideoProcessor" ||
                                    t.get<std::string>() == "Qwen2_5_VLVideoProcessor"),
                  FormatError, source, ": unsupported video_processor_type ", t.dump(),
                  " (supported: Qwen2VLVideoProcessor)");
  }
  VLM2MLA_CHECK(!j.contains("do_sample_frames") || !j.at("do_sample_frames").is_boolean() ||
                    !j.at("do_sample_frames").get<bool>(),
                FormatError, source, ": do_sample_frames is true, but frame sampling is not supported "
                "(give the frames already sampled)");
  // The image parser reads the same keys (size, min_pixels / max_pixels, patch sizes, rescale,
  // mean, std); the video processor's class defaults differ in size only.
  nlohmann::json as_image = j;
  as_image["image_processor_type"] = "Qwen2VLImageProcessorFast";
  if (!as_image.contains("size") || as_image.at("size").is_null()) {
    as_image["size"] = {{"shortest_edge", 128 * 28 * 28}, {"longest_edge", 28 * 28 * 768}};
  }
  VideoProcessorConfig c;
  c.frames = parse_processor_config(as_image, source, Backend::kTorchvision);
  if (j.contains("cap_pixels_per_frame") && !j.at("cap_pixels_per_frame").is_null()) {
    VLM2MLA_CHECK(j.at("cap_pixels_per_frame").is_boolean(), FormatError, source,
                  ": 'cap_pixels_per_frame' must be true or false");
    c.cap_pixels_per_frame = j.at("cap_pixels_per_frame").get<bool>();
  }
  if (j.contains("max_video_tokens") && !j.at("max_video_tokens").is_null()) {
    VLM2MLA_CHECK(j.at("max_video_tokens").is_number_integer() && j.at("max_video_tokens").get<int64_t>() > 0,
                  FormatError, source, ": 'max_video_tokens' must be a positive integer");
    c.max_video_tokens = j.at("max_video_tokens").get<int64_t>();
  }
  return c;
}

VideoProcessorConfig load_video_processor_config(const std::string& model_dir) {
  if (!fs::is_directory(model_dir) && fs::extension(model_dir) == ".json") {
    return parse_video_processor_config(io::read_json_file(model_dir), model_dir);
  }
  const std::string nested = fs::join(model_dir, "processor_config.json");
  if (fs::is_regular_file(nested)) {
    nlohmann::json j = io::read_json_file(nested);
    if (j.is_object() && j.contains("video_processor")) {
      return parse_video_processor_config(j.at("video_processor"), nested + " (video_processor)");
    }
  }
  for (const char* name : {"video_preprocessor_config.json", "preprocessor_config.json"}) {
    const std::string path = fs::join(model_dir, name);
    if (fs::is_regular_file(path)) return parse_video_processor_config(io::read_json_file(path), path);
  }
  throw IoError(model_dir + ": no video processor config (processor_config.json with \"video_processor\", "
                "video_preprocessor_config.json or preprocessor_config.json) to preprocess videos with");
}

at::Tensor qwen_patchify_frames(const at::Tensor& tchw, int64_t p, int64_t m, int64_t tp) {
  const int64_t t = tchw.size(0), c = tchw.size(1), h = tchw.size(2), w = tchw.size(3);
  VLM2MLA_CHECK(t % tp == 0, ArgumentError, "Qwen2-VL video patchify: ", t,
                " frames are not a multiple of temporal_patch_size ", tp);
  VLM2MLA_CHECK(h % (p * m) == 0 && w % (p * m) == 0, ArgumentError, "Qwen2-VL video patchify: frames ", w,
                "x", h, " are not a multiple of patch_size * merge_size = ", p * m);
  const int64_t gt = t / tp, gh = h / p, gw = w / p;
  // [t, c, h, w] -> [gt, tp, c, gh/m, m, p, gw/m, m, p] -> [gt, gh/m, gw/m, m, m, c, tp, p, p]
  at::Tensor x = tchw.reshape({gt, tp, c, gh / m, m, p, gw / m, m, p}).permute({0, 3, 6, 4, 7, 2, 1, 5, 8});
  return x.reshape({gt * gh * gw, c * tp * p * p}).contiguous();  // [gt * gh * gw, c * tp * p * p]
}

ProcessedVideos preprocess_videos(const VideoProcessorConfig& vc, const std::vector<std::vector<Image>>& videos,
                                  const std::vector<double>& fps) {
  const ProcessorConfig& cfg = vc.frames;
  VLM2MLA_CHECK(!videos.empty(), ArgumentError, "preprocess_videos: no videos");
  VLM2MLA_CHECK(fps.empty() || fps.size() == videos.size(), ArgumentError, "preprocess_videos: ", fps.size(),
                " fps values for ", videos.size(), " videos (give one per video, or none)");
  const int64_t p = cfg.patch_size, m = cfg.merge_size, tp = cfg.temporal_patch_size, factor = p * m;
  std::vector<at::Tensor> rows;
  std::vector<int64_t> grids;
  std::vector<float> seconds;
  for (size_t v = 0; v < videos.size(); ++v) {
    const std::vector<Image>& frames = videos[v];
    VLM2MLA_CHECK(!frames.empty(), ArgumentError, "video ", v, " has no frames");
    const int64_t h = frames[0].height, w = frames[0].width;
    for (size_t f = 0; f < frames.size(); ++f) {
      VLM2MLA_CHECK(frames[f].height == h && frames[f].width == w && frames[f].height > 0 &&
                        frames[f].rgb.size() == static_cast<size_t>(frames[f].width) * frames[f].height * 3,
                    ArgumentError, "video ", v, ": frame ", f, " is ", frames[f].width, "x", frames[f].height,
                    " but frame 0 is ", w, "x", h, " (the frames of a video must have one size)");
    }
    const double rate = fps.empty() ? kDefaultVideoFps : fps[v];
    VLM2MLA_CHECK(std::isfinite(rate) && rate > 0, ArgumentError, "video ", v, ": fps ", rate, " must be > 0");
    const int64_t n = static_cast<int64_t>(frames.size());
    int64_t rh = h, rw = w;
    if (cfg.do_resize) {
      int64_t max_pixels = cfg.size_longest_edge;
      if (vc.cap_pixels_per_frame) {  // Qwen2VLVideoProcessor.resize with cap_pixels_per_frame
        const int64_t total = static_cast<int64_t>(static_cast<double>(vc.max_video_tokens * factor * factor) * 0.9);
        max_pixels = std::max(std::min(max_pixels, total * tp / n),
                              static_cast<int64_t>(static_cast<double>(cfg.size_shortest_edge) * 1.05));
      }
      std::tie(rh, rw) = smart_resize(h, w, factor, cfg.size_shortest_edge, max_pixels);
    }
    const int64_t padded = (n + tp - 1) / tp * tp;
    at::Tensor chw = at::empty({padded, 3, rh, rw}, at::kFloat);  // [T', 3, h, w]
    for (int64_t f = 0; f < n; ++f) {
      const Image& src = frames[static_cast<size_t>(f)];
      const Image img = cfg.do_resize ? resize_image(src, rh, rw, cfg) : src;
      chw[f].copy_(to_normalized_chw(img, cfg));
    }
    for (int64_t f = n; f < padded; ++f) chw[f].copy_(chw[n - 1]);  // repeat the last frame
    rows.push_back(qwen_patchify_frames(chw, p, m, tp));
    grids.insert(grids.end(), {padded / tp, rh / p, rw / p});
    seconds.push_back(static_cast<float>(static_cast<double>(tp) / rate));
  }
  ProcessedVideos out;
  out.pixel_values_videos = at::cat(rows, 0);  // [sum t*h*w, 3 * tp * p * p]
  out.video_grid_thw = at::tensor(grids, at::kLong).reshape({static_cast<int64_t>(videos.size()), 3});
  out.second_per_grid_ts = at::tensor(seconds, at::kFloat);
  return out;
}

}  // namespace vlm2mla::vision
