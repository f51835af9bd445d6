// One cached tensor of a layer, token-major: rows [b, positions, n]. Stored as a float dtype, or
// quantized (kvcache/quant.h) with the most recent `window` positions in a full-precision ring
// (slot = position % window). Grows by doubling. Reading returns the rows dequantized.
#pragma once

#include <ATen/ATen.h>

#include "kvcache/kv_cache.h"
#include "kvcache/quant.h"

namespace vlm2mla {

class RowStore {
 public:
  // compute_dtype: what reads return (and the window's dtype).
  RowStore(int64_t batch, int64_t n, int64_t capacity, const CacheSpec& spec, at::ScalarType compute_dtype,
           at::Device device);

  // Writes rows [b, s, n] at positions [length, length + s); `length` is what the cache committed.
  void append(const at::Tensor& rows, int64_t length);
  // Rows [b, length, n] in the compute dtype (dequantized; a view when stored unquantized).
  at::Tensor read(int64_t length) const;

  // Shape-static twins of append and read for one-token decode steps whose position lives on the
  // device (steps replayed as CUDA graphs: no host-side length, no reallocation).
  // Grows now so that `capacity` positions fit; `length` positions are kept.
  void reserve(int64_t capacity, int64_t length);
  // append(rows, pos) for rows [b, 1, n] at pos ([1] int64 on the device, pos < capacity). A quantized
  // store moves position pos - window out of the ring first, as append does; while pos < window it
  // quantizes ring slot pos into position 0 instead, which is not read before position 0 itself
  // leaves the ring (at pos == window) and is written there.
  void write_at(const at::Tensor& rows, const at::Tensor& pos);
  // Rows [b, capacity, n] in the compute dtype: positions <= last ([1] int64 on the device) equal
  // read(last + 1); later positions hold whatever the storage holds (callers mask them).
  at::Tensor read_upto(const at::Tensor& last) const;
  // Random rows at positions [0, length) (KvCache::fill_synthetic).
  void fill_synthetic(int64_t length);

  int64_t n() const { return n_; }
  int64_t capacity() const { return capacity_; }
  // Positions below quantized_length(length) live in the quantized store, the rest in the window.
  int64_t quantized_length(int64_t length) const;
  int64_t bytes_allocated() const;
  int64_t bytes_per_position() const;  // one position's bytes at the storage type

  // Raw storage, for kernels: plain [b, cap, n]; quantized codes/scale/lo and the window ring.
  const at::Tensor& plain() const { return plain_; }
  const QuantizedRows& quantized() const { return q_; }
  const at::Tensor& window() const { return window_; }
  const CacheSpec& spec() const { return spec_; }
  int64_t bits() const { return bits_; }  // the codes' bits, 0 for float stores

 private:
  void grow(int64_t needed, int64_t length);

  int64_t batch_, n_, capacity_;
  CacheSpec spec_;
  int64_t bits_;
  at::ScalarType compute_dtype_;
  at::Tensor plain_;    // [b, cap, n] (float types)
  QuantizedRows q_;     // [b, cap, n*bits/8], [b, cap, n/group] x 2 (integer types)
  at::Tensor window_;   // [b, window, n] compute dtype ring (integer types)
};

}  // namespace vlm2mla
