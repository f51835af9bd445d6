// The absorbed projections' per-kv-head product of a decode step (models/mla_attention.cpp's kv_head_product) in
// one launch: y[b, k, i, :] = x[b, k, i, :] w[k] for every sequence b, kv head k and row i, read in place (x's
// strides) and written contiguous, where libtorch's form is a copy of x with the heads outermost, a bmm, and a
// copy back. Tensor cores (bf16 or fp16 in, float32 sums, rounded once to the dtype; cuBLAS sums in its own
// order: the results agree to the rounding of the dtype, not bit for bit). For few rows a head (decode steps of
// small batches): each CTA takes 16 rows and 64 columns over the whole inner dimension, so many rows re-read w.
// No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

struct HeadProductParams {
  const void* x = nullptr;  // [b, h, m, d], element strides below, the last dim contiguous
  int64_t x_stride[3] = {0, 0, 0};
  const void* w = nullptr;  // [h, d, n] contiguous
  void* y = nullptr;        // [b, h, m, n] contiguous
  int64_t b = 0, h = 0, m = 0, d = 0, n = 0;
};

// ArgumentError for what it does not take (float32; 16-byte pieces: d, n and x's strides multiples of 8
// elements; 16-byte aligned arrays), Error when the launch fails.
void launch_head_product(const HeadProductParams& p, ElementDtype dtype, cudaStream_t stream);

}  // namespace vlm2mla
