// vlm2mla preprocess --model DIR --image PATH [--image PATH ...] --out OUT.safetensors [--backend]
#include "common.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "vision/image.h"
#include "vision/processor_config.h"
#include "vision/processors.h"

namespace vlm2mla::cli {

void register_preprocess(CLI::App& app) {
  struct Args {
    std::string model, out, backend;
    std::vector<std::string> images;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "preprocess", "Image preprocessing as the model's HF image processor: write pixel_values (and "
                    "image_grid_thw or image_sizes) for the images");
  cmd->add_option("--model", args->model, "model directory with preprocessor_config.json (or the file itself)")
      ->required();
  cmd->add_option("--image", args->images, "PNG or JPEG image; repeat for several images, in order")->required();
  cmd->add_option("--out", args->out, "output safetensors")->required();
  cmd->add_option("--backend", args->backend,
                  "torchvision (transformers 5's default XImageProcessor) or pil (XImageProcessorPil); "
                  "default: from image_processor_type, else torchvision");
  cmd->callback([args]() {
    std::optional<vision::Backend> backend;
    if (!args->backend.empty()) backend = vision::parse_backend(args->backend, "--backend");
    const vision::ProcessorConfig cfg = vision::load_processor_config(args->model, backend);
    std::vector<vision::Image> images;
    for (const auto& path : args->images) images.push_back(vision::load_image(path));
    const vision::ProcessedImages p = vision::preprocess(cfg, images);
    std::vector<std::pair<std::string, at::Tensor>> tensors = {{"pixel_values", p.pixel_values}};
    if (p.image_grid_thw.defined()) tensors.emplace_back("image_grid_thw", p.image_grid_thw);
    if (p.image_sizes.defined()) tensors.emplace_back("image_sizes", p.image_sizes);
    io::write_safetensors(args->out, tensors,
                          {{"image_processor_type", cfg.image_processor_type},
                           {"backend", vision::to_string(cfg.backend)}});
    VLM2MLA_INFO("wrote pixel_values ", p.pixel_values.sizes(), " (", vision::to_string(cfg.kind), ", ",
                 vision::to_string(cfg.backend), " backend) to ", args->out);
  });
}

}  // namespace vlm2mla::cli
