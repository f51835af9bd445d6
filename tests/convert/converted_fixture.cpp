#include "convert/converted_fixture.h"

#include "convert/converter.h"
#include "io/safetensors.h"
#include "support/fixtures.h"

namespace vlm2mla::testing {

using convert::CalibrationInputs;
using convert::ConvertOptions;

Converted converted(const std::string& name, int64_t D) {
  const std::string dir = fixtures_dir() + "/" + name;
  auto original = Model::load(dir + "/model", LoadOptions{});
  original->set_attention_backend(AttentionBackend::kReference);
  ModelInputs in = ModelInputs::from_tensors(io::read_safetensors(dir + "/inputs.safetensors"), dir);
  CalibrationInputs calib = convert::calibration_inputs(in);
  ConvertOptions o;
  o.rope_strategy = "2-norm";
  o.rope_dims = 4;
  o.svd = original->image_token_id() >= 0 ? SvdMethod::kMd : SvdMethod::kWhitened;
  o.kv_rank = {D};
  Converted c{convert::convert_model(*original, o, &calib).model, in};
  // md starts both modalities' biases equal; fine-tuning makes them diverge. Make them differ here so
  // the per-modality bias terms of the absorbed form are exercised (the views the absorbed weights
  // hold share this storage).
  for (const auto& layer : c.model->decoder().weights().layers) {
    if (layer.kv.size() == 2 && layer.kv[1].kv_b_proj.bias.defined()) {
      auto gen = at::detail::createCPUGenerator(5);
      at::Tensor& bias = const_cast<at::Tensor&>(layer.kv[1].kv_b_proj.bias);
      bias.add_(at::normal(0.0, 0.5, bias.sizes(), gen, bias.options()));
    }
  }
  return c;
}

DecoderInput next_token(const Prompt& p, int64_t token) {
  const int64_t b = p.input_ids.size(0);
  DecoderInput step;
  step.input_ids = at::full({b, 1}, token, at::kLong);
  step.attention_mask = at::cat({p.attention_mask, at::ones({b, 1}, at::kLong)}, 1);
  at::Tensor pos = p.next_position.to(at::kLong).view({b, 1});
  step.position_ids = p.position_ids.dim() == 3 ? pos.unsqueeze(0).expand({3, b, 1}) : pos;
  return step;
}

}  // namespace vlm2mla::testing
