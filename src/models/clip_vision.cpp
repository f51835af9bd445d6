#include "models/clip_vision.h"

#include <cmath>

#include "core/error.h"

namespace vlm2mla {

at::Tensor layer_norm(const at::Tensor& x, const LayerNormWeights& w, double eps) {
  return at::layer_norm(x, {x.size(-1)}, w.weight, w.bias, eps);
}

void for_each_clip_param(const ClipVisionConfig& c, const std::string& prefix, ClipVisionWeights& w,
                         const std::function<void(const ParamRef&)>& fn) {
  const int64_t d = c.hidden_size;
  const std::string& p = prefix;
  auto norm = [&](const std::string& name, LayerNormWeights& n) {
    fn({name + ".weight", {d}, &n.weight});
    fn({name + ".bias", {d}, &n.bias});
  };
  auto linear = [&](const std::string& name, LinearWeights& lw, int64_t out, int64_t in) {
    fn({name + ".weight", {out, in}, &lw.weight});
    fn({name + ".bias", {out}, &lw.bias});
  };
  fn({p + "embeddings.class_embedding", {d}, &w.class_embedding});
  fn({p + "embeddings.patch_embedding.weight", {d, c.num_channels, c.patch_size, c.patch_size},
      &w.patch_embedding});
  fn({p + "embeddings.position_embedding.weight", {c.num_patches() + 1, d}, &w.position_embedding});
  norm(p + "pre_layrnorm", w.pre_layrnorm);  // sic: transformers' name
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    ClipLayerWeights& lw = w.layers.at(static_cast<size_t>(l));
    const std::string lp = p + "encoder.layers." + std::to_string(l) + ".";
    linear(lp + "self_attn.k_proj", lw.k_proj, d, d);
    linear(lp + "self_attn.v_proj", lw.v_proj, d, d);
    linear(lp + "self_attn.q_proj", lw.q_proj, d, d);
    linear(lp + "self_attn.out_proj", lw.out_proj, d, d);
    norm(lp + "layer_norm1", lw.layer_norm1);
    linear(lp + "mlp.fc1", lw.fc1, c.intermediate_size, d);
    linear(lp + "mlp.fc2", lw.fc2, d, c.intermediate_size);
    norm(lp + "layer_norm2", lw.layer_norm2);
  }
  norm(p + "post_layernorm", w.post_layernorm);
}

ClipVisionTower ClipVisionTower::load(const ClipVisionConfig& config, const std::string& prefix,
                                      const ParamFiller& fill) {
  ClipVisionWeights w;
  w.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  for_each_clip_param(config, prefix, w, fill);
  return ClipVisionTower(config, std::move(w), default_attention_backend());
}

std::vector<at::Tensor> ClipVisionTower::hidden_states(const at::Tensor& pixel_values,
                                                       int64_t num_states) const {
  const auto& c = config_;
  VLM2MLA_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == c.num_channels &&
                    pixel_values.size(2) == c.image_size && pixel_values.size(3) == c.image_size,
                ArgumentError, "pixel_values has shape ", pixel_values.sizes(), ", expected [n, ",
                c.num_channels, ", ", c.image_size, ", ", c.image_size, "] for this vision tower");
  const at::Tensor& pe = weights_.patch_embedding;
  at::Tensor x = at::conv2d(pixel_values.to(pe.device(), pe.scalar_type()), pe, {},
                            {c.patch_size, c.patch_size});  // [n, d, h, w]
  const int64_t n = x.size(0), d = c.hidden_size;
  x = x.flatten(2).transpose(1, 2);                                           // [n, P, d]
  at::Tensor cls = weights_.class_embedding.view({1, 1, d}).expand({n, 1, d});
  x = at::cat({cls, x}, 1) + weights_.position_embedding.unsqueeze(0);       // [n, 1 + P, d]
  x = layer_norm(x, weights_.pre_layrnorm, c.layer_norm_eps);
  std::vector<at::Tensor> states = {x};
  const int64_t heads = c.num_attention_heads, hd = d / heads, s = x.size(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int64_t l = 0; l + 1 < num_states; ++l) {
    const ClipLayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    at::Tensor h = layer_norm(x, w.layer_norm1, c.layer_norm_eps);
    at::Tensor q = linear(h, w.q_proj).view({n, s, heads, hd}).transpose(1, 2);  // [n, heads, s, hd]
    at::Tensor k = linear(h, w.k_proj).view({n, s, heads, hd}).transpose(1, 2);
    at::Tensor v = linear(h, w.v_proj).view({n, s, heads, hd}).transpose(1, 2);
    at::Tensor a = attention(backend_, q, k, v, at::Tensor(), scale);             // no mask
    x = x + linear(a.transpose(1, 2).reshape({n, s, d}), w.out_proj);
    h = linear(layer_norm(x, w.layer_norm2, c.layer_norm_eps), w.fc1);
    h = c.hidden_act == "quick_gelu" ? h * at::sigmoid(1.702 * h) : at::gelu(h);
    x = x + linear(h, w.fc2);
    states.push_back(x);
  }
  return states;
}

}  // namespace vlm2mla
