#include "kernels/cuda/rms_norm.h"

#include "core/error.h"
#include "kernels/cuda/element.cuh"

namespace vlm2mla {
namespace {

constexpr int kThreads = 256;

// One CTA per row: the sum of squares reduced over the CTA, then each element normalised, rounded to T
// and multiplied by its weight (the product rounded to T), as libtorch computes `weight * normed`.
template <typename T>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                            T* __restrict__ out, int d, float inv_d, float eps) {
  const T* xr = x + int64_t(blockIdx.x) * d;
  T* orow = out + int64_t(blockIdx.x) * d;
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += kThreads) {
    const float v = to_float(xr[i]);
    ss += v * v;
  }
  __shared__ float warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = ss;
  __syncthreads();
  float total = lane < kThreads / 32 ? warp_sums[lane] : 0.f;
  for (int off = 16; off > 0; off >>= 1) total += __shfl_xor_sync(0xffffffffu, total, off);
  // libtorch: mean = sum * (1/d); rsqrt(mean + eps)
  const float inv = rsqrtf(total * inv_d + eps);
  for (int i = threadIdx.x; i < d; i += kThreads) {
    const T normed = from_float<T>(to_float(xr[i]) * inv);
    orow[i] = from_float<T>(to_float(w[i]) * to_float(normed));
  }
}

template <typename T>
void launch_typed(const void* x, const void* w, void* out, int64_t rows, int d, float eps, cudaStream_t stream) {
  rms_norm_kernel<T><<<dim3(unsigned(rows)), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(out), d, 1.0f / float(d), eps);
}

}  // namespace

void launch_rms_norm(const void* x, const void* w, void* out, int64_t rows, int64_t d, float eps, ElementDtype dtype,
                     cudaStream_t stream) {
  VLM2MLA_CHECK(rows >= 0 && rows <= 0x7fffffff && d > 0 && d <= 0x7fffffff, ArgumentError,
                "rms_norm: ", rows, " rows of width ", d, " are out of range");
  if (rows == 0) return;
  switch (dtype) {
    case ElementDtype::kBf16: launch_typed<__nv_bfloat16>(x, w, out, rows, int(d), eps, stream); break;
    case ElementDtype::kFp16: launch_typed<__half>(x, w, out, rows, int(d), eps, stream); break;
    case ElementDtype::kFp32: launch_typed<float>(x, w, out, rows, int(d), eps, stream); break;
  }
  const cudaError_t err = cudaGetLastError();
  VLM2MLA_CHECK(err == cudaSuccess, Error, "rms_norm: launching the kernel failed: ", cudaGetErrorName(err), " (",
                cudaGetErrorString(err), ")");
}

}  // namespace vlm2mla
