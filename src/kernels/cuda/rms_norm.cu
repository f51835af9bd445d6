#include "kernels/cuda/rms_norm.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/row_math.cuh"

namespace vlm2mla {
namespace {

constexpr int kThreads = 256;

// (row_inv_rms, silu_mul_one: row_math.cuh, shared with gemv.cu's SiLU x up epilogue)

// One CTA per row: the sum of squares reduced over the CTA, then each element normalised, rounded to T
// and multiplied by its weight (the product rounded to T), as libtorch computes `weight * normed`.
// ADD: the row is x + r, rounded to T (libtorch's add), and stored to sum.
template <typename T, bool ADD>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ r,
                                                            const T* __restrict__ w, T* __restrict__ sum,
                                                            T* __restrict__ out, int d, float inv_d, float eps) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  const T* xr = x + int64_t(blockIdx.x) * d;
  const T* rr = ADD ? r + int64_t(blockIdx.x) * d : nullptr;
  T* orow = out + int64_t(blockIdx.x) * d;
  auto value = [&](int i) {
    if constexpr (ADD) return from_float<T>(to_float(xr[i]) + to_float(rr[i]));
    else return xr[i];
  };
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += kThreads) {
    const T e = value(i);
    if constexpr (ADD) sum[int64_t(blockIdx.x) * d + i] = e;
    const float v = to_float(e);
    ss += v * v;
  }
  const float inv = row_inv_rms<kThreads>(ss, inv_d, eps);
  for (int i = threadIdx.x; i < d; i += kThreads) {
    const T normed = from_float<T>(to_float(value(i)) * inv);
    orow[i] = from_float<T>(to_float(w[i]) * to_float(normed));
  }
}

// Rows of whole 16-byte vectors of T, at most kThreads * kMaxVecs of them, on 16-byte bounds: each thread loads its
// vectors of the row (x, and r with ADD) and of the weight at once and keeps them in registers, so a row costs one
// round of loads, where the loop above took its elements' latency one after another (~7 µs a row on the H200 at
// width 3,584, a norm a decoder layer's step twice: session 23's profile). The same per-element arithmetic as
// rms_norm_kernel; the float32 sum of squares in another order.
constexpr int kMaxVecs = 4;
template <typename T, bool ADD>
__global__ void __launch_bounds__(kThreads) rms_norm_vec_kernel(const T* __restrict__ x, const T* __restrict__ r,
                                                                const T* __restrict__ w, T* __restrict__ sum,
                                                                T* __restrict__ out, int nvec, float inv_d, float eps) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  constexpr int V = 16 / sizeof(T);
  union Vec {
    uint4 u;
    T e[V];
  };
  const int64_t base = int64_t(blockIdx.x) * nvec;  // in vectors
  const uint4* xr = reinterpret_cast<const uint4*>(x) + base;
  const uint4* wr = reinterpret_cast<const uint4*>(w);
  Vec xv[kMaxVecs], wv[kMaxVecs];
#pragma unroll
  for (int k = 0; k < kMaxVecs; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < nvec) {
      xv[k].u = xr[i];
      wv[k].u = wr[i];
      if constexpr (ADD) {
        Vec rv;
        rv.u = reinterpret_cast<const uint4*>(r)[base + i];
#pragma unroll
        for (int j = 0; j < V; ++j) xv[k].e[j] = from_float<T>(to_float(xv[k].e[j]) + to_float(rv.e[j]));
        reinterpret_cast<uint4*>(sum)[base + i] = xv[k].u;
      }
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxVecs; ++k) {
    if (threadIdx.x + k * kThreads < nvec) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float v = to_float(xv[k].e[j]);
        ss += v * v;
      }
    }
  }
  const float inv = row_inv_rms<kThreads>(ss, inv_d, eps);
  uint4* orow = reinterpret_cast<uint4*>(out) + base;
#pragma unroll
  for (int k = 0; k < kMaxVecs; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < nvec) {
      Vec o;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const T normed = from_float<T>(to_float(xv[k].e[j]) * inv);
        o.e[j] = from_float<T>(to_float(wv[k].e[j]) * to_float(normed));
      }
      orow[i] = o.u;
    }
  }
}

// V elements a thread: rows y, y + gridDim.y, ...; the columns of blockIdx.x's kThreads V. V > 1 (16 bytes of T)
// where the width, both row strides and the three base pointers allow 16-byte accesses (launch_silu_mul_typed),
// else V = 1: the same per-element arithmetic, so the same bits either way. (The first form, a flat grid-stride
// loop with a 64-bit division per element, ran at ~1 TB/s on the H200: 30 us for b = 256's [256, 18944] rows.)
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) silu_mul_kernel(const T* __restrict__ gate, int64_t gate_stride,
                                                            const T* __restrict__ up, int64_t up_stride,
                                                            T* __restrict__ out, int64_t rows, int64_t d) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  const int64_t col = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * V;
  if (col >= d) return;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const T* gr = gate + row * gate_stride + col;
    const T* ur = up + row * up_stride + col;
    T* orow = out + row * d + col;
    if constexpr (V == 1) {
      *orow = silu_mul_one(*gr, *ur);
    } else {
      static_assert(V * sizeof(T) == 16, "16-byte vectors");
      union Vec {
        uint4 u;
        T e[V];
      } gv, uv, ov;
      gv.u = *reinterpret_cast<const uint4*>(gr);
      uv.u = *reinterpret_cast<const uint4*>(ur);
#pragma unroll
      for (int k = 0; k < V; ++k) ov.e[k] = silu_mul_one(gv.e[k], uv.e[k]);
      *reinterpret_cast<uint4*>(orow) = ov.u;
    }
  }
}

template <typename T, bool ADD>
void launch_typed(const void* x, const void* r, const void* w, void* sum, void* out, int64_t rows, int d, float eps,
                  cudaStream_t stream, bool vectors) {
  constexpr int V = 16 / sizeof(T);
  if (vectors && d % V == 0 && d / V <= kThreads * kMaxVecs && aligned16(x) && aligned16(w) && aligned16(out) &&
      (!ADD || (aligned16(r) && aligned16(sum)))) {
    launch_programmatic(rms_norm_vec_kernel<T, ADD>, dim3(unsigned(rows)), kThreads, 0, stream,
                        static_cast<const T*>(x), static_cast<const T*>(r), static_cast<const T*>(w),
                        static_cast<T*>(sum), static_cast<T*>(out), d / V, 1.0f / float(d), eps);
    return;
  }
  launch_programmatic(rms_norm_kernel<T, ADD>, dim3(unsigned(rows)), kThreads, 0, stream, static_cast<const T*>(x),
                      static_cast<const T*>(r), static_cast<const T*>(w), static_cast<T*>(sum), static_cast<T*>(out), d,
                      1.0f / float(d), eps);
}

template <typename T, int V>
void launch_silu_mul_v(const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                       int64_t rows, int64_t d, cudaStream_t stream) {
  const int64_t per_block = int64_t(kThreads) * V;
  const dim3 grid(unsigned((d + per_block - 1) / per_block), unsigned(std::min<int64_t>(rows, 65535)));
  launch_programmatic(silu_mul_kernel<T, V>, grid, kThreads, 0, stream, static_cast<const T*>(gate), gate_stride,
                      static_cast<const T*>(up), up_stride, static_cast<T*>(out), rows, d);
}

template <typename T>
void launch_silu_mul_typed(const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                           int64_t rows, int64_t d, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = d % V == 0 && (rows == 1 || (gate_stride % V == 0 && up_stride % V == 0)) && aligned16(gate) &&
                   aligned16(up) && aligned16(out);
  if (vec) {
    launch_silu_mul_v<T, V>(gate, gate_stride, up, up_stride, out, rows, d, stream);
  } else {
    launch_silu_mul_v<T, 1>(gate, gate_stride, up, up_stride, out, rows, d, stream);
  }
}

template <bool ADD>
void launch_norm(const char* what, const void* x, const void* r, const void* w, void* sum, void* out, int64_t rows,
                 int64_t d, float eps, ElementDtype dtype, cudaStream_t stream, bool vectors) {
  VLM2MLA_CHECK(rows >= 0 && rows <= 0x7fffffff && d > 0 && d <= 0x7fffffff, ArgumentError, what, ": ", rows,
                " rows of width ", d, " are out of range");
  if (rows == 0) return;
  switch (dtype) {
    case ElementDtype::kBf16:
      launch_typed<__nv_bfloat16, ADD>(x, r, w, sum, out, rows, int(d), eps, stream, vectors);
      break;
    case ElementDtype::kFp16: launch_typed<__half, ADD>(x, r, w, sum, out, rows, int(d), eps, stream, vectors); break;
    case ElementDtype::kFp32: launch_typed<float, ADD>(x, r, w, sum, out, rows, int(d), eps, stream, vectors); break;
  }
  check_kernel_launch(what);
}

}  // namespace

void launch_rms_norm(const void* x, const void* w, void* out, int64_t rows, int64_t d, float eps, ElementDtype dtype,
                     cudaStream_t stream, bool vectors) {
  launch_norm<false>("rms_norm", x, nullptr, w, nullptr, out, rows, d, eps, dtype, stream, vectors);
}

void launch_add_rms_norm(const void* x, const void* r, const void* w, void* sum, void* out, int64_t rows, int64_t d,
                         float eps, ElementDtype dtype, cudaStream_t stream, bool vectors) {
  launch_norm<true>("add_rms_norm", x, r, w, sum, out, rows, d, eps, dtype, stream, vectors);
}

void launch_silu_mul(const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out, int64_t rows,
                     int64_t d, ElementDtype dtype, cudaStream_t stream) {
  VLM2MLA_CHECK(rows >= 0 && d > 0, ArgumentError, "silu_mul: ", rows, " rows of width ", d, " are out of range");
  if (rows == 0) return;
  switch (dtype) {
    case ElementDtype::kBf16:
      launch_silu_mul_typed<__nv_bfloat16>(gate, gate_stride, up, up_stride, out, rows, d, stream);
      break;
    case ElementDtype::kFp16:
      launch_silu_mul_typed<__half>(gate, gate_stride, up, up_stride, out, rows, d, stream);
      break;
    case ElementDtype::kFp32:
      launch_silu_mul_typed<float>(gate, gate_stride, up, up_stride, out, rows, d, stream);
      break;
  }
  check_kernel_launch("silu_mul");
}

}  // namespace vlm2mla
