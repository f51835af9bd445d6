// The Llama / Qwen2 decoder-only language model. Immutable once built: caches live outside.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>

#include "attention/attention.h"
#include "kvcache/dense_kv_cache.h"
#include "kvcache/latent_kv_cache.h"
#include "models/mla_attention.h"
#include "models/observer.h"
#include "models/text_config.h"
#include "models/weights.h"
#include "nn/rope.h"

namespace vlm2mla {

struct DecoderInput {
  at::Tensor input_ids;       // [b, s] int64, or
  at::Tensor inputs_embeds;   // [b, s, d] in the compute dtype
  // Vision features, scattered into input_ids' embeddings as each step embeds its positions (so a prompt's
  // [b, s, d] embeddings never exist at once): feature_rows [b, s] int64 is the row of features [n, d] that
  // takes each position's embedding, -1 for a text position. Undefined: none (or inputs_embeds holds them).
  at::Tensor features;
  at::Tensor feature_rows;
  at::Tensor position_ids;    // [b, s] int64, or [3, b, s] (t, h, w) for M-RoPE models (required)
  at::Tensor attention_mask;  // [b, past + s], nonzero = real token; undefined = all real
  at::Tensor image_mask;      // [b, s] bool, image tokens (for observers); may be undefined
  // Converted md models pick each token's projection set from input_ids (mla.visual_token_ids), so
  // they need input_ids (beside inputs_embeds) in every step.
};

// What the decoder runs for a prompt, ready for generation.
struct Prompt {
  at::Tensor input_ids;       // [b, s] int64 (CPU)
  at::Tensor attention_mask;  // [b, s] int64 (CPU), ones when none was given
  at::Tensor features;        // [n, d] image (then video) features, or undefined for text-only input
  at::Tensor feature_rows;    // [b, s] int64 (CPU): the features' row at each image/video token, -1 elsewhere
  at::Tensor position_ids;    // [b, s] or [3, b, s]
  at::Tensor next_position;   // [b]: position of the first generated token (M-RoPE: the t axis's)
  // M-RoPE models: [3, b], the first generated token's position on each axis (they differ after a
  // prompt that ends inside a video), or undefined: next_position on every axis.
  at::Tensor next_mrope_position;
  at::Tensor image_mask;      // [b, s] bool image tokens (vision-language models), else undefined

  // The decoder input of the whole prompt (the prefill).
  DecoderInput decoder_input() const {
    DecoderInput d;
    d.input_ids = input_ids;
    d.features = features;
    d.feature_rows = feature_rows;
    d.attention_mask = attention_mask;
    d.position_ids = position_ids;
    d.image_mask = image_mask;
    return d;
  }
};

// transformers' position ids for a (left-)padded batch: cumsum(mask) - 1, 1 where masked.
at::Tensor position_ids_from_mask(const at::Tensor& attention_mask);

// A text prompt as generate takes it: positions from the mask.
Prompt text_prompt(const at::Tensor& input_ids, const at::Tensor& attention_mask);

// The device-resident inputs of a shape-static decode step: one token per sequence over a cache whose
// storage does not move, every length on the device. Steps of this form can be captured once as a
// CUDA graph and replayed (generate/decode_graph.h); the caller updates the tensors in place.
struct StaticDecodeInput {
  at::Tensor input_ids;     // [b, 1] int64
  at::Tensor position_ids;  // [b, 1], or [3, b, 1] for M-RoPE models, int64
  at::Tensor past;          // [1] int64: positions cached before this step (the cache's length)
  at::Tensor start;         // [b] int64: each row's first real position (its left padding)
};

// How converted low-rank layers attend: absorbed (over the latent, what the latent cache serves),
// expanded (K and V rebuilt from the latent: the reference twin, with a dense cache), or auto:
// absorbed for one-token (decode) steps over the latent cache, expanded for prefill steps (K and V
// rebuilt from the latent cache, one fused attention call).
enum class MlaAttention { kAuto, kAbsorbed, kExpanded };
const char* mla_attention_name(MlaAttention mode);

class TextDecoder {
 public:
  TextDecoder(TextConfig config, DecoderWeights weights, LoadOptions options);

  const TextConfig& config() const { return config_; }
  const DecoderWeights& weights() const { return weights_; }
  at::ScalarType dtype() const { return options_.dtype; }
  const LoadOptions& load_options() const { return options_; }
  at::Device device() const { return options_.device; }

  void set_attention_backend(AttentionBackend backend) { backend_ = backend; }
  AttentionBackend attention_backend() const { return backend_; }

  void set_mla_attention(MlaAttention mode) { mla_mode_ = mode; }
  // Absorbed decode steps on CUDA use the decode kernel (kernels/ops.h) where it applies; off: the
  // libtorch form (its twin), for tests and benchmarks.
  void set_decode_kernel(bool on) { decode_kernel_ = on; }
  bool decode_kernel() const { return decode_kernel_; }
  MlaAttention mla_attention() const { return mla_mode_; }
  // True for converted models whose K/V go through a latent (they can use the latent cache).
  bool has_latent() const { return config_.mla && config_.mla->low_rank(); }
  // Converted md models (two projection sets): which of `input_ids` ([b, s]) are image tokens, bool [b, s] on
  // the model's device; undefined for other models (one set) or without ids.
  at::Tensor visual_mask(const at::Tensor& input_ids) const;

  // A dense cache sized for this model, in the compute dtype.
  DenseKvCache make_cache(int64_t batch, int64_t capacity) const;
  // The cache generation uses: latent for converted low-rank models unless attention is expanded,
  // dense otherwise; stored as `spec` says (null: the compute dtype).
  std::unique_ptr<KvCache> make_kv_cache(int64_t batch, int64_t capacity, const CacheSpec* spec) const;

  // ids [b, s] -> [b, s, d]. Throws ArgumentError for ids outside [0, vocab_size).
  at::Tensor embed(const at::Tensor& input_ids) const;
  // What a forward takes as its positions' embeddings [b, s, d] in the compute dtype: inputs_embeds, else
  // input_ids' embeddings with the features at feature_rows (DecoderInput).
  at::Tensor input_embeddings(const DecoderInput& input) const;

  // Runs every layer and the final norm: [b, s, d]. With a cache, attends over the cached positions
  // too and appends this step's keys and values (then commits them).
  // An observer, when given, sees the taps of DecoderObserver as the forward runs.
  at::Tensor forward_hidden(const DecoderInput& input, KvCache* cache,
                            DecoderObserver* observer = nullptr) const;

  // One decode step in shape-static form, the twin of forward_hidden for one token per sequence
  // (rows left-padded: keys [start, past] attend): attends over the cache's whole capacity with the
  // rest masked (the decode kernel: over [start, past] itself), writes this step's keys at `past`,
  // returns [b, 1, d]. No host reads of device values, no reallocation: the cache must already hold
  // room (cache.length() < cache.capacity(); KvCache::reserve). Neither commits the position
  // (cache.advance) nor moves in.past / in.position_ids: the caller does.
  at::Tensor forward_static(const StaticDecodeInput& input, KvCache& cache) const;

  // Bytes of the parameters one decode step reads: every decoder layer's, the final norm and the LM
  // head (not the embedding table, of which a step reads one row per sequence). The roofline floor of a
  // step is these plus the cache's bytes over the device's copy bandwidth. The checkpoint's parameters
  // only: not the zero biases fused projections give unbiased members (r_kv elements per set and layer
  // in converted Qwen2 layers), so a fused model's floor equals the unfused one's and stays a floor.
  int64_t step_weight_bytes() const;

  // [b, s, d] -> [b, s, V] in the compute dtype.
  at::Tensor lm_head(const at::Tensor& hidden) const;

 private:
  TextConfig config_;
  DecoderWeights weights_;
  LoadOptions options_;
  RopeTable rope_;
  AttentionBackend backend_;
  at::Tensor mla_rope_dims_;  // converted models: every layer's mla_rope_dims, [layers * h_kv * R], on the device
  std::vector<AbsorbedWeights> absorbed_;  // converted low-rank models: per layer
  at::Tensor visual_ids_;                  // converted md models: mla.visual_token_ids on the device (every
                                           // step's md projection choice, dynamic and static)

  // The cache kinds a model and attention mode can use (ArgumentError otherwise).
  void check_cache(const KvCache* cache) const;
  // Converted models: each layer's MlaRope for a step's cos/sin; else an empty MlaRopes.
  MlaRopes mla_ropes_for(const RopeCosSin& cs) const;
  // Plain (and svd none) layers: the step's heads before and after RoPE (converted models: mla_ropes' layer).
  QkvHeads qkv_heads(const DecoderLayerWeights& w, int64_t layer, const at::Tensor& h, const RopeCosSin& cs,
                     const MlaRopes& mla_ropes, const at::Tensor& visual) const;
  // o_proj and the residual, then the MLP block: x [b, s, d], a [b, h_q, s, d_h] -> [b, s, d].
  at::Tensor layer_tail(const DecoderLayerWeights& w, const at::Tensor& x, const at::Tensor& a) const;
  // Its two terms, not yet added: {y = x + o_proj(a), the MLP's output}; a decode step adds them in the next
  // norm's launch (add_rms_norm), the same bits as layer_tail's add and a norm after it.
  std::pair<at::Tensor, at::Tensor> layer_tail_parts(const DecoderLayerWeights& w, const at::Tensor& x,
                                                     const at::Tensor& a) const;
  MlaAttention mla_mode_ = MlaAttention::kAuto;
  bool decode_kernel_ = true;
};

// Validates token ids against the vocabulary: ArgumentError naming `what`, the offending id and its
// position.
void check_token_ids(const at::Tensor& ids, int64_t vocab_size, const std::string& what);

}  // namespace vlm2mla
