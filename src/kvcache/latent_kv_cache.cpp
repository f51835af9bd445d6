#include "kvcache/latent_kv_cache.h"

#include "core/env_switch.h"
#include "core/error.h"
#include "kernels/ops.h"
#include "kvcache/modality_segments.h"

namespace vlm2mla {

LatentKvCache::LatentKvCache(const std::vector<int64_t>& ranks, int64_t rope_width, bool with_modality,
                             int64_t batch, int64_t capacity, const CacheSpec& spec,
                             at::ScalarType compute_dtype, at::Device device)
    : KvCache(batch) {
  VLM2MLA_CHECK(!ranks.empty() && batch > 0 && rope_width > 0, ArgumentError,
                "LatentKvCache: dimensions must be positive");
  for (int64_t r : ranks) {
    latent_.push_back(std::make_unique<RowStore>(batch, r, capacity, spec, compute_dtype, device));
    rope_.push_back(std::make_unique<RowStore>(batch, rope_width, capacity, spec, compute_dtype, device));
  }
  if (with_modality) {
    modality_ =
        cache_zeros({batch, std::max<int64_t>(capacity, 1)}, at::TensorOptions().dtype(at::kByte).device(device));
    image_end_ = at::zeros({batch}, at::TensorOptions().dtype(at::kInt).device(device));
  }
}

void LatentKvCache::grow_modality(int64_t capacity) {
  at::Tensor bigger = cache_zeros({batch_, capacity}, modality_.options());
  bigger.narrow(1, 0, length_).copy_(modality_.narrow(1, 0, length_));
  modality_ = bigger;
}

void LatentKvCache::set_modality(const at::Tensor& image) {
  if (!modality_.defined()) return;
  const int64_t s = image.size(1), total = length_ + s;
  if (total > modality_.size(1)) {
    int64_t cap = modality_.size(1);
    while (cap < total) cap *= 2;
    grow_modality(cap);
  }
  modality_.narrow(1, length_, s).copy_(image.to(modality_.device()).to(at::kByte));
  // (the decoder passes a device mask only where the step holds an image token, else zeros on the host: a sync
  // at most once per prefill with images; a host mask is looked at here, cheaply)
  const bool host = image.device().is_cpu(), host_image = host && image.any().item<bool>();
  if (!host || host_image) raise_image_end(modality_.narrow(1, length_, s), past_positions(length_, s));
  const bool step_image = (!holds_image_ || s > 1) && (host ? host_image : image.any().item<bool>());
  holds_image_ = holds_image_ || step_image;
  if (holds_image_ && (s > 1 || step_image)) update_segments(total);
}

at::Tensor LatentKvCache::past_positions(int64_t first, int64_t s) const {
  return at::arange(first + 1, first + s + 1, image_end_.options());
}

void LatentKvCache::raise_image_end(const at::Tensor& image, const at::Tensor& past) {
  if (image.size(1) == 0) return;
  const at::Tensor ends = image.to(at::kInt) * past;  // [b, s]: one past each image position, 0 for text
  // (one position, a captured step's: no reduction launched)
  image_end_.copy_(at::maximum(image_end_, image.size(1) == 1 ? ends.view({batch_}) : ends.amax(1)));
}

void LatentKvCache::update_segments(int64_t total) {
  segments_ = vlm2mla::modality_segments(modality_.narrow(1, 0, total));
  if (segments_.defined()) segments_ = segments_.to(modality_.device());
}

void LatentKvCache::write(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope) {
  VLM2MLA_CHECK(layer >= 0 && layer < static_cast<int64_t>(latent_.size()), ArgumentError,
                "LatentKvCache: layer ", layer, " out of range");
  latent_[static_cast<size_t>(layer)]->append(latent, length_);
  rope_[static_cast<size_t>(layer)]->append(k_rope, length_);
}

std::pair<at::Tensor, at::Tensor> LatentKvCache::append(int64_t layer, const at::Tensor& latent,
                                                        const at::Tensor& k_rope) {
  write(layer, latent, k_rope);
  const int64_t total = length_ + latent.size(1);
  return {latent_[static_cast<size_t>(layer)]->read(total), rope_[static_cast<size_t>(layer)]->read(total)};
}

at::Tensor LatentKvCache::modality(int64_t total) const {
  if (!modality_.defined()) return {};
  return modality_.narrow(1, 0, total).to(at::kBool);
}

void LatentKvCache::reserve(int64_t capacity) {
  for (size_t l = 0; l < latent_.size(); ++l) latent_[l]->reserve(capacity, length_), rope_[l]->reserve(capacity, length_);
  // The modality store keeps the rows' capacity (the decode kernel reads both up to it).
  const int64_t cap = latent_.front()->capacity();
  if (modality_.defined() && modality_.size(1) < cap) grow_modality(cap);
}

void LatentKvCache::fill_synthetic(int64_t length, const at::Tensor& image) {
  VLM2MLA_CHECK(length_ == 0, ArgumentError, "fill_synthetic needs an empty cache");
  VLM2MLA_CHECK(!image.defined() || (image.dim() == 2 && image.size(0) == batch_ && image.size(1) == length &&
                                     image.scalar_type() == at::kBool),
                ArgumentError, "fill_synthetic: image must be bool [", batch_, ", ", length, "], got ",
                image.defined() ? image.sizes() : at::IntArrayRef{}, " ",
                image.defined() ? c10::toString(image.scalar_type()) : "undefined");
  reserve(length);
  for (size_t l = 0; l < latent_.size(); ++l) latent_[l]->fill_synthetic(length), rope_[l]->fill_synthetic(length);
  if (modality_.defined()) {
    modality_.zero_();
    image_end_.zero_();
    if (image.defined()) {
      modality_.narrow(1, 0, length).copy_(image.to(modality_.device()).to(at::kByte));
      raise_image_end(modality_.narrow(1, 0, length), past_positions(0, length));
    }
    holds_image_ = image.defined() && image.any().item<bool>();
    segments_ = at::Tensor();
    if (holds_image_) update_segments(length);
  }
  length_ = length;
}

void LatentKvCache::set_modality_at(const at::Tensor& image, const at::Tensor& pos) {
  if (!modality_.defined()) return;
  modality_.index_copy_(1, pos, image.to(at::kByte).view({batch_, 1}));
  raise_image_end(image.view({batch_, 1}), pos.to(at::kInt) + 1);
}

namespace {
EnvSwitch fused_latent_write_switch(kEnvFusedLatentWrite);
EnvSwitch rope_write_switch(kEnvRopeWrite);
}  // namespace

void set_fused_latent_write(bool on) { fused_latent_write_switch.set(on); }
bool fused_latent_write_enabled() { return fused_latent_write_switch.enabled(); }
void set_rope_write(bool on) { rope_write_switch.set(on); }
bool rope_write_enabled() { return rope_write_switch.enabled(); }

bool LatentKvCache::write_fused(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope,
                                const at::Tensor& pos, const at::Tensor& latent_image, const at::Tensor& image,
                                const WriteRope* rope, at::Tensor* q_rot) {
  if (!fused_latent_write_switch.enabled()) return false;
  RowStore& ls = *latent_[static_cast<size_t>(layer)];
  RowStore& rs = *rope_[static_cast<size_t>(layer)];
  at::Tensor q;
  if (ls.plain().defined() && rs.plain().defined()) {
    if (fused_latent_write_unusable(latent, latent_image, image, k_rope, pos, ls.plain(), rs.plain(), rope))
      return false;
    q = fused_latent_write(latent, latent_image, image, k_rope, pos, ls.plain(), rs.plain(), rope);
  } else if (fused_ring_write_enabled() && ls.bits() > 0 && rs.bits() > 0) {
    // quantized stores: both rings' writes and the pick in one launch, where the twin's fused ring writes would run
    const QuantizedStoreArrays lq{ls.window(), ls.quantized(), ls.bits(), ls.spec().group};
    const QuantizedStoreArrays rq{rs.window(), rs.quantized(), rs.bits(), rs.spec().group};
    if (fused_ring_write_pair_unusable(latent, latent_image, image, k_rope, pos, lq, rq, rope)) return false;
    q = fused_ring_write_pair(latent, latent_image, image, k_rope, pos, lq, rq, rope);
  } else {
    return false;
  }
  if (q_rot) *q_rot = q;
  return true;
}

at::Tensor LatentKvCache::write_at_rotating(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope_pre,
                                            const at::Tensor& pos, const at::Tensor& latent_image,
                                            const at::Tensor& image, const WriteRope& rope) {
  VLM2MLA_CHECK(layer >= 0 && layer < static_cast<int64_t>(latent_.size()), ArgumentError,
                "LatentKvCache: layer ", layer, " out of range");
  at::Tensor q_rot;
  if (rope_write_switch.enabled()) write_fused(layer, latent, k_rope_pre, pos, latent_image, image, &rope, &q_rot);
  return q_rot;
}

void LatentKvCache::write_at(int64_t layer, const at::Tensor& latent, const at::Tensor& k_rope, const at::Tensor& pos,
                             const at::Tensor& latent_image, const at::Tensor& image) {
  VLM2MLA_CHECK(layer >= 0 && layer < static_cast<int64_t>(latent_.size()), ArgumentError,
                "LatentKvCache: layer ", layer, " out of range");
  VLM2MLA_CHECK(latent_image.defined() == image.defined(), ArgumentError,
                "LatentKvCache::write_at: the image set's latent and the image mask go together");
  // one launch, the same bits
  if (write_fused(layer, latent, k_rope, pos, latent_image, image, nullptr, nullptr)) return;
  RowStore& ls = *latent_[static_cast<size_t>(layer)];
  RowStore& rs = *rope_[static_cast<size_t>(layer)];
  // the twin: each sequence's latent by its step token's modality, then a write a store
  ls.write_at(latent_image.defined() ? by_modality(latent, latent_image, image) : latent, pos);
  rs.write_at(k_rope, pos);
}

at::Tensor by_modality(const at::Tensor& text, const at::Tensor& image_result, const at::Tensor& image) {
  return at::where(image.to(text.device()).unsqueeze(-1), image_result, text);
}

std::pair<at::Tensor, at::Tensor> LatentKvCache::read_upto(int64_t layer, const at::Tensor& last) const {
  return {latent_[static_cast<size_t>(layer)]->read_upto(last), rope_[static_cast<size_t>(layer)]->read_upto(last)};
}

at::Tensor LatentKvCache::modality_all() const {
  return modality_.defined() ? modality_.to(at::kBool) : at::Tensor();
}

int64_t LatentKvCache::bytes_allocated() const {
  int64_t total = modality_.defined() ? modality_.nbytes() : 0;
  for (size_t l = 0; l < latent_.size(); ++l) total += latent_[l]->bytes_allocated() + rope_[l]->bytes_allocated();
  return total;
}

int64_t LatentKvCache::bytes_per_token() const {
  int64_t total = modality_.defined() ? 1 : 0;
  for (size_t l = 0; l < latent_.size(); ++l) total += latent_[l]->bytes_per_position() + rope_[l]->bytes_per_position();
  return total;
}

}  // namespace vlm2mla
