// Skinny GEMMs for decode steps (a few tokens against a large weight): y = x W^T (+ bias) on tensor cores
// with the K split across the CTA's warps and reduced in shared memory, so one launch does what cuBLAS
// does with a split-K GEMM and a reduction kernel. Optional fusions, each computed as the libtorch steps
// it replaces round (nn/layers.h's linear, linear_add and swiglu_mlp are its twins):
//   - a residual: y = residual + round(x W^T + bias), the sum rounded again (libtorch's `r + linear(x)`);
//   - SwiGLU's input: x = round(round(silu(gate)) * up) computed as the tiles are read (libtorch's
//     `silu(g) * u`, each step rounded to the dtype), so the product never goes through memory.
// The products' float32 sums are added in another order than cuBLAS's: the only difference.
// No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

struct GemvParams {
  const void* w = nullptr;     // [n, k] row-major, contiguous, 16-byte aligned
  int64_t n = 0, k = 0;        // k % 8 == 0
  const void* x = nullptr;     // [m, k] rows x_stride elements apart (SwiGLU: the gate)
  int64_t x_stride = 0;        // multiple of 8; x 16-byte aligned
  const void* up = nullptr;    // SwiGLU only: [m, k] rows up_stride apart (same alignment rules)
  int64_t up_stride = 0;
  const void* bias = nullptr;  // [n] or null
  const void* residual = nullptr;  // [m, n] rows residual_stride apart (last dim contiguous) or null
  int64_t residual_stride = 0;
  void* y = nullptr;           // [m, n] rows y_stride apart (last dim contiguous); may alias residual
  int64_t y_stride = 0;
  int m = 0;                   // 1 .. kGemvMaxRows
};

constexpr int kGemvMaxRows = 32;

// Enqueues the kernel (bf16 or fp16; ArgumentError for float32 or sizes it does not take, Error when the
// launch fails).
void launch_gemv(const GemvParams& p, ElementDtype dtype, cudaStream_t stream);

}  // namespace vlm2mla
