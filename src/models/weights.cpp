#include "models/weights.h"

#include <sstream>

#include "core/error.h"
#include "core/log.h"

namespace vlm2mla {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

TextLayout detect_text_layout(const io::TensorStore& store) {
  static const TextLayout kCandidates[] = {
      {"model.", "lm_head."},
      {"language_model.model.", "language_model.lm_head."},
      {"model.language_model.", "lm_head."},
  };
  for (const auto& c : kCandidates) {
    if (store.contains(c.decoder_prefix + "embed_tokens.weight")) return c;
  }
  throw FormatError(detail::concat(
      store.source(), ": no decoder found: expected a tensor 'model.embed_tokens.weight' (or "
      "'language_model.model.embed_tokens.weight', 'model.language_model.embed_tokens.weight')"));
}

void for_each_param(const TextConfig& c, const TextLayout& layout, DecoderWeights& w,
                    const std::function<void(const ParamRef&)>& fn) {
  const int64_t d = c.hidden_size, dh = c.head_dim;
  const int64_t q_out = c.num_attention_heads * dh, kv_out = c.num_key_value_heads * dh;
  const std::string& p = layout.decoder_prefix;
  auto linear = [&](const std::string& name, LinearWeights& lw, int64_t out, int64_t in, bool bias) {
    fn({name + ".weight", {out, in}, &lw.weight});
    if (bias) fn({name + ".bias", {out}, &lw.bias});
  };
  fn({p + "embed_tokens.weight", {c.vocab_size, d}, &w.embed_tokens});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayerWeights& lw = w.layers.at(static_cast<size_t>(l));
    const std::string lp = p + "layers." + std::to_string(l) + ".";
    fn({lp + "input_layernorm.weight", {d}, &lw.input_layernorm});
    linear(lp + "self_attn.q_proj", lw.q_proj, q_out, d, c.qkv_bias);
    if (!c.mla) {
      linear(lp + "self_attn.k_proj", lw.k_proj, kv_out, d, c.qkv_bias);
      linear(lp + "self_attn.v_proj", lw.v_proj, kv_out, d, c.qkv_bias);
    } else {
      const MlaConfig& m = *c.mla;
      const int64_t R = m.qk_rope_head_dim, n_kv = c.num_key_value_heads;
      linear(lp + "self_attn.k_rope_proj", lw.k_rope_proj, n_kv * R, d, c.qkv_bias);
      if (!m.low_rank()) {
        linear(lp + "self_attn.k_nope_proj", lw.k_nope_proj, n_kv * (dh - R), d, c.qkv_bias);
        linear(lp + "self_attn.v_proj", lw.v_proj, kv_out, d, c.qkv_bias);
      } else {
        const int64_t r_kv = m.kv_lora_rank.at(static_cast<size_t>(l));
        lw.kv.resize(static_cast<size_t>(m.kv_sets()));
        for (int64_t set = 0; set < m.kv_sets(); ++set) {
          const std::string suffix = !m.modality_split ? "" : set == 0 ? "_text" : "_image";
          KvLatentWeights& kw = lw.kv[static_cast<size_t>(set)];
          linear(lp + "self_attn.kv_a_proj" + suffix, kw.kv_a_proj, r_kv, d, false);
          linear(lp + "self_attn.kv_b_proj" + suffix, kw.kv_b_proj, n_kv * (2 * dh - R), r_kv,
                 c.qkv_bias);
        }
      }
    }
    linear(lp + "self_attn.o_proj", lw.o_proj, d, q_out, c.o_bias);
    fn({lp + "post_attention_layernorm.weight", {d}, &lw.post_attention_layernorm});
    linear(lp + "mlp.gate_proj", lw.gate_proj, c.intermediate_size, d, c.mlp_bias);
    linear(lp + "mlp.up_proj", lw.up_proj, c.intermediate_size, d, c.mlp_bias);
    linear(lp + "mlp.down_proj", lw.down_proj, d, c.intermediate_size, c.mlp_bias);
  }
  fn({p + "norm.weight", {d}, &w.norm});
  if (!c.tie_word_embeddings) fn({layout.lm_head_prefix + "weight", {c.vocab_size, d}, &w.lm_head});
}

void fuse_layer_projections(DecoderLayerWeights& w) {
  if (w.k_rope_proj.weight.defined()) {  // converted
    std::vector<LinearWeights*> members = {&w.q_proj, &w.k_rope_proj};
    if (w.k_nope_proj.weight.defined()) {  // svd none
      members.push_back(&w.k_nope_proj);
      members.push_back(&w.v_proj);
    }
    for (KvLatentWeights& set : w.kv) members.push_back(&set.kv_a_proj);
    fuse_linears(members);
  } else {
    fuse_linears({&w.q_proj, &w.k_proj, &w.v_proj});
  }
  fuse_linears({&w.gate_proj, &w.up_proj});
}

DecoderLayerWeights layer_to(const DecoderLayerWeights& w, at::Device device) {
  auto t = [&](const at::Tensor& x) { return x.defined() ? x.to(device) : x; };
  auto lin = [&](const LinearWeights& l) { return LinearWeights{t(l.weight), t(l.bias)}; };
  DecoderLayerWeights out;
  out.input_layernorm = t(w.input_layernorm);
  out.q_proj = lin(w.q_proj), out.k_proj = lin(w.k_proj), out.v_proj = lin(w.v_proj), out.o_proj = lin(w.o_proj);
  out.post_attention_layernorm = t(w.post_attention_layernorm);
  out.gate_proj = lin(w.gate_proj), out.up_proj = lin(w.up_proj), out.down_proj = lin(w.down_proj);
  out.k_rope_proj = lin(w.k_rope_proj), out.k_nope_proj = lin(w.k_nope_proj);
  for (const auto& kv : w.kv) out.kv.push_back({lin(kv.kv_a_proj), lin(kv.kv_b_proj)});
  return out;
}

void check_param(const io::TensorStore& store, const ParamRef& ref) {
  VLM2MLA_CHECK(store.contains(ref.name), FormatError, store.source(), ": missing tensor '",
                ref.name, "' (expected shape ", shape_str(ref.shape), ")");
  const io::StTensorInfo& info = store.info(ref.name);
  VLM2MLA_CHECK(info.shape == ref.shape, FormatError, store.source(), ": tensor '", ref.name,
                "' has shape ", shape_str(info.shape), ", expected ", shape_str(ref.shape));
  VLM2MLA_CHECK(info.dtype == io::StDtype::kF32 || info.dtype == io::StDtype::kF16 ||
                    info.dtype == io::StDtype::kBF16 || info.dtype == io::StDtype::kF64,
                FormatError, store.source(), ": tensor '", ref.name, "' has dtype ",
                io::st_dtype_name(info.dtype), ", expected a floating type (F32, F16, BF16)");
}

void load_param(const io::TensorStore& store, const ParamRef& ref, const LoadOptions& options,
                std::set<std::string>* consumed) {
  check_param(store, ref);
  // A CPU view over the mapping is kept when neither dtype nor device changes.
  *ref.slot = store.tensor(ref.name).to(options.device, options.dtype);
  if (consumed) consumed->insert(ref.name);
}

void consume_tied_head(const TextConfig& config, const TextLayout& layout,
                       const io::TensorStore& store, std::set<std::string>* consumed) {
  const std::string head = layout.lm_head_prefix + "weight";
  if (config.tie_word_embeddings && consumed && store.contains(head)) consumed->insert(head);
}

ParamFiller checkpoint_filler(const io::TensorStore& store, const LoadOptions& options,
                              std::set<std::string>* consumed) {
  return [&store, options, consumed](const ParamRef& ref) { load_param(store, ref, options, consumed); };
}

namespace {
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
}  // namespace

ParamFiller random_filler(const LoadOptions& options, uint64_t seed) {
  auto gen = std::make_shared<at::Generator>(at::detail::createCPUGenerator(seed));
  return [options, gen](const ParamRef& ref) {
    auto opts = at::TensorOptions().dtype(options.dtype).device(options.device);
    const std::string& n = ref.name;
    const bool norm = n.find("norm") != std::string::npos || n.find(".ln_") != std::string::npos;
    if (norm && ends_with(n, "weight")) {
      *ref.slot = at::ones(ref.shape, opts);
    } else if (ends_with(n, "bias")) {
      *ref.slot = at::zeros(ref.shape, opts);
    } else if (options.device.is_cpu()) {
      *ref.slot = at::normal(0.0, 0.02, ref.shape, *gen, at::TensorOptions().dtype(at::kFloat))
                      .to(options.dtype);
    } else {  // real shapes are too large to make on the host quickly
      *ref.slot = at::empty(ref.shape, opts).normal_(0.0, 0.02);
    }
  };
}

DecoderWeights fill_decoder_weights(const TextConfig& config, const TextLayout& layout,
                                    const ParamFiller& fill) {
  DecoderWeights w;
  w.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  for_each_param(config, layout, w, fill);
  if (config.tie_word_embeddings) w.lm_head = w.embed_tokens;
  return w;
}

void check_all_consumed(const io::TensorStore& store, const std::set<std::string>& consumed,
                        const std::string& what) {
  std::vector<std::string> left;
  for (const auto& name : store.names()) {
    if (consumed.count(name)) continue;
    // Non-persistent buffers old exports carry, with no information: RoPE tables, CLIP's
    // position_ids.
    const std::string position_ids = "embeddings.position_ids";
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (name.size() >= position_ids.size() &&
        name.compare(name.size() - position_ids.size(), position_ids.size(), position_ids) == 0) {
      continue;
    }
    left.push_back(name);
  }
  if (left.empty()) return;
  std::ostringstream os;
  os << store.source() << ": " << left.size() << " tensor(s) not used by " << what << ": ";
  for (size_t i = 0; i < left.size() && i < 5; ++i) {
    os << (i ? ", " : "") << "'" << left[i] << "' " << shape_str(store.info(left[i]).shape);
  }
  if (left.size() > 5) os << ", ...";
  os << " (wrong architecture in config.json, or a config that does not match the weights?)";
  throw FormatError(os.str());
}

DecoderWeights random_decoder_weights(const TextConfig& config, const LoadOptions& options,
                                      uint64_t seed) {
  return fill_decoder_weights(config, TextLayout{}, random_filler(options, seed));
}

int64_t count_parameters(const TextConfig& config) {
  DecoderWeights w;
  w.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  int64_t total = 0;
  for_each_param(config, TextLayout{}, w, [&](const ParamRef& ref) {
    int64_t n = 1;
    for (int64_t s : ref.shape) n *= s;
    total += n;
  });
  return total;
}

}  // namespace vlm2mla
