// vlm2mla preprocess --model DIR (--image PATH ... | --video FRAME FRAME ... [--fps X])
//                    --out OUT.safetensors [--backend]
#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "vision/image.h"
#include "vision/processor_config.h"
#include "vision/processors.h"
#include "vision/video.h"

namespace vlm2mla::cli {

void register_preprocess(CLI::App& app) {
  struct Args {
    std::string model, out, backend;
    std::vector<std::string> images, video;
    double fps = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "preprocess", "Image (and Qwen2.5-VL video) preprocessing as the model's HF processors: write "
                    "pixel_values (and image_grid_thw or image_sizes) for the images, pixel_values_videos, "
                    "video_grid_thw and second_per_grid_ts for the video");
  cmd->add_option("--model", args->model,
                  "model directory with preprocessor_config.json (video: video_preprocessor_config.json, "
                  "else preprocessor_config.json), or the file itself")
      ->required();
  // At least one of --image and --video (a usage error otherwise).
  CLI::Option_group* what = cmd->add_option_group("input", "what to preprocess (one or both)");
  what->add_option("--image", args->images, "PNG or JPEG image; repeat for several images, in order");
  what->add_option("--video", args->video,
                  "one video as its frames, already sampled: PNG or JPEG files in order (no video-file "
                  "decoding); Qwen2-VL / Qwen2.5-VL only");
  what->require_option(1, 0);
  cmd->add_option("--fps", args->fps,
                  "frames per second of the --video frames: second_per_grid_ts = temporal_patch_size / fps "
                  "(default 24, what transformers assumes for frames without metadata)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--out", args->out, "output safetensors")->required();
  cmd->add_option("--backend", args->backend,
                  "images: torchvision (transformers 5's default XImageProcessor) or pil "
                  "(XImageProcessorPil); default: from image_processor_type, else torchvision. Videos "
                  "always use torchvision, as transformers' video processors do");
  cmd->callback([args]() {
    VLM2MLA_CHECK(args->fps == 0 || !args->video.empty(), ArgumentError, "--fps needs --video");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    std::map<std::string, std::string> metadata;
    if (!args->images.empty()) {
      std::optional<vision::Backend> backend;
      if (!args->backend.empty()) backend = vision::parse_backend(args->backend, "--backend");
      const vision::ProcessorConfig cfg = vision::load_processor_config(args->model, backend);
      std::vector<vision::Image> images;
      for (const auto& path : args->images) images.push_back(vision::load_image(path));
      const vision::ProcessedImages p = vision::preprocess(cfg, images);
      tensors.emplace_back("pixel_values", p.pixel_values);
      if (p.image_grid_thw.defined()) tensors.emplace_back("image_grid_thw", p.image_grid_thw);
      if (p.image_sizes.defined()) tensors.emplace_back("image_sizes", p.image_sizes);
      metadata = {{"image_processor_type", cfg.image_processor_type}, {"backend", vision::to_string(cfg.backend)}};
      VLM2MLA_INFO("pixel_values ", p.pixel_values.sizes(), " (", vision::to_string(cfg.kind), ", ",
                   vision::to_string(cfg.backend), " backend)");
    }
    if (!args->video.empty()) {
      const vision::VideoProcessorConfig cfg = vision::load_video_processor_config(args->model);
      std::vector<vision::Image> frames;
      for (const auto& path : args->video) frames.push_back(vision::load_image(path));
      std::vector<double> fps;
      if (args->fps > 0) fps.push_back(args->fps);
      const vision::ProcessedVideos v = vision::preprocess_videos(cfg, {frames}, fps);
      tensors.emplace_back("pixel_values_videos", v.pixel_values_videos);
      tensors.emplace_back("video_grid_thw", v.video_grid_thw);
      tensors.emplace_back("second_per_grid_ts", v.second_per_grid_ts);
      metadata["video_processor_type"] = "Qwen2VLVideoProcessor";
      VLM2MLA_INFO("pixel_values_videos ", v.pixel_values_videos.sizes(), ", video_grid_thw ",
                   v.video_grid_thw[0].sizes(), " = (", v.video_grid_thw[0][0].item<int64_t>(), ", ",
                   v.video_grid_thw[0][1].item<int64_t>(), ", ", v.video_grid_thw[0][2].item<int64_t>(),
                   "), second_per_grid_ts ", v.second_per_grid_ts[0].item<float>(), " (", cfg.frames.source, ")");
    }
    io::write_safetensors(args->out, tensors, metadata);
    VLM2MLA_INFO("wrote ", tensors.size(), " tensors to ", args->out);
  });
}

}  // namespace vlm2mla::cli
