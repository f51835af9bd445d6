// The absorbed projections' per-kv-head product of a decode step (models/mla_attention.cpp's kv_head_product) in
// one launch: y[b, k, i, :] = x[b, k, i, :] w[k] for every sequence b, kv head k and row i, read in place (x's
// strides) and written contiguous, where libtorch's form is a copy of x with the heads outermost, a bmm, and a
// copy back. Float32 accumulation in order over the inner dimension, rounded once to the dtype (cuBLAS sums in
// its own order: the results agree to the rounding of the dtype, not bit for bit). For few rows a head (decode
// steps of small batches): each CTA stages a 64-column slice of w[k] whole, so many rows re-read it.
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

// The dynamic shared memory a launch needs for inner size d of elem_bytes-byte elements (a w slice of d x 64
// and 16 rows of x), which head_product_fits compares with the 48 KB every CTA may take.
int64_t head_product_smem_bytes(int64_t d, int elem_bytes);
bool head_product_fits(int64_t d, int elem_bytes);

// ArgumentError for sizes it does not take (16-byte pieces: d and n multiples of 16 / elem_bytes, x's strides
// too, 16-byte aligned arrays; head_product_fits), Error when the launch fails.
void launch_head_product(const HeadProductParams& p, ElementDtype dtype, cudaStream_t stream);

}  // namespace vlm2mla
