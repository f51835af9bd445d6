// One decode step's write into a quantized cache store (kvcache/row_store.h, quant.h) in one launch: the
// position leaving the full-precision ring is quantized into the integer store and the step's rows take its
// ring slot. What RowStore::write_at otherwise does in ~30 libtorch kernels (kvcache/quant.h's
// quantized_ring_write is the twin), computed the same way, so the stores come out bit for bit equal:
// per group min and max in float32, scale = (max - min) * (1 / (2^bits - 1)) (1 unless positive: libtorch's
// CUDA division by a host scalar multiplies by its reciprocal, so the twin on a GPU computes this), both
// rounded to float16, codes = clamp(rint((x - lo16) / scale16), 0, 2^bits - 1) with IEEE division, packed
// low bits first. Finite values (a NaN in a group makes libtorch's min/max NaN, this kernel's not).
// No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

// Strides in elements; the last dim of every array contiguous.
struct RingWriteParams {
  const void* rows = nullptr;  // [b, n]: the step's rows (one position per sequence), the ring's dtype
  int64_t rows_stride = 0;
  void* window = nullptr;      // [b, w, n] ring, slot = position % w
  int64_t window_stride[2] = {0, 0};
  uint8_t* data = nullptr;     // [b, cap, n * bits / 8] codes
  int64_t data_stride[2] = {0, 0};
  uint16_t* scale = nullptr;   // [b, cap, n / group] float16
  int64_t scale_stride[2] = {0, 0};
  uint16_t* lo = nullptr;      // [b, cap, n / group] float16
  int64_t lo_stride[2] = {0, 0};
  const int64_t* pos = nullptr;  // [1] on the device: the step's position (< cap)
  int64_t b = 0, n = 0, window_size = 0;
  int bits = 4, group = 32;
};

// Position pos - w (position 0 while pos < w, as the twin) quantized from ring slot pos % w, then the
// rows written into that slot. ArgumentError for sizes it does not take, Error when the launch fails.
void launch_ring_write(const RingWriteParams& p, ElementDtype dtype, cudaStream_t stream);

}  // namespace vlm2mla
