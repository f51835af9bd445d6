#include "kvcache/dense_kv_cache.h"

#include <algorithm>

#include "core/env_switch.h"
#include "core/error.h"
#include "kernels/ops.h"

namespace vlm2mla {

DenseKvCache::DenseKvCache(int64_t num_layers, int64_t batch, int64_t num_kv_heads, int64_t head_dim,
                           int64_t capacity, at::ScalarType dtype, at::Device device)
    : KvCache(batch), num_kv_heads_(num_kv_heads), head_dim_(head_dim),
      capacity_(std::max<int64_t>(capacity, 1)) {
  VLM2MLA_CHECK(num_layers > 0 && batch > 0 && num_kv_heads > 0 && head_dim > 0, ArgumentError,
                "DenseKvCache: dimensions must be positive");
  auto opts = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < num_layers; ++l) {
    keys_.push_back(cache_zeros({batch, num_kv_heads, capacity_, head_dim}, opts));
    values_.push_back(cache_zeros({batch, num_kv_heads, capacity_, head_dim}, opts));
  }
}

DenseKvCache::DenseKvCache(int64_t num_layers, int64_t batch, int64_t num_kv_heads, int64_t head_dim,
                           int64_t capacity, const CacheSpec& spec, at::ScalarType compute_dtype,
                           at::Device device)
    : DenseKvCache(num_layers, batch, num_kv_heads, head_dim, spec.quantized() ? 1 : capacity,
                   cache_float_dtype(spec.type), device) {
  if (!spec.quantized()) return;
  keys_.clear();
  values_.clear();
  capacity_ = std::max<int64_t>(capacity, 1);
  for (int64_t l = 0; l < num_layers; ++l) {
    qkeys_.push_back(std::make_unique<RowStore>(batch, num_kv_heads * head_dim, capacity_, spec,
                                                compute_dtype, device));
    qvalues_.push_back(std::make_unique<RowStore>(batch, num_kv_heads * head_dim, capacity_, spec,
                                                  compute_dtype, device));
  }
}

void DenseKvCache::grow(int64_t needed) {
  int64_t cap = capacity_;
  while (cap < needed) cap *= 2;
  for (size_t l = 0; l < keys_.size(); ++l) {
    for (auto* buf : {&keys_[l], &values_[l]}) {
      at::Tensor bigger = cache_zeros({batch_, num_kv_heads_, cap, head_dim_}, buf->options());
      bigger.narrow(2, 0, length_).copy_(buf->narrow(2, 0, length_));
      *buf = bigger;
    }
  }
  capacity_ = cap;
}

void DenseKvCache::check_layer(int64_t layer) const {
  const int64_t layers = static_cast<int64_t>(std::max(keys_.size(), qkeys_.size()));
  VLM2MLA_CHECK(layer >= 0 && layer < layers, ArgumentError, "DenseKvCache: layer ", layer, " out of range");
}

void DenseKvCache::reserve(int64_t capacity) {
  if (qkeys_.empty()) {
    if (capacity > capacity_) grow(capacity);
    return;
  }
  for (size_t l = 0; l < qkeys_.size(); ++l) qkeys_[l]->reserve(capacity, length_), qvalues_[l]->reserve(capacity, length_);
  capacity_ = qkeys_[0]->capacity();
}

namespace {
EnvSwitch fused_kv_write_switch(kEnvFusedKvWrite);
}  // namespace

void set_fused_kv_write(bool on) { fused_kv_write_switch.set(on); }
bool fused_kv_write_enabled() { return fused_kv_write_switch.enabled(); }

void DenseKvCache::write_at(int64_t layer, const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos) {
  check_layer(layer);
  VLM2MLA_CHECK(k.dim() == 4 && k.size(0) == batch_ && k.size(1) == num_kv_heads_ && k.size(2) == 1 &&
                    k.size(3) == head_dim_,
                ArgumentError, "DenseKvCache: one step's keys must be [", batch_, ", ", num_kv_heads_, ", 1, ",
                head_dim_, "], got ", k.sizes());
  const size_t l = static_cast<size_t>(layer);
  if (!qkeys_.empty()) {
    const int64_t hd = num_kv_heads_ * head_dim_;
    qkeys_[l]->write_at(k.transpose(1, 2).reshape({batch_, 1, hd}), pos);
    qvalues_[l]->write_at(v.transpose(1, 2).reshape({batch_, 1, hd}), pos);
    return;
  }
  if (fused_kv_write_switch.enabled() && !fused_kv_write_unusable(k, v, pos, keys_[l], values_[l])) {
    fused_kv_write(k, v, pos, keys_[l], values_[l]);  // one launch, the same bits
    return;
  }
  keys_[l].index_copy_(2, pos, k.to(keys_[l].scalar_type()));
  values_[l].index_copy_(2, pos, v.to(values_[l].scalar_type()));
}

std::pair<at::Tensor, at::Tensor> DenseKvCache::read_upto(int64_t layer, const at::Tensor& last) const {
  check_layer(layer);
  const size_t l = static_cast<size_t>(layer);
  if (qkeys_.empty()) return {keys_[l], values_[l]};
  auto heads = [&](const at::Tensor& rows) {  // [b, cap, h_kv*d] -> [b, h_kv, cap, d]
    return rows.view({batch_, rows.size(1), num_kv_heads_, head_dim_}).transpose(1, 2);
  };
  return {heads(qkeys_[l]->read_upto(last)), heads(qvalues_[l]->read_upto(last))};
}

std::pair<at::Tensor, at::Tensor> DenseKvCache::append(int64_t layer, const at::Tensor& k,
                                                       const at::Tensor& v) {
  check_layer(layer);
  VLM2MLA_CHECK(k.size(0) == batch_ && k.size(1) == num_kv_heads_ && k.size(3) == head_dim_,
                ArgumentError, "DenseKvCache: keys of shape ", k.sizes(), " do not fit a cache of [",
                batch_, ", ", num_kv_heads_, ", *, ", head_dim_, "]");
  const int64_t s = k.size(2);
  if (!qkeys_.empty()) {  // quantized rows: [b, s, h_kv*d] in, [b, h_kv, length+s, d] out
    const int64_t b = k.size(0), hd = num_kv_heads_ * head_dim_;
    RowStore& ks = *qkeys_[static_cast<size_t>(layer)];
    RowStore& vs = *qvalues_[static_cast<size_t>(layer)];
    ks.append(k.transpose(1, 2).reshape({b, s, hd}), length_);
    vs.append(v.transpose(1, 2).reshape({b, s, hd}), length_);
    capacity_ = ks.capacity();
    auto heads = [&](const at::Tensor& rows) {
      return rows.view({b, length_ + s, num_kv_heads_, head_dim_}).transpose(1, 2).contiguous();
    };
    return {heads(ks.read(length_ + s)), heads(vs.read(length_ + s))};
  }
  if (length_ + s > capacity_) grow(length_ + s);
  keys_[layer].narrow(2, length_, s).copy_(k);
  values_[layer].narrow(2, length_, s).copy_(v);
  return {keys_[layer].narrow(2, 0, length_ + s), values_[layer].narrow(2, 0, length_ + s)};
}

void DenseKvCache::fill_synthetic(int64_t length, const at::Tensor& /*image: plain K/V keep no modality*/) {
  VLM2MLA_CHECK(length_ == 0, ArgumentError, "fill_synthetic needs an empty cache");
  reserve(length);
  for (auto& s : qkeys_) s->fill_synthetic(length);
  for (auto& s : qvalues_) s->fill_synthetic(length);
  for (auto& t : keys_) t.narrow(2, 0, length).normal_();
  for (auto& t : values_) t.narrow(2, 0, length).normal_();
  length_ = length;
}

void DenseKvCache::advance(int64_t s) {
  VLM2MLA_CHECK(length_ + s <= capacity_, ArgumentError, "DenseKvCache: advance past capacity");
  length_ += s;
}

int64_t DenseKvCache::bytes_allocated() const {
  int64_t total = 0;
  for (size_t l = 0; l < qkeys_.size(); ++l) total += qkeys_[l]->bytes_allocated() + qvalues_[l]->bytes_allocated();
  for (size_t l = 0; l < keys_.size(); ++l) total += keys_[l].nbytes() + values_[l].nbytes();
  return total;
}

int64_t DenseKvCache::bytes_per_token() const {
  if (!qkeys_.empty()) return static_cast<int64_t>(qkeys_.size()) * 2 * qkeys_[0]->bytes_per_position();
  if (keys_.empty()) return 0;
  return static_cast<int64_t>(keys_.size()) * 2 * num_kv_heads_ * head_dim_ *
         static_cast<int64_t>(keys_[0].element_size());
}

}  // namespace vlm2mla
