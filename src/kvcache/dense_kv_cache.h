// The plain K/V cache of an unconverted model: per layer, keys and values for every cached position.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace vlm2mla {

class DenseKvCache {
 public:
  // Preallocates [batch, num_kv_heads, capacity, head_dim] keys and values per layer.
  DenseKvCache(int64_t num_layers, int64_t batch, int64_t num_kv_heads, int64_t head_dim,
               int64_t capacity, at::ScalarType dtype, at::Device device);

  int64_t length() const { return length_; }      // positions already committed
  int64_t capacity() const { return capacity_; }
  int64_t batch() const { return batch_; }

  // Writes k, v [b, h_kv, s, d] of `layer` at positions [length, length + s) and returns views of
  // keys and values [b, h_kv, length + s, d]. Grows the buffers (doubling) when they are full.
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);

  // Commits s positions once every layer has appended them.
  void advance(int64_t s);

  // Bytes of the cache tensors as allocated (capacity, not length).
  int64_t bytes_allocated() const;
  // Bytes one cached position costs over all layers.
  int64_t bytes_per_token() const;

 private:
  void grow(int64_t needed);

  int64_t batch_, num_kv_heads_, head_dim_, capacity_, length_ = 0;
  std::vector<at::Tensor> keys_, values_;  // [b, h_kv, capacity, d] each
};

}  // namespace vlm2mla
