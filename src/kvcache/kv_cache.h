// What every KV cache shares: the cache-type choice (--kv-cache), positions committed, byte
// accounting. Two kinds (closed list): the dense K/V cache of unconverted models (and the expanded
// twin of converted ones) and the latent cache of converted MLA models.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace vlm2mla {

enum class CacheKind { kDense, kLatent };

// --kv-cache: how cached rows are stored.
enum class CacheType { kBf16, kFp16, kFp32, kInt8, kInt4, kInt2 };
const char* cache_type_name(CacheType type);
CacheType cache_type_from_name(const std::string& name, const std::string& what);  // ArgumentError
int64_t cache_type_bits(CacheType type);  // 8, 4, 2 for the integer types, 0 for the float types
at::ScalarType cache_float_dtype(CacheType type);  // the float types; the window dtype otherwise

// at::zeros for the caches' storage: an allocator's refusal (CUDA out of memory, or the CPU allocator's) becomes an
// ArgumentError that names the tensor, its bytes, the device and the allocator's own message, and says what takes
// less memory, where libtorch's error reached the user as an internal one.
at::Tensor cache_zeros(at::IntArrayRef shape, const at::TensorOptions& options);

struct CacheSpec {
  CacheType type = CacheType::kBf16;
  // Integer types: values per quantization group (per token, consecutive channels) and the most
  // recent positions kept in full precision (the compute dtype), the last prompt tokens included.
  int64_t group = 64;
  int64_t window = 128;
  bool quantized() const { return cache_type_bits(type) > 0; }
};

class KvCache {
 public:
  virtual ~KvCache() = default;
  virtual CacheKind kind() const = 0;
  int64_t length() const { return length_; }  // positions committed
  int64_t batch() const { return batch_; }
  // Commits s positions once every layer has appended them.
  virtual void advance(int64_t s) { length_ += s; }
  // Positions the storage holds before it must grow.
  virtual int64_t capacity() const = 0;
  // Grows the storage now so that `capacity` positions fit: shape-static decode steps (and the CUDA
  // graphs that replay them) write into storage that must not move.
  virtual void reserve(int64_t capacity) = 0;
  // Benchmarks only: positions [0, length) of an empty cache hold random rows (standard normal; random
  // codes with unit scales for quantized stores), committed, as if a prompt had run. Decode speed does not
  // depend on the cached values; with two projection sets it depends on which positions are image tokens:
  // `image` (bool [batch, length], e.g. TextDecoder::visual_mask of the prompt; undefined: all text) sets the
  // modality of a latent cache that keeps one, and is ignored by caches without one.
  virtual void fill_synthetic(int64_t length, const at::Tensor& image) = 0;
  // Bytes of the cache tensors as allocated (capacity, not length).
  virtual int64_t bytes_allocated() const = 0;
  // Bytes one cached position costs over all layers (at the storage type; the full-precision window
  // of quantized caches is a fixed cost outside this).
  virtual int64_t bytes_per_token() const = 0;

 protected:
  explicit KvCache(int64_t batch) : batch_(batch) {}
  int64_t batch_;
  int64_t length_ = 0;
};

}  // namespace vlm2mla
