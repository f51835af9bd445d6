// The MLA cache of a converted model (METHOD.md section 5): per layer and position, the latent
// c (r_kv values, r_kv may differ per layer) and the RoPE key (h_kv * R values, already rotated),
// token-major; and, per position, its modality (text 0 / image 1) for models with per-modality
// projections. Preallocated by capacity, grows by doubling; stored as --kv-cache says.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <utility>
#include <vector>

#include "kvcache/kv_cache.h"
#include "kvcache/row_store.h"

namespace vlm2mla {

struct WriteRope;  // kernels/ops.h

class LatentKvCache : public KvCache {
 public:
  // kv_lora_rank: r_kv per layer; rope_width = h_kv * R; with_modality: keep each position's modality.
  LatentKvCache(const std::vector<int64_t>& kv_lora_rank, int64_t rope_width, bool with_modality,
                int64_t batch, int64_t capacity, const CacheSpec& spec, at::ScalarType compute_dtype,
                at::Device device);

  CacheKind kind() const override { return CacheKind::kLatent; }

  // Records the modality [b, s] (bool, image = true) of positions [length, length + s); once per step,
  // before the layers append.
  void set_modality(const at::Tensor& image);
  // Writes latent [b, s, r_kv] and rotated RoPE keys [b, s, h_kv*R] of `layer`; returns all cached
  // latents [b, length + s, r_kv] and RoPE keys [b, length + s, h_kv*R] (dequantized).
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope);
  // The same without reading back (the decode kernel reads the stores itself).
  void write(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope);
  // Modality of positions [0, length + s): [b, length + s] bool; undefined without modality.
  at::Tensor modality(int64_t total) const;

  int64_t capacity() const override { return latent_.front()->capacity(); }
  void reserve(int64_t capacity) override;
  void fill_synthetic(int64_t length, const at::Tensor& image) override;
  // Shape-static twins for one-token decode steps (kvcache/row_store.h), at pos ([1] int64 on the
  // device): the step's modality [b, 1] (image = true), a layer's rows [b, 1, *]; reads [b, capacity, *]
  // valid up to `last`, and the modality [b, capacity] bool (undefined without modality).
  void set_modality_at(const at::Tensor& image, const at::Tensor& pos);
  // write_at: with latent_image and image ([b, 1] bool), each sequence's row of the latent is latent_image's where
  // its step token is an image, else latent's (the text set's). Over plain stores (bf16, fp16, float32) on CUDA, one
  // launch writes both stores (kernels/ops.h's fused_latent_write), and over quantized ones too where the fused
  // cache write is on (fused_ring_write_pair); VLM2MLA_FUSED_LATENT_WRITE=0 or set_fused_latent_write(false) keeps
  // at::where and each store's own write (RowStore::write_at), its twin: the same bits.
  void write_at(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope, const at::Tensor& pos,
                const at::Tensor& latent_image = {}, const at::Tensor& image = {});
  // write_at with the step's RoPE in the same launch (kernels/ops.h's WriteRope; rope_write_enabled()): k_rope_pre
  // [b, 1, h_kv R] unrotated goes in rotated by rope's cos and sin, and the queries' RoPE dims rope.q come back rotated,
  // the bits of nn/rope.h's apply_rope_pair and write_at. Where neither fused write takes it (the switch off, a
  // CPU cache, shapes they refuse, the fused latent write off), nothing is written and the result is undefined: the
  // caller rotates and calls write_at, the twin.
  at::Tensor write_at_rotating(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope_pre,
                               const at::Tensor& pos, const at::Tensor& latent_image, const at::Tensor& image,
                               const WriteRope& rope);
  std::pair<at::Tensor, at::Tensor> read_upto(int64_t layer, const at::Tensor& last) const;
  at::Tensor modality_all() const;

  const RowStore& latent_store(int64_t layer) const { return *latent_[static_cast<size_t>(layer)]; }
  const RowStore& rope_store(int64_t layer) const { return *rope_[static_cast<size_t>(layer)]; }
  // uint8 [b, capacity]: grows by the rows' rule (doubling from the same start), so its capacity is
  // always theirs, as the decode kernel needs.
  const at::Tensor& modality_storage() const { return modality_; }
  // Whether set_modality or fill_synthetic has recorded an image position in any sequence (the decode kernel's
  // plan then takes shorter splits: MlaDecodeInputs::holds_image). set_modality_at, which a captured step replays,
  // does not look (no sync there): its positions are the generated text. A hint for speed, never for results.
  bool holds_image() const { return holds_image_; }
  // Each sequence's segments of keys of one kind (modality_segments), int32 [b, K + 1] on the cache's device, for
  // the decode kernel's splits (MlaDecodeInputs::split_bounds): worked out again where set_modality records a
  // prefill chunk (s > 1) or an image, and by fill_synthetic (a sync and a copy each: prefill only); undefined
  // while the cache holds no image or too many to follow.
  const at::Tensor& modality_segments() const { return segments_; }
  // Per sequence, one past the last position recorded as an image (0: none), int32 [b] on the cache's device
  // (undefined without modality): every position from it on is text, so the decode kernel's modality CTAs read no
  // modality bytes above it (MlaDecodeInputs::image_end). Raised by set_modality where a chunk may hold an image
  // (on the device), by set_modality_at (on the device, no sync: a captured step replays it, and a generated token
  // can be an image token), set by fill_synthetic; it never falls, so it bounds the image positions.
  const at::Tensor& image_end() const { return image_end_; }

  int64_t bytes_allocated() const override;
  int64_t bytes_per_token() const override;

 private:
  void grow_modality(int64_t capacity);  // keeps the committed positions
  // The step's rows in one fused launch where one takes them (plain stores: fused_latent_write; quantized ones:
  // fused_ring_write_pair), rope (where given) made in it: whether written, and then the rotated queries in q_rot.
  bool write_fused(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope, const at::Tensor& pos,
                   const at::Tensor& latent_image, const at::Tensor& image, const WriteRope* rope, at::Tensor* q_rot);

  std::vector<std::unique_ptr<RowStore>> latent_, rope_;
  at::Tensor modality_;  // uint8 [b, capacity] or undefined
  bool holds_image_ = false;
  at::Tensor segments_;
  at::Tensor image_end_;  // int32 [b] where modality_ is defined
  void update_segments(int64_t total);
  // image [b, s] (any type) at positions whose successors are past ([s], or [1] on the device), int32
  void raise_image_end(const at::Tensor& image, const at::Tensor& past);
  at::Tensor past_positions(int64_t first, int64_t s) const;  // first + 1 .. first + s, int32 on the cache's device
};

void set_fused_latent_write(bool on);
bool fused_latent_write_enabled();
// The step's RoPE in the latent write's launch (LatentKvCache::write_at_rotating; VLM2MLA_ROPE_WRITE=0 off).
void set_rope_write(bool on);
bool rope_write_enabled();

// Two-set (md) models' choice per token: text's rows, image_result's where the token is an image (image [b, s] bool,
// on any device; text and image_result [b, s, *]). The models pick latents with it, and LatentKvCache::write_at's
// twin too, so the fused write's "the same bits" is against this one computation.
at::Tensor by_modality(const at::Tensor& text, const at::Tensor& image_result, const at::Tensor& image);

}  // namespace vlm2mla
