#include "common.h"

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace vlm2mla::cli {

void RunFlags::add_to(CLI::App* app) {
  app->add_option("--device", device, "cpu or cuda (cuda:N)")->capture_default_str();
  app->add_option("--dtype", dtype, "float32 | bfloat16 | float16 (default: float32 on cpu, "
                                    "bfloat16 on cuda)");
  app->add_option("--attention", attention,
                  "attention implementation: auto (fused prefill, reference decode) | reference | "
                  "fused (fused needs libtorch >= 2)")
      ->capture_default_str();
}

LoadOptions RunFlags::load_options() const {
  LoadOptions o;
  o.device = parse_device(device, "--device");
  o.dtype = dtype.empty() ? (o.device.is_cuda() ? at::kBFloat16 : at::kFloat)
                          : parse_dtype(dtype, "--dtype");
  return o;
}

namespace {
at::Tensor int_matrix(const std::map<std::string, at::Tensor>& t, const std::string& path,
                      const std::string& name, bool required) {
  auto it = t.find(name);
  if (it == t.end()) {
    VLM2MLA_CHECK(!required, FormatError, path, ": missing tensor '", name,
                  "' (expected int64 [batch, tokens])");
    return {};
  }
  const at::Tensor& x = it->second;
  const bool integral = x.scalar_type() == at::kLong || x.scalar_type() == at::kInt ||
                        x.scalar_type() == at::kShort || x.scalar_type() == at::kByte ||
                        x.scalar_type() == at::kChar || x.scalar_type() == at::kBool;
  VLM2MLA_CHECK(integral, FormatError, path, ": tensor '", name, "' has dtype ",
                x.scalar_type(), ", expected an integer type (int64)");
  VLM2MLA_CHECK(x.dim() == 2, FormatError, path, ": tensor '", name, "' has shape ", x.sizes(),
                ", expected [batch, tokens]");
  return x.to(at::kLong);
}
}  // namespace

TextInputs read_text_inputs(const std::string& path) {
  std::map<std::string, at::Tensor> t = io::read_safetensors(path);
  TextInputs in;
  in.input_ids = int_matrix(t, path, "input_ids", true);
  VLM2MLA_CHECK(in.input_ids.size(0) > 0 && in.input_ids.size(1) > 0, FormatError, path,
                ": tensor 'input_ids' is empty (shape ", in.input_ids.sizes(), ")");
  in.attention_mask = int_matrix(t, path, "attention_mask", false);
  in.position_ids = int_matrix(t, path, "position_ids", false);
  for (const auto* name : {"attention_mask", "position_ids"}) {
    const at::Tensor& x = std::string(name) == "attention_mask" ? in.attention_mask : in.position_ids;
    VLM2MLA_CHECK(!x.defined() || x.sizes() == in.input_ids.sizes(), FormatError, path,
                  ": tensor '", name, "' has shape ", x.sizes(), ", expected that of input_ids ",
                  in.input_ids.sizes());
  }
  return in;
}

}  // namespace vlm2mla::cli

#include <chrono>

#include "core/log.h"
#include "models/decoder.h"

namespace vlm2mla::cli {

std::shared_ptr<TextDecoder> load_model(const std::string& dir, const RunFlags& flags) {
  const LoadOptions options = flags.load_options();
  auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<TextDecoder> model = TextDecoder::load(dir, options);
  if (flags.attention == "auto") {
    model->set_attention_backend(default_attention_backend());
  } else if (flags.attention == "reference") {
    model->set_attention_backend(AttentionBackend::kReference);
  } else if (flags.attention == "fused") {
    model->set_attention_backend(AttentionBackend::kFused);
  } else {
    throw ArgumentError(detail::concat("--attention: unknown value '", flags.attention,
                                       "' (expected auto, reference or fused)"));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  VLM2MLA_DEBUG("loaded ", dir, " (", model->config().architecture, ") in ", secs, " s on ",
                options.device.str(), " as ", c10::toString(options.dtype), ", attention ",
                attention_backend_name(model->attention_backend()));
  return model;
}

}  // namespace vlm2mla::cli
