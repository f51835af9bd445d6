#include "support/fixtures.h"

#include "io/json_file.h"
#include "io/safetensors.h"

namespace vlm2mla::testing {

const std::vector<std::string>& text_fixture_names() {
  static const std::vector<std::string> names = {"llama-mha", "llama3-gqa", "qwen2"};
  return names;
}

TextFixture load_text_fixture(const std::string& name) {
  TextFixture f;
  f.name = name;
  f.dir = fixtures_dir() + "/text/" + name;
  f.model_dir = f.dir + "/model";
  f.inputs = io::read_safetensors(f.dir + "/inputs.safetensors");
  f.inputs_row1 = io::read_safetensors(f.dir + "/inputs_row1.safetensors");
  f.expected = io::read_safetensors(f.dir + "/expected.safetensors");
  nlohmann::json meta = io::read_json_file(f.dir + "/meta.json");
  f.pad = meta.at("pad").get<int64_t>();
  f.hf_bf16_error = meta.value("hf_bf16_cuda_vs_fp32_max_abs", 0.0);
  return f;
}

GenerateOptions greedy_options(const std::string& model_dir, const TextConfig& config, int64_t n) {
  GenerateOptions o = load_generate_defaults(model_dir, config);
  o.max_new_tokens = n;
  o.sampling.do_sample = false;
  return o;
}

namespace {
at::Tensor select_valid(const at::Tensor& x, const at::Tensor& valid) {
  at::Tensor xf = x.to(at::kCPU).to(at::kDouble);
  if (!valid.defined()) return xf.reshape({-1});
  return xf.index({valid.to(at::kCPU).to(at::kBool)}).reshape({-1});
}
}  // namespace

double max_abs_error(const at::Tensor& a, const at::Tensor& b, const at::Tensor& valid) {
  return (select_valid(a, valid) - select_valid(b, valid)).abs().max().item<double>();
}

double max_rel_error(const at::Tensor& a, const at::Tensor& b, const at::Tensor& valid) {
  return max_abs_error(a, b, valid) / select_valid(b, valid).abs().max().item<double>();
}

}  // namespace vlm2mla::testing
