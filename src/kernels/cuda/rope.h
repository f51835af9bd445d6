// Fused rotary embedding on CUDA: out = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1) with
// x1, x2 the halves of the last dim, in one launch instead of libtorch's five (mul, neg, cat, mul, add).
// Bit-identical to those steps: each product rounded to the dtype, their sum computed in float32 and
// rounded to the dtype, no FMA contraction (nn/rope.h's apply_rope is the twin). Any shape up to
// kRopeMaxDims dims, any strides, cos/sin broadcast through zero strides. No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

constexpr int kRopeMaxDims = 8;

// Element strides; cos and sin are indexed with x's shape (stride 0 along the dims they broadcast over).
struct RopeParams {
  const void* x;    // [..., d]
  const void* cos;  // broadcast to [..., d]
  const void* sin;  // broadcast to [..., d]
  void* out;        // [..., d]; overlaps none of x, cos, sin, nor itself
  ElementDtype dtype;  // of all four
  int dims;         // 1..kRopeMaxDims, the last one d
  int64_t size[kRopeMaxDims];        // x's shape; size[dims - 1] = d, even
  int64_t x_stride[kRopeMaxDims];    // x's strides
  int64_t cos_stride[kRopeMaxDims];  // cos expanded to x's shape
  int64_t sin_stride[kRopeMaxDims];  // sin expanded to x's shape
  int64_t out_stride[kRopeMaxDims];  // out's strides
};

// A row of heads x dims elements a sequence, rotated as launch_rope rotates each head's dims (pairs (k, k + dims/2)),
// element by element where a store takes it (cache_write.h's latent and ring writes): x [b, heads * dims] through
// x_stride, cos and sin [b, heads, dims] through their strides (0 where they broadcast).
struct RowRope {
  const void* x = nullptr;  // null: no rotation
  int64_t x_stride = 0;
  const void* cos = nullptr;
  const void* sin = nullptr;
  int64_t cos_stride[3] = {0, 0, 0};
  int64_t sin_stride[3] = {0, 0, 0};
  int64_t dims = 0;  // even
};

// Throws ArgumentError for invalid sizes (dims, odd d), Error when the launch fails. Enqueues one kernel
// (none for an empty x) on `stream`; no synchronisation, so it may be captured in a CUDA graph.
void launch_rope(const RopeParams& p, cudaStream_t stream);

// Two tensors' rotations in one launch (a decode step's queries and keys), each as launch_rope computes it; both
// of one dtype. ArgumentError as launch_rope's, naming which tensor.
void launch_rope_pair(const RopeParams& a, const RopeParams& b, cudaStream_t stream);

}  // namespace vlm2mla
