#include "kernels/cuda/gemv.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/row_math.cuh"
#include "kernels/cuda/stream_load.cuh"

namespace vlm2mla {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kCtasPerSm = 2;
constexpr int kMaxVectors = 12;       // 16-byte pieces of its warp's part of a row a lane holds (kGemvMaxIn)
constexpr int kMaxRowsPerCta = 1024;  // the block's partial sums: kWarps x 1,024 floats of shared memory (32 KB)
static_assert(kGemvMaxIn == int64_t(8) * kWarps * 32 * kMaxVectors, "gemv.h's bound");
constexpr int kXsFrom = 9;            // lanes taking this many pieces of a row read x from shared memory

// Two packed 16-bit values as floats (exact).
template <typename T>
__device__ __forceinline__ float2 pair_to_float2(uint32_t u) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
  } else {
    __half2 h;
    static_assert(sizeof(h) == sizeof(u), "two halves");
    memcpy(&h, &u, sizeof(u));
    return __half22float2(h);
  }
}

// acc + the products of the 8 weights in w and the 8 inputs in x, in element order.
template <typename T>
__device__ __forceinline__ float dot8(const uint4& w, const uint4& x, float acc) {
  const uint32_t wv[4] = {w.x, w.y, w.z, w.w}, xv[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = pair_to_float2<T>(wv[i]), b = pair_to_float2<T>(xv[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
  return acc;
}

// CTA blockIdx.x: rows [r0, r0 + rows) of w. The row's 16-byte pieces are cut into kWarps runs of `run` pieces (the
// last ones shorter, or empty); warp w takes run w of every row of the block, its lane the pieces lane, lane + 32,
// ... (NV at most), RB rows at a time. Each warp's sum of a row (its lanes' sums added by shuffles) goes to shared
// memory, and the block's rows are summed over the warps in warp order, the bias added, rounded once. x's pieces
// are held in registers, or (XS, where a lane takes many) in shared memory, read there for each row.
// Shared memory (dynamic): the partial sums [kWarps][rows_per_cta] floats, then with XS x's `in` elements.
// SILU (launch_gemv_silu_mul): w holds 2 out rows, the gate's then up's, and y[i] = silu_mul_one(gate_i, up_i) of the
// two rows' results rounded as the plain kernel rounds them (rms_norm.cu's SiLU x up over its output, so the same
// bits): a CTA takes the pairs [r0, r0 + rows_per_cta / 2), its block-local rows the gate rows of those pairs, then
// their up rows.
template <typename T, int NV, int RB, bool XS, bool SILU>
__global__ void __launch_bounds__(kThreads, kCtasPerSm)
    gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ y,
                int out, int in, int run, int rows_per_cta) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* partial = reinterpret_cast<float*>(smem);  // [warp][row of the block]
  uint4* xs = reinterpret_cast<uint4*>(smem + size_t(kWarps) * rows_per_cta * sizeof(float));  // XS: x
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // the block's first row (SILU: first pair), its rows (SILU: 2 np, np pairs), and block row rr's row of w
  const int r0 = blockIdx.x * (SILU ? rows_per_cta / 2 : rows_per_cta);
  const int np = SILU ? min(rows_per_cta / 2, out - r0) : 0;
  const int rows = SILU ? 2 * np : min(rows_per_cta, out - r0);
  auto w_row = [&](int rr) -> int64_t {
    if constexpr (SILU) return rr < np ? r0 + rr : out + r0 + rr - np;
    return r0 + rr;
  };
  const int first = warp * run;                        // the warp's first piece of a row
  const int count = max(0, min(run, in / 8 - first));  // and how many it takes
  const T* wcol = w + int64_t(first + lane) * 8;
  uint4 wv[RB][NV];
  auto load_rows = [&](int r) {  // rows r .. r + RB - 1 of the block; zeros past its end and the warp's run
#pragma unroll
    for (int b = 0; b < RB; ++b) {
      const T* wrow = wcol + w_row(r + b) * in;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        if (r + b < rows && lane + 32 * j < count) {
          wv[b][j] = load_weight(wrow + 32 * j * 8);
        } else {
          wv[b][j] = make_uint4(0u, 0u, 0u, 0u);
        }
      }
    }
  };
  load_rows(0);  // the weights are no kernel's output: read before waiting for the kernel ahead
  grid_dependency_wait();
  grid_launch_dependents();
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  uint4 xv[XS ? 1 : NV];
  if constexpr (XS) {
    for (int i = threadIdx.x; i < in / 8; i += kThreads) xs[i] = reinterpret_cast<const uint4*>(x)[i];
    __syncthreads();
  } else {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      xv[j] = lane + 32 * j < count ? reinterpret_cast<const uint4*>(x)[first + lane + 32 * j] : zero;
    }
  }
  for (int r = 0; r < rows; r += RB) {
    if (r > 0) load_rows(r);
    float acc[RB];
#pragma unroll
    for (int b = 0; b < RB; ++b) acc[b] = 0.f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      uint4 xj;
      if constexpr (XS) {
        xj = lane + 32 * j < count ? xs[first + lane + 32 * j] : zero;
      } else {
        xj = xv[j];
      }
#pragma unroll
      for (int b = 0; b < RB; ++b) acc[b] = dot8<T>(wv[b][j], xj, acc[b]);
    }
#pragma unroll
    for (int b = 0; b < RB; ++b) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], off);
    }
    if (lane == 0) {
#pragma unroll
      for (int b = 0; b < RB; ++b) {
        if (r + b < rows) partial[warp * rows_per_cta + r + b] = acc[b];
      }
    }
  }
  __syncthreads();
  // block row rr's result as the plain kernel rounds it: the warps' sums in warp order, the bias, rounded once
  auto result = [&](int rr) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) s += partial[k * rows_per_cta + rr];
    if (bias) s += to_float(bias[w_row(rr)]);
    return from_float<T>(s);
  };
  if constexpr (SILU) {
    for (int i = threadIdx.x; i < np; i += kThreads) y[r0 + i] = silu_mul_one(result(i), result(np + i));
  } else {
    for (int i = threadIdx.x; i < rows; i += kThreads) y[r0 + i] = result(i);
  }
}

// Rows a pass: ~12 pieces of 16 bytes in flight a lane where a warp's run is short, one row where it is long.
constexpr int rows_a_pass(int nv) { return nv >= 8 ? 1 : (12 + nv - 1) / nv; }

// out: y's elements (SILU: pairs of w's rows)
template <typename T, int NV, bool SILU>
void launch_nv(const void* x, const void* w, const void* bias, void* y, int out, int in, int run, cudaStream_t stream) {
  constexpr bool kXs = NV >= kXsFrom;
  auto kernel = gemv_kernel<T, NV, rows_a_pass(NV), kXs, SILU>;
  const int slots = current_device_sms() * kCtasPerSm;
  // out's results a CTA (SILU: pairs, so twice as many rows of w)
  const int per_cta = std::min(SILU ? kMaxRowsPerCta / 2 : kMaxRowsPerCta, std::max(1, (out + slots - 1) / slots));
  const int rows_per_cta = (SILU ? 2 : 1) * per_cta;
  const int ctas = (out + per_cta - 1) / per_cta;
  const size_t smem = size_t(kWarps) * rows_per_cta * sizeof(float) + (kXs ? size_t(in) * sizeof(T) : 0);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    VLM2MLA_CHECK(err == cudaSuccess, Error, "launch_gemv: ", smem, " bytes of shared memory a CTA: ",
                  cudaGetErrorString(err));
  }
  launch_programmatic(kernel, dim3(unsigned(ctas)), dim3(kThreads), smem, stream, static_cast<const T*>(x),
                      static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(y), out, in, run,
                      rows_per_cta);
}

template <typename T, bool SILU>
void launch_typed(const void* x, const void* w, const void* bias, void* y, int out, int in, cudaStream_t stream) {
  const int run = (in / 8 + kWarps - 1) / kWarps;  // pieces a warp takes of each row
  const int nv = (run + 31) / 32;
  switch (nv) {
    case 1: return launch_nv<T, 1, SILU>(x, w, bias, y, out, in, run, stream);
    case 2: return launch_nv<T, 2, SILU>(x, w, bias, y, out, in, run, stream);
    case 3: return launch_nv<T, 3, SILU>(x, w, bias, y, out, in, run, stream);
    case 4: return launch_nv<T, 4, SILU>(x, w, bias, y, out, in, run, stream);
    case 5: return launch_nv<T, 5, SILU>(x, w, bias, y, out, in, run, stream);
    case 6: return launch_nv<T, 6, SILU>(x, w, bias, y, out, in, run, stream);
    case 7: return launch_nv<T, 7, SILU>(x, w, bias, y, out, in, run, stream);
    case 8: return launch_nv<T, 8, SILU>(x, w, bias, y, out, in, run, stream);
    case 9: return launch_nv<T, 9, SILU>(x, w, bias, y, out, in, run, stream);
    case 10: return launch_nv<T, 10, SILU>(x, w, bias, y, out, in, run, stream);
    case 11: return launch_nv<T, 11, SILU>(x, w, bias, y, out, in, run, stream);
    default:
      static_assert(kMaxVectors == 12, "one case a count");
      return launch_nv<T, 12, SILU>(x, w, bias, y, out, in, run, stream);
  }
}

template <bool SILU>
void launch_dtype(const void* x, const void* w, const void* bias, void* y, int64_t out, int64_t in, ElementDtype dtype,
                  cudaStream_t stream) {
  if (dtype == ElementDtype::kBf16) {
    launch_typed<__nv_bfloat16, SILU>(x, w, bias, y, int(out), int(in), stream);
  } else {
    launch_typed<__half, SILU>(x, w, bias, y, int(out), int(in), stream);
  }
}

}  // namespace

const char* gemv_unsupported(int64_t out, int64_t in, ElementDtype dtype, const void* x, const void* w) {
  if (dtype != ElementDtype::kBf16 && dtype != ElementDtype::kFp16) return "the dtype is not bf16 or fp16";
  if (out < 1 || out > int64_t(1) << 30) return "out-features are not between 1 and 2^30";
  if (in < 8 || in > kGemvMaxIn || in % 8 != 0) return "in-features are not a multiple of 8 between 8 and 24,576";
  if (!aligned16(x) || !aligned16(w)) return "x or the weight does not start on a 16-byte bound";
  return nullptr;
}

void launch_gemv(const void* x, const void* w, const void* bias, void* y, int64_t out, int64_t in, ElementDtype dtype,
                 cudaStream_t stream) {
  const char* why = gemv_unsupported(out, in, dtype, x, w);
  VLM2MLA_CHECK(!why, ArgumentError, "launch_gemv: ", why, " (out ", out, ", in ", in, ")");
  launch_dtype<false>(x, w, bias, y, out, in, dtype, stream);
  check_kernel_launch("launch_gemv");
}

void launch_gemv_silu_mul(const void* x, const void* w, const void* bias, void* y, int64_t out, int64_t in,
                          ElementDtype dtype, cudaStream_t stream) {
  const char* why =
      out > int64_t(1) << 29 ? "out-features are above 2^29 pairs" : gemv_unsupported(2 * out, in, dtype, x, w);
  VLM2MLA_CHECK(!why, ArgumentError, "launch_gemv_silu_mul: ", why, " (out ", out, " pairs, in ", in, ")");
  launch_dtype<true>(x, w, bias, y, out, in, dtype, stream);
  check_kernel_launch("launch_gemv_silu_mul");
}

}  // namespace vlm2mla
