#include "common.h"

#include "core/dtype.h"
#include "core/error.h"
#include "core/log.h"
#include "io/safetensors.h"

namespace vlm2mla::cli {

void RunFlags::add_to(CLI::App* app) {
  app->add_option("--device", device, "cpu or cuda (cuda:N)")->capture_default_str();
  app->add_option("--dtype", dtype, "float32 | bfloat16 | float16 (default: float32 on cpu, "
                                    "bfloat16 on cuda)");
  app->add_option("--attention", attention,
                  "attention implementation: auto (fused prefill; decode fused on CUDA with libtorch >= 2.5, "
                  "else reference) | reference | "
                  "fused (fused needs libtorch >= 2); converted MLA models: absorbed (over the latent "
                  "cache) | expanded (K and V rebuilt, dense cache; the reference twin); auto = expanded "
                  "prefill, absorbed decode")
      ->capture_default_str();
}

void RunFlags::add_fuse_to(CLI::App* app) {
  app->add_option("--fuse-projections", fuse,
                  "run each layer's projections of one input as one GEMM (q/k/v, gate/up; converted: q, "
                  "k_rope, kv_a_proj), their weights stored as one tensor (the same bytes; unbiased members of a "
                  "biased group get zero biases): auto (on CUDA, "
                  "where decode steps are launch-bound; on the CPU the checkpoint's mapped weights stay "
                  "unread until used) | on | off")
      ->capture_default_str();
}

MlaAttention RunFlags::mla_attention() const {
  if (attention == "absorbed") return MlaAttention::kAbsorbed;
  if (attention == "expanded") return MlaAttention::kExpanded;
  return MlaAttention::kAuto;
}

void CalibFlags::add_to(CLI::App* app, bool required, const std::string& needed_by) {
  auto* opt = app->add_option("--calib", path,
                              "calibration data: an inputs .safetensors in the `logits` format (input_ids, "
                              "attention_mask, pixel_values, ...; one forward of the batch), or a LLaVA-style "
                              ".json dataset (a list of {\"image\", \"conversations\"}; one forward per "
                              "conversation, rendered with the model's chat template)" + needed_by);
  if (required) opt->required();
  app->add_option("--num-calib", options.num_calib,
                  "use N samples of the file (conversations of a dataset, rows of a text-only batch), "
                  "chosen with --seed and run in file order; 0 = all")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--seed", options.seed, "seed of the --num-calib selection")->capture_default_str();
}

std::shared_ptr<convert::CalibrationData> CalibFlags::open(const Model& model, const std::string& model_dir) const {
  auto data = std::make_shared<convert::CalibrationData>(
      convert::CalibrationData::open(model, model_dir, path, options));
  VLM2MLA_INFO("calibration data: ", data->describe());
  return data;
}

void CacheFlags::add_to(CLI::App* app) {
  app->add_option("--kv-cache", type,
                  "KV cache storage: bf16 | fp16 | fp32 | int8 | int4 | int2 (default: the compute dtype); "
                  "converted models cache the latent and the RoPE key, others K and V");
  app->add_option("--kv-group", group, "quantized caches: values per group (per token, consecutive channels)")
      ->capture_default_str();
  app->add_option("--kv-window", window,
                  "quantized caches: most recent positions kept in full precision (the prompt's last "
                  "tokens included)")
      ->capture_default_str();
  app->add_option("--decode", decode,
                  "how decode steps run: dynamic (shapes grow with the cache) | static (fixed shapes over "
                  "the cache's capacity, lengths on the device) | graph (static steps replayed as one CUDA "
                  "graph) | auto (graph on CUDA for left-padded batches, else dynamic)")
      ->capture_default_str();
}

DecodeMode CacheFlags::decode_mode() const { return decode_mode_from_name(decode, "--decode"); }

std::optional<CacheSpec> CacheFlags::spec() const {
  if (type.empty()) return std::nullopt;
  CacheSpec s;
  s.type = cache_type_from_name(type, "--kv-cache");
  s.group = group;
  s.window = window;
  VLM2MLA_CHECK(group > 0, ArgumentError, "--kv-group must be positive, got ", group);
  VLM2MLA_CHECK(window > 0, ArgumentError, "--kv-window must be positive, got ", window);
  return s;
}

AttentionBackend RunFlags::attention_backend() const {
  if (attention == "auto" || attention == "absorbed" || attention == "expanded") return default_attention_backend();
  if (attention == "reference") return AttentionBackend::kReference;
  if (attention == "fused") return AttentionBackend::kFused;
  throw ArgumentError(detail::concat("--attention: unknown value '", attention,
                                     "' (expected auto, reference, fused, absorbed or expanded)"));
}

LoadOptions RunFlags::load_options(ModelUse use) const {
  LoadOptions o;
  o.device = parse_device(device, "--device");
  o.dtype = dtype.empty() ? (o.device.is_cuda() ? at::kBFloat16 : at::kFloat)
                          : parse_dtype(dtype, "--dtype");
  VLM2MLA_CHECK(fuse == "auto" || fuse == "on" || fuse == "off", ArgumentError, "--fuse-projections: unknown value '",
                fuse, "' (expected auto, on or off)");
  switch (use) {
    case ModelUse::kInference:
      o.fuse_projections = fuse == "on" || (fuse == "auto" && o.device.is_cuda());
      break;
    case ModelUse::kConversion:
      o.fuse_projections = false;
      break;
  }
  return o;
}

}  // namespace vlm2mla::cli

#include <chrono>

#include "core/log.h"
#include "models/model.h"

namespace vlm2mla::cli {

ModelInputs read_model_inputs(const std::string& path) {
  return ModelInputs::from_tensors(io::read_safetensors(path), path);
}

std::shared_ptr<Model> load_model(const std::string& dir, const RunFlags& flags, ModelUse use,
                                  bool layers_on_host) {
  LoadOptions options = flags.load_options(use);
  options.layers_on_host = layers_on_host;
  auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<Model> model = Model::load(dir, options);
  model->set_attention_backend(flags.attention_backend());
  const MlaAttention mla = flags.mla_attention();
  VLM2MLA_CHECK(mla == MlaAttention::kAuto || model->decoder().has_latent(), ArgumentError, "--attention ",
                flags.attention, ": ", dir, " is not a converted low-rank (MLA) model");
  model->set_mla_attention(mla);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  VLM2MLA_DEBUG("loaded ", dir, " (", model->text_config().architecture, ") in ", secs, " s on ",
                options.device.str(), " as ", c10::toString(options.dtype), ", attention ",
                attention_backend_name(model->attention_backend()),
                options.fuse_projections ? ", projections fused" : "");
  return model;
}

}  // namespace vlm2mla::cli
