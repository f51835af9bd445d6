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
#include "kernels/cuda/rope.h"

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

// A latent cache's two quantized stores (the latent's, the RoPE key's) written in one launch, each as
// launch_ring_write writes it, store 0's row of sequence b from alt where image[b] != 0 (the step token is an
// image: the image set's latent) instead of store[0].rows. Both rings of one dtype, one batch, one position.
struct RingWritePairParams {
  RingWriteParams store[2];
  const void* alt = nullptr;  // [b, n_0]: the image set's latent rows, or null
  int64_t alt_stride = 0;
  const uint8_t* image = nullptr;  // [b] bytes (bool), with alt
  int64_t image_stride = 0;
  // The step's RoPE in the same launch (q_pairs > 0): store 1's rows are rope_k's rotated (store[1].rows its x), and
  // q_pairs pairs of rope_q rotated into its out (rope.h's launch_rope, the same bits), the grid (b, 3).
  RowRope rope_k;
  RopeParams rope_q{};
  int64_t q_pairs = 0;
};
void launch_ring_write_pair(const RingWritePairParams& pp, ElementDtype dtype, cudaStream_t stream);

// A decode step's rows into a latent cache's plain stores (bf16, fp16 or float32) in one launch: store 0 takes each
// sequence's latent row, or its image set's row (alt) where the sequence's step token is an image (image[b] != 0),
// store 1 the RoPE key's row, both at position *pos; or (heads > 1, no alt) a dense cache's keys and values, a row
// per kv head. Elements in 16-byte pieces (rows whole pieces, strides and
// addresses on 16-byte bounds: the launcher checks). Strides in elements.
struct LatentWriteParams {
  const void* src[2] = {nullptr, nullptr};  // [b, n_q]: the latent (the text set's where alt is given), the RoPE key
  int64_t src_stride[2] = {0, 0};
  const void* alt = nullptr;  // [b, n_0]: the image set's latent, or null
  int64_t alt_stride = 0;
  const uint8_t* image = nullptr;  // [b] bytes (bool), with alt
  int64_t image_stride = 0;
  void* dst[2] = {nullptr, nullptr};  // [b, cap, n_q]
  int64_t dst_stride[2][2] = {{0, 0}, {0, 0}};
  int64_t n[2] = {0, 0};
  const int64_t* pos = nullptr;  // [1] on the device (< cap)
  int64_t b = 0;
  // Rows a sequence (a dense cache's kv heads: src [b, heads, n_q], dst [b, heads, cap, n_q]): CTA b * heads + h
  // copies head h's row; 1 for a latent cache.
  int64_t heads = 1;
  int64_t src_head_stride[2] = {0, 0};
  int64_t dst_head_stride[2] = {0, 0};
  // The step's RoPE in the same launch (q_pairs > 0; a latent cache, heads 1): store 1's row is rope_k's rotated
  // (src[1] unread), and q_pairs pairs of rope_q rotated into its out (rope.h's launch_rope, the same bits), the grid
  // (b, 3); rope_q.dtype is the stores'.
  RowRope rope_k;
  RopeParams rope_q{};
  int64_t q_pairs = 0;
};

// ArgumentError for what it does not take, Error when the launch fails.
void launch_latent_write(const LatentWriteParams& p, int elem_bytes, cudaStream_t stream);

}  // namespace vlm2mla
