// The per-element and per-row arithmetic that a kernel taking over another launch's work shares with the kernel it
// replaces (rms_norm.cu's norms and SiLU x up, gemv.cu's SiLU x up epilogue), so that both give the same bits.
// Device code only, no libtorch.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/element.cuh"

namespace vlm2mla {

// libtorch's silu (x / (1 + exp(-x)) in float32, rounded) then mul (in float32, rounded), per element.
template <typename T>
__device__ __forceinline__ T silu_mul_one(T g, T u) {
  const float x = to_float(g);
  const T s = from_float<T>(x / (1.0f + expf(-x)));
  return from_float<T>(to_float(s) * to_float(u));
}

// A row's 1 / rms from each of the CTA's THREADS threads' part of its sum of squares: the CTA's sum (shuffles within
// warps, then the warps' sums), then as libtorch: mean = sum * (1/d); rsqrt(mean + eps). One barrier; every thread
// gets it.
template <int THREADS>
__device__ __forceinline__ float row_inv_rms(float ss, float inv_d, float eps) {
  static_assert(THREADS % 32 == 0 && THREADS <= 32 * 32, "whole warps, their sums in one warp");
  __shared__ float warp_sums[THREADS / 32];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = ss;
  __syncthreads();
  float total = lane < THREADS / 32 ? warp_sums[lane] : 0.f;
  for (int off = 16; off > 0; off >>= 1) total += __shfl_xor_sync(0xffffffffu, total, off);
  return rsqrtf(total * inv_d + eps);
}

}  // namespace vlm2mla
