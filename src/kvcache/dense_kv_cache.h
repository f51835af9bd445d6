// The plain K/V cache of an unconverted model (and the expanded twin of a converted one): per layer,
// keys and values for every cached position. Float types are stored as [b, h_kv, capacity, d] and
// read as views; integer types (the quantized baseline) as token-major rows with a full-precision
// window (kvcache/row_store.h), read dequantized.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <utility>
#include <vector>

#include "kvcache/kv_cache.h"
#include "kvcache/row_store.h"

namespace vlm2mla {

class DenseKvCache : public KvCache {
 public:
  // Preallocates [batch, num_kv_heads, capacity, head_dim] keys and values per layer in `dtype`, zeroed
  // (shape-static steps attend over the whole capacity with the unwritten part masked: it must be finite).
  DenseKvCache(int64_t num_layers, int64_t batch, int64_t num_kv_heads, int64_t head_dim,
               int64_t capacity, at::ScalarType dtype, at::Device device);
  // Stored as `spec` says; reads come back in `compute_dtype`.
  DenseKvCache(int64_t num_layers, int64_t batch, int64_t num_kv_heads, int64_t head_dim,
               int64_t capacity, const CacheSpec& spec, at::ScalarType compute_dtype, at::Device device);

  CacheKind kind() const override { return CacheKind::kDense; }
  int64_t capacity() const override { return capacity_; }
  void reserve(int64_t capacity) override;

  // Writes k, v [b, h_kv, s, d] of `layer` at positions [length, length + s) and returns keys and
  // values [b, h_kv, length + s, d]. Grows the buffers (doubling) when they are full.
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);

  // Shape-static twins for one-token decode steps (kvcache/row_store.h): k, v [b, h_kv, 1, d] written
  // at pos ([1] int64 on the device); keys and values [b, h_kv, capacity, d], valid up to `last`.
  void write_at(int64_t layer, const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos);
  std::pair<at::Tensor, at::Tensor> read_upto(int64_t layer, const at::Tensor& last) const;

  void fill_synthetic(int64_t length, const at::Tensor& image) override;
  void advance(int64_t s) override;
  int64_t bytes_allocated() const override;
  int64_t bytes_per_token() const override;

 private:
  void grow(int64_t needed);
  void check_layer(int64_t layer) const;

  int64_t num_kv_heads_, head_dim_, capacity_;
  std::vector<at::Tensor> keys_, values_;  // [b, h_kv, capacity, d] each (float types)
  std::vector<std::unique_ptr<RowStore>> qkeys_, qvalues_;  // integer types: rows [b, cap, h_kv*d]
};

// DenseKvCache::write_at's keys and values in one launch on CUDA (kernels/ops.h's fused_kv_write; the same bits as its
// two index_copy_, its twin): on unless VLM2MLA_FUSED_KV_WRITE=0 (read once) or set_fused_kv_write(false).
void set_fused_kv_write(bool on);
bool fused_kv_write_enabled();

}  // namespace vlm2mla
