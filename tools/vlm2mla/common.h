// Pieces shared by the subcommands.
#pragma once

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include <map>
#include <string>

#include "attention/attention.h"
#include "convert/calib_data.h"
#include "generate/generate.h"
#include "models/decoder.h"
#include "models/weights.h"

#include <optional>

namespace vlm2mla::cli {

// What a subcommand loads a model for: inference (generate, bench, logits) fuses each layer's
// projections of one input (--fuse-projections; LoadOptions::fuse_projections), conversion
// (calibrate, convert, cache-study) never does.
enum class ModelUse { kInference, kConversion };

// --device / --dtype as every model-running subcommand takes them.
struct RunFlags {
  std::string device = "cpu";
  std::string dtype;  // empty: float32 on cpu, bfloat16 on cuda
  std::string attention = "auto";  // auto | reference | fused | absorbed | expanded
  std::string fuse = "auto";       // auto (on CUDA) | on | off; inference only (add_fuse_to)
  void add_to(CLI::App* app);
  void add_fuse_to(CLI::App* app);  // --fuse-projections, for the inference subcommands
  LoadOptions load_options(ModelUse use) const;  // throws ArgumentError for an unknown --fuse-projections
  AttentionBackend attention_backend() const;  // throws ArgumentError for an unknown --attention
  // absorbed / expanded: how converted MLA models attend (default auto: expanded prefill, absorbed
  // decode over the latent cache).
  MlaAttention mla_attention() const;
};

// --calib / --num-calib / --seed (calibrate, convert, cache-study).
struct CalibFlags {
  std::string path;
  convert::CalibOptions options;
  // `required`: the subcommand cannot run without calibration data; `needed_by` ends the help text.
  void add_to(CLI::App* app, bool required, const std::string& needed_by);
  bool given() const { return !path.empty(); }
  // Opens the file for `model` (tokenizer and preprocessor from `model_dir`) and logs what it holds.
  std::shared_ptr<convert::CalibrationData> open(const Model& model, const std::string& model_dir) const;
};

// --kv-cache / --kv-group / --kv-window, and --decode (generate, bench): the cache and how decode
// steps run over it.
struct CacheFlags {
  std::string type;  // empty: the compute dtype
  int64_t group = 64, window = 128;
  std::string decode = "auto";
  void add_to(CLI::App* app);
  std::optional<CacheSpec> spec() const;  // throws ArgumentError for an unknown --kv-cache
  DecodeMode decode_mode() const;         // throws ArgumentError for an unknown --decode
};


void register_logits(CLI::App& app);
void register_generate(CLI::App& app);
void register_inspect(CLI::App& app);
void register_init_random(CLI::App& app);
void register_bench(CLI::App& app);
void register_calibrate(CLI::App& app);
void register_convert(CLI::App& app);
void register_cache_study(CLI::App& app);
void register_plot(CLI::App& app);
void register_preprocess(CLI::App& app);
void register_tokenize(CLI::App& app);

}  // namespace vlm2mla::cli

namespace vlm2mla {
class Model;
struct ModelInputs;
}
namespace vlm2mla::cli {
// Loads the model at `dir` with the run flags (device, dtype, attention backend); logs the load time.
std::shared_ptr<Model> load_model(const std::string& dir, const RunFlags& flags, ModelUse use,
                                  bool layers_on_host = false);
// Reads an inputs .safetensors in the `logits` format (input_ids, attention_mask, position_ids,
// pixel_values, image_sizes, image_grid_thw; others ignored) and checks it.
ModelInputs read_model_inputs(const std::string& path);
}  // namespace vlm2mla::cli
