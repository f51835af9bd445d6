// vlm2mla init-random --config CONFIG.json --out DIR [--dtype bfloat16] [--seed S]
// Writes a random-weight checkpoint of the config's shapes in the published Hub layout, so that real
// shapes can be benchmarked and tested without downloading weights.
#include "common.h"
#include "core/dtype.h"
#include "core/fs.h"
#include "core/log.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/text_config.h"
#include "models/model.h"
#include "models/weights.h"

namespace vlm2mla::cli {

void register_init_random(CLI::App& app) {
  struct Args {
    std::string config, out, dtype = "bfloat16", device = "cpu";
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "init-random", "Write a checkpoint with random weights (N(0, 0.02), unit norms) for a config.json");
  cmd->add_option("--config", args->config, "a config.json (Hub or transformers-5 layout)")->required();
  cmd->add_option("--out", args->out, "output model directory (created)")->required();
  cmd->add_option("--dtype", args->dtype, "stored dtype")->capture_default_str();
  cmd->add_option("--seed", args->seed, "random seed")->capture_default_str();
  cmd->add_option("--device", args->device,
                  "where to draw the random values (cuda: much faster for 7B shapes; other values then)")
      ->capture_default_str();
  cmd->callback([args]() {
    nlohmann::json raw = io::read_json_file(args->config);
    TextConfig config = parse_text_config(raw, args->config);
    LoadOptions o;
    o.dtype = parse_dtype(args->dtype, "--dtype");
    o.device = parse_device(args->device, "--device");
    // The whole model (language model and, for VLMs, the vision side) under the Hub's names.
    std::vector<std::pair<std::string, at::Tensor>> tensors = Model::random_checkpoint(args->config, o, args->seed);
    int64_t params = 0;
    for (const auto& [name, t] : tensors) params += t.numel();
    fs::create_directories(args->out);
    raw["torch_dtype"] = dtype_name(o.dtype);
    raw.erase("dtype");
    io::write_safetensors(args->out + "/model.safetensors", tensors, {{"format", "pt"}});
    io::write_json_file(args->out + "/config.json", raw);
    VLM2MLA_INFO("wrote ", tensors.size(), " random tensors (", params, " parameters) to ", args->out);
  });
}

}  // namespace vlm2mla::cli
