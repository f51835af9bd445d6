#include "models/decoder.h"

#include <cmath>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "models/mla_attention.h"
#include "nn/layers.h"

namespace vlm2mla {

TextDecoder::TextDecoder(TextConfig config, DecoderWeights weights, LoadOptions options)
    : config_(std::move(config)), weights_(std::move(weights)), options_(options),
      rope_(make_rope_table(config_.rope, config_.head_dim)), backend_(default_attention_backend()) {
  rope_.inv_freq = rope_.inv_freq.to(options_.device);
  if (options_.fuse_projections) {
    for (auto& layer : weights_.layers) fuse_layer_projections(layer);
  }
  if (config_.mla) {
    std::vector<at::Tensor> dims;
    for (const auto& layer : config_.mla->kept_pairs) dims.push_back(mla_rope_dims(layer, config_.head_dim));
    if (!dims.empty()) mla_rope_dims_ = at::cat(dims).to(options_.device);
    if (config_.mla->modality_split) {
      visual_ids_ = at::tensor(config_.mla->visual_token_ids, at::kLong).to(options_.device);
    }
    if (config_.mla->low_rank()) {
      for (const auto& lw : weights_.layers) {
        // Model::check_checkpoint builds a decoder from shapes alone (no tensors): nothing to derive.
        const bool filled = !lw.kv.empty() && lw.kv[0].kv_b_proj.weight.defined();
        absorbed_.push_back(filled ? absorbed_weights(config_, layer_to(lw, options_.device)) : AbsorbedWeights{});
      }
    }
  }
}

const char* mla_attention_name(MlaAttention mode) {
  switch (mode) {
    case MlaAttention::kAuto: return "auto";
    case MlaAttention::kAbsorbed: return "absorbed";
    case MlaAttention::kExpanded: return "expanded";
  }
  return "?";
}

std::unique_ptr<KvCache> TextDecoder::make_kv_cache(int64_t batch, int64_t capacity,
                                                    const CacheSpec* spec) const {
  CacheSpec s;
  if (spec) {
    s = *spec;
  } else {
    s.type = options_.dtype == at::kFloat ? CacheType::kFp32
             : options_.dtype == at::kHalf ? CacheType::kFp16
                                           : CacheType::kBf16;
  }
  const auto& c = config_;
  if (has_latent() && mla_mode_ != MlaAttention::kExpanded) {
    return std::make_unique<LatentKvCache>(c.mla->kv_lora_rank, c.num_key_value_heads * c.mla->qk_rope_head_dim,
                                           c.mla->modality_split, batch, capacity, s, options_.dtype,
                                           options_.device);
  }
  return std::make_unique<DenseKvCache>(c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim,
                                        capacity, s, options_.dtype, options_.device);
}

DenseKvCache TextDecoder::make_cache(int64_t batch, int64_t capacity) const {
  return DenseKvCache(config_.num_hidden_layers, batch, config_.num_key_value_heads,
                      config_.head_dim, capacity, options_.dtype, options_.device);
}

void check_token_ids(const at::Tensor& ids, int64_t vocab_size, const std::string& what) {
  if (ids.numel() == 0) return;
  at::Tensor flat = ids.to(at::kCPU).to(at::kLong).contiguous().view({-1});
  at::Tensor bad = (flat < 0).logical_or(flat >= vocab_size);
  if (!bad.any().item<bool>()) return;
  int64_t index = bad.nonzero()[0][0].item<int64_t>();  // first offending element
  const int64_t value = flat[index].item<int64_t>();
  std::vector<int64_t> pos(static_cast<size_t>(ids.dim()));
  for (int64_t d = ids.dim() - 1; d >= 0; --d) {
    pos[static_cast<size_t>(d)] = index % ids.size(d);
    index /= ids.size(d);
  }
  throw ArgumentError(detail::concat(what, ": token id ", value, " at ", shape_str(pos),
                                     " is outside the vocabulary [0, ", vocab_size, ")"));
}

at::Tensor position_ids_from_mask(const at::Tensor& attention_mask) {
  at::Tensor m = attention_mask.to(at::kLong);
  return (m.cumsum(-1) - 1).masked_fill(m.eq(0), 1);
}

Prompt text_prompt(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  VLM2MLA_CHECK(input_ids.dim() == 2 && input_ids.size(1) > 0, ArgumentError,
                "input_ids must be [batch, tokens] with at least one token, got shape ",
                input_ids.sizes());
  Prompt p;
  p.input_ids = input_ids.to(at::kCPU).to(at::kLong);
  const int64_t b = p.input_ids.size(0), t = p.input_ids.size(1);
  p.attention_mask = attention_mask.defined() ? attention_mask.to(at::kCPU).to(at::kLong)
                                              : at::ones({b, t}, at::kLong);
  VLM2MLA_CHECK(p.attention_mask.sizes() == p.input_ids.sizes(), ArgumentError,
                "attention_mask has shape ", p.attention_mask.sizes(),
                ", expected the shape of input_ids ", p.input_ids.sizes());
  p.position_ids = position_ids_from_mask(p.attention_mask);
  p.next_position = p.attention_mask.sum(-1);
  return p;
}

at::Tensor TextDecoder::embed(const at::Tensor& input_ids) const {
  check_token_ids(input_ids, config_.vocab_size, "input_ids");
  return at::embedding(weights_.embed_tokens, input_ids.to(options_.device));  // [b, s, d]
}

at::Tensor TextDecoder::input_embeddings(const DecoderInput& in) const {
  if (in.inputs_embeds.defined()) return in.inputs_embeds.to(options_.device, options_.dtype);
  at::Tensor x = embed(in.input_ids).to(options_.dtype);  // [b, s, d]
  if (!in.features.defined()) return x;
  VLM2MLA_CHECK(in.feature_rows.defined() && in.feature_rows.sizes() == in.input_ids.sizes(), ArgumentError,
                "feature_rows must have input_ids' shape ", in.input_ids.sizes(), " where features are given");
  at::Tensor rows = in.feature_rows.to(at::kCPU, at::kLong);
  at::Tensor at_feature = rows.ge(0);
  if (!at_feature.any().item<bool>()) return x;  // no image or video token among these positions
  at::Tensor take = rows.masked_select(at_feature);  // in row-major order, as masked_scatter fills
  const int64_t last = take.max().item<int64_t>();
  VLM2MLA_CHECK(last < in.features.size(0), ArgumentError, "feature_rows names row ", last, " of ",
                in.features.size(0), " feature rows");
  at::Tensor feats = in.features.index_select(0, take.to(in.features.device())).to(x.device(), x.scalar_type());
  return x.masked_scatter(at_feature.to(x.device()).unsqueeze(-1).expand_as(x), feats);
}

void TextDecoder::check_cache(const KvCache* cache) const {
  const DenseKvCache* dense = cache && cache->kind() == CacheKind::kDense ? static_cast<const DenseKvCache*>(cache) : nullptr;
  const LatentKvCache* latent_cache =
      cache && cache->kind() == CacheKind::kLatent ? static_cast<const LatentKvCache*>(cache) : nullptr;
  VLM2MLA_CHECK(!latent_cache || has_latent(), ArgumentError,
                "a latent KV cache serves converted low-rank (MLA) models only");
  VLM2MLA_CHECK(!latent_cache || mla_mode_ != MlaAttention::kExpanded, ArgumentError,
                "expanded MLA attention caches full K and V: use a dense cache");
  VLM2MLA_CHECK(!dense || !has_latent() || mla_mode_ == MlaAttention::kExpanded, ArgumentError,
                "a dense cache with a converted low-rank model needs expanded attention "
                "(absorbed attention reads the latent cache)");
}

MlaRopes TextDecoder::mla_ropes_for(const RopeCosSin& cs) const {
  if (!config_.mla || !mla_rope_dims_.defined()) return {};
  return MlaRopes(cs, mla_rope_dims_, config_.num_hidden_layers, config_.num_key_value_heads,
                  config_.mla->qk_rope_head_dim);
}

QkvHeads TextDecoder::qkv_heads(const DecoderLayerWeights& w, int64_t layer, const at::Tensor& h,
                                const RopeCosSin& cs, const MlaRopes& mla_ropes, const at::Tensor& visual) const {
  if (config_.mla) return mla_qkv_expanded(config_, w, mla_ropes.layer(layer), h, visual);
  const int64_t b = h.size(0), s = h.size(1), dh = config_.head_dim;
  QkvHeads o;
  const std::vector<at::Tensor> qkv = linear_group(h, {&w.q_proj, &w.k_proj, &w.v_proj});  // one GEMM where fused
  o.q_pre = qkv[0].view({b, s, config_.num_attention_heads, dh}).transpose(1, 2);  // [b, h_q, s, d]
  o.k_pre = qkv[1].view({b, s, config_.num_key_value_heads, dh}).transpose(1, 2);  // [b, h_kv, s, d]
  o.v = qkv[2].view({b, s, config_.num_key_value_heads, dh}).transpose(1, 2);      // [b, h_kv, s, d]
  const at::Tensor cos = cs.cos.unsqueeze(1), sin = cs.sin.unsqueeze(1);  // [b, 1, s, d]
  std::tie(o.q, o.k) = apply_rope_pair(o.q_pre, cos, sin, o.k_pre, cos, sin);  // one launch on CUDA
  return o;
}

std::pair<at::Tensor, at::Tensor> TextDecoder::layer_tail_parts(const DecoderLayerWeights& w, const at::Tensor& x,
                                                                 const at::Tensor& a) const {
  const int64_t b = a.size(0), s = a.size(2);
  // y = x + o_proj(a), h = post_attention_layernorm(y): one launch on CUDA
  auto [y, h] = add_rms_norm(x, linear(a.transpose(1, 2).reshape({b, s, -1}), w.o_proj), w.post_attention_layernorm,
                             config_.rms_norm_eps);  // [b, s, d] each
  return {y, swiglu_mlp(h, w.gate_proj, w.up_proj, w.down_proj)};
}

at::Tensor TextDecoder::layer_tail(const DecoderLayerWeights& w, const at::Tensor& x, const at::Tensor& a) const {
  auto [y, mlp] = layer_tail_parts(w, x, a);
  return y + mlp;
}

at::Tensor TextDecoder::forward_hidden(const DecoderInput& in, KvCache* cache,
                                      DecoderObserver* observer) const {
  check_cache(cache);
  DenseKvCache* dense = cache && cache->kind() == CacheKind::kDense ? static_cast<DenseKvCache*>(cache) : nullptr;
  LatentKvCache* latent_cache =
      cache && cache->kind() == CacheKind::kLatent ? static_cast<LatentKvCache*>(cache) : nullptr;
  at::Tensor x = input_embeddings(in);  // [b, s, d]
  const int64_t b = x.size(0), s = x.size(1);
  const int64_t past = cache ? cache->length() : 0;
  const int64_t dh = config_.head_dim;
  at::Tensor positions = in.position_ids;
  VLM2MLA_CHECK(positions.defined() && positions.size(-2) == b && positions.size(-1) == s &&
                    (positions.dim() == 2 || (positions.dim() == 3 && positions.size(0) == 3)),
                ArgumentError, "position_ids must be [", b, ", ", s, "] (or [3, ", b, ", ", s,
                "] with M-RoPE), got ", positions.sizes());
  const bool mrope = !config_.rope.mrope_section.empty();
  VLM2MLA_CHECK(mrope || positions.dim() == 2, ArgumentError,
                "3-D position_ids given, but the model has no M-RoPE (mrope_section)");
  if (mrope && positions.dim() == 2) positions = positions.unsqueeze(0).expand({3, b, s});  // text
  at::Tensor key_valid;
  if (in.attention_mask.defined()) {
    VLM2MLA_CHECK(in.attention_mask.dim() == 2 && in.attention_mask.size(0) == b &&
                      in.attention_mask.size(1) == past + s,
                  ArgumentError, "attention_mask has shape ", in.attention_mask.sizes(),
                  ", expected [", b, ", ", past + s, "] (cached + new positions)");
    key_valid = in.attention_mask.to(options_.device).ne(0);
    if (key_valid.all().item<bool>()) key_valid = at::Tensor();  // nothing to mask but causality
  }
  at::Tensor mask = causal_mask(key_valid, b, past, s, options_.device);  // [b, 1, s, past+s]
  const bool plain_causal = !key_valid.defined() && past == 0 && s > 1;
  RopeCosSin cs = rope_cos_sin(rope_, positions.to(options_.device), options_.dtype);
  const MlaRopes mla_ropes = mla_ropes_for(cs);  // converted models: each layer's kept dims
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  at::Tensor valid;  // [b, s] real tokens of this step, for observers
  if (observer) {
    valid = in.attention_mask.defined()
                ? in.attention_mask.to(options_.device).narrow(1, past, s).ne(0)
                : at::ones({b, s}, at::TensorOptions().dtype(at::kBool).device(options_.device));
  }

  at::Tensor visual;  // [b, s] tokens of the image projection set (md models)
  if (config_.mla && config_.mla->modality_split) {
    VLM2MLA_CHECK(in.input_ids.defined(), ArgumentError,
                  "this converted model has per-modality K/V projections and needs input_ids to "
                  "choose them (only inputs_embeds were given)");
    visual = visual_mask(in.input_ids);
    // No visual token in this step (every decode step): all text, and no per-layer check (a device
    // sync each) further down.
    if (!visual.any().item<bool>()) visual = at::Tensor();
  }
  if (latent_cache) {
    latent_cache->set_modality(visual.defined() ? visual
                                                : at::zeros({b, s}, at::TensorOptions().dtype(at::kBool)));
  }
  // auto: absorbed for one-token steps; prefill (also a later prefill chunk) expanded, where one fused
  // attention call over rebuilt K/V beats materialising absorbed scores.
  const bool absorbed = mla_mode_ == MlaAttention::kAbsorbed || (mla_mode_ == MlaAttention::kAuto && s == 1);
  // The decode kernel attends keys [start, past + 1) per sequence: left padding only (checked once).
  at::Tensor kernel_start;
  bool kernel_step = latent_cache && absorbed && s == 1 && decode_kernel_ &&
                     mla_decode_kernel_usable(*latent_cache, 0, options_.device);
  if (kernel_step) {
    if (key_valid.defined()) {
      at::Tensor pads = key_valid.logical_not().sum(-1);  // [b]
      at::Tensor pos = at::arange(past + s, at::TensorOptions().dtype(at::kLong).device(options_.device));
      kernel_step = key_valid.eq(pos.unsqueeze(0) >= pads.unsqueeze(1)).all().item<bool>();
      kernel_start = pads.to(at::kInt);
    } else {
      kernel_start = at::zeros({b}, at::TensorOptions().dtype(at::kInt).device(options_.device));
    }
  }

  // A padded batch's one-token steps: SDPA's additive form of the mask, made once for every layer (libtorch makes
  // it of the bool mask in each: a where and fills)
  at::Tensor sdpa_mask;
  auto attend = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return attention(backend_, q, k, v, mask, scale, plain_causal, shared_sdpa_mask(sdpa_mask, mask, q));
  };
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    // Layers kept in host memory visit the device one at a time.
    const DecoderLayerWeights staged = options_.layers_on_host
                                           ? layer_to(weights_.layers[static_cast<size_t>(l)], options_.device)
                                           : DecoderLayerWeights{};
    const DecoderLayerWeights& w = options_.layers_on_host ? staged : weights_.layers[static_cast<size_t>(l)];
    at::Tensor h = rms_norm(x, w.input_layernorm, config_.rms_norm_eps);
    if (observer) observer->attention_input(l, h, valid, in.image_mask);
    at::Tensor a;  // [b, h_q, s, d]
    if (has_latent()) {  // converted low-rank layer: absorbed or expanded, over the latent cache or not
      MlaStep st = mla_project(config_, w, mla_ropes.layer(l), h, visual, /*full_query=*/!kernel_step);
      const AbsorbedWeights& aw = absorbed_[static_cast<size_t>(l)];
      if (kernel_step) {  // one token per sequence on the decode kernel, reading the cache in place
        latent_cache->write(l, st.latent, st.k_rope);
        a = mla_attention_absorbed_kernel(config_, aw, st.q_pre, *latent_cache, l, kernel_start, scale, st.q_rot);
      } else {
        at::Tensor lat = st.latent, kr = st.k_rope, mod = visual;  // [b, t, *] every attended position
        if (latent_cache) {
          std::tie(lat, kr) = latent_cache->append(l, st.latent, st.k_rope);
          mod = latent_cache->modality(past + s);
        }
        if (absorbed) {
          a = mla_attention_absorbed(config_, aw, st.q, lat, kr, mod, mask, scale);
        } else {
          // The prompt's own latents (not their cached, possibly quantized copies) when nothing was cached.
          const bool fresh = past == 0 || !latent_cache;
          auto [k, v] = mla_expand(config_, w, fresh ? st.latent : lat, fresh ? st.k_rope : kr,
                                   fresh ? visual : mod);
          if (dense) std::tie(k, v) = dense->append(l, k, v);
          a = attend(st.q, k, v);
        }
      }
    } else {
      QkvHeads qkv = qkv_heads(w, l, h, cs, mla_ropes, visual);
      at::Tensor k = qkv.k, v = qkv.v;  // [b, h_kv, s, d]
      if (observer) observer->queries_keys(l, qkv.q_pre, qkv.k_pre, qkv.q, k, valid, in.image_mask);
      if (dense) std::tie(k, v) = dense->append(l, k, v);  // [b, h_kv, past + s, d]
      a = attend(qkv.q, k, v);
    }
    x = layer_tail(w, x, a);
  }
  if (cache) cache->advance(s);
  return rms_norm(x, weights_.norm, config_.rms_norm_eps);
}

at::Tensor TextDecoder::forward_static(const StaticDecodeInput& in, KvCache& cache) const {
  check_cache(&cache);
  VLM2MLA_CHECK(!options_.layers_on_host, ArgumentError,
                "shape-static decode steps need the layers resident on the device (not --offload-layers)");
  const int64_t b = cache.batch(), cap = cache.capacity();
  VLM2MLA_CHECK(in.input_ids.dim() == 2 && in.input_ids.size(0) == b && in.input_ids.size(1) == 1, ArgumentError,
                "a static decode step takes input_ids [", b, ", 1], got ", in.input_ids.sizes());
  VLM2MLA_CHECK(in.past.numel() == 1 && in.start.numel() == b, ArgumentError,
                "a static decode step takes past [1] and start [", b, "]");
  VLM2MLA_CHECK(cache.length() < cap, ArgumentError, "a static decode step needs room in the cache: ",
                cache.length(), " positions cached, capacity ", cap, " (KvCache::reserve)");
  DenseKvCache* dense = cache.kind() == CacheKind::kDense ? static_cast<DenseKvCache*>(&cache) : nullptr;
  LatentKvCache* latent_cache = cache.kind() == CacheKind::kLatent ? static_cast<LatentKvCache*>(&cache) : nullptr;
  const at::Device dev = options_.device;
  at::Tensor x = at::embedding(weights_.embed_tokens, in.input_ids);  // [b, 1, d]
  at::Tensor positions = in.position_ids;
  const bool mrope = !config_.rope.mrope_section.empty();
  if (mrope && positions.dim() == 2) positions = positions.unsqueeze(0).expand({3, b, 1});
  RopeCosSin cs = rope_cos_sin(rope_, positions, options_.dtype);
  const MlaRopes mla_ropes = mla_ropes_for(cs);  // converted models: each layer's kept dims
  const double scale = 1.0 / std::sqrt(static_cast<double>(config_.head_dim));
  const at::Tensor visual = visual_mask(in.input_ids);  // [b, 1]: md models choose the projection set per token
  if (latent_cache && visual.defined()) latent_cache->set_modality_at(visual, in.past);
  const bool kernel = latent_cache && decode_kernel_ && mla_decode_kernel_usable(*latent_cache, 0, dev);
  at::Tensor start32, length32, modality, mask;
  if (kernel) {  // the kernel takes each row's key range itself
    start32 = in.start.to(at::kInt);
    // materialized once a step: mla_decode takes contiguous lengths, and an expanded view cost a copy a layer
    length32 = (in.past + 1).to(at::kInt).expand({b}).contiguous();
  } else {  // keys [start, past] of the whole capacity: [b, 1, 1, capacity]
    at::Tensor j = at::arange(cap, at::TensorOptions().dtype(at::kLong).device(dev)).view({1, cap});
    mask = (j >= in.start.view({b, 1})).logical_and(j <= in.past).view({b, 1, 1, cap});
    if (latent_cache) modality = latent_cache->modality_all();
  }
  // The previous layer's MLP output, added to x in the next norm (one launch on CUDA where the add and the norm took
  // two; layer_tail_parts): each layer's input norm, then the final one.
  at::Tensor pending;
  auto norm = [&](const at::Tensor& weight) {
    if (!pending.defined()) return rms_norm(x, weight, config_.rms_norm_eps);
    at::Tensor h;
    std::tie(x, h) = add_rms_norm(x, pending, weight, config_.rms_norm_eps);
    return h;
  };
  at::Tensor sdpa_mask;  // the plain K/V layers' mask as SDPA's additive mask, from the first such layer on
  // The decode kernel's output buffer, made (and zeroed) once for the step where every layer's has one shape
  // (decode_output_buffer; else each layer makes its own)
  at::Tensor decode_out;
  if (kernel && decode_out_once_enabled() && !absorbed_.empty()) {
    const int64_t width = absorbed_.front().w_out.size(1);
    bool same = true;
    for (const AbsorbedWeights& aw : absorbed_) same = same && aw.w_out.size(1) == width;
    if (same) decode_out = decode_output_buffer(config_, absorbed_.front(), b, x.options());
  }
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const DecoderLayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    const at::Tensor h = norm(w.input_layernorm);
    at::Tensor a;  // [b, h_q, 1, d]
    if (latent_cache) {  // absorbed, over the latent cache
      // (the kernel's step: the RoPE in the cache write's launch where it takes it)
      MlaStep st = mla_project(config_, w, mla_ropes.layer(l), h, visual, /*full_query=*/!kernel, /*defer_pick=*/true,
                               /*defer_rope=*/kernel);
      const AbsorbedWeights& aw = absorbed_[static_cast<size_t>(l)];
      mla_write_step(*latent_cache, l, st, in.past);
      if (kernel) {
        a = mla_attention_absorbed_kernel(config_, aw, st.q_pre, *latent_cache, l, start32, length32, cap, scale,
                                          st.q_rot, decode_out);
      } else {
        auto [lat, kr] = latent_cache->read_upto(l, in.past);
        a = mla_attention_absorbed(config_, aw, st.q, lat, kr, modality, mask, scale);
      }
    } else {  // plain K/V (unconverted, svd none, or expanded MLA) over the dense cache
      QkvHeads qkv = qkv_heads(w, l, h, cs, mla_ropes, visual);
      dense->write_at(l, qkv.k, qkv.v, in.past);
      auto [k, v] = dense->read_upto(l, in.past);
      // SDPA's additive mask made once a step (libtorch makes it of the bool mask in every layer: a where and fills)
      a = attention(backend_, qkv.q, k, v, mask, scale, false, shared_sdpa_mask(sdpa_mask, mask, qkv.q));
    }
    std::tie(x, pending) = layer_tail_parts(w, x, a);
  }
  return norm(weights_.norm);
}

at::Tensor TextDecoder::visual_mask(const at::Tensor& input_ids) const {
  if (!input_ids.defined() || !visual_ids_.defined()) return {};
  // ids already beside visual_ids_ (a static step's, inside a CUDA graph) are read in place: to() copies none
  return at::isin(input_ids.to(visual_ids_.device()), visual_ids_);
}

int64_t TextDecoder::step_weight_bytes() const {
  DecoderWeights w = weights_;  // tensor handles: the walk below needs slots
  int64_t bytes = 0;
  for_each_param(config_, TextLayout{}, w, [&](const ParamRef& ref) {
    if (ref.slot == &w.embed_tokens || !ref.slot->defined()) return;
    bytes += static_cast<int64_t>(ref.slot->nbytes());
  });
  if (config_.tie_word_embeddings && w.lm_head.defined()) bytes += static_cast<int64_t>(w.lm_head.nbytes());
  return bytes;
}

at::Tensor TextDecoder::lm_head(const at::Tensor& hidden) const {
  return dense(hidden, weights_.lm_head);
}

}  // namespace vlm2mla
