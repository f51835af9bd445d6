#include "kernels/cuda/gemm_rows.h"

#include <algorithm>
#include <type_traits>

#include "core/error.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/row_math.cuh"
#include "kernels/cuda/stream_load.cuh"
#include "kernels/cuda/tensor_core.cuh"

namespace vlm2mla {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kCtasPerSm = 2;
constexpr int kMaxTiles = 3;  // 8-row tiles of w a unit of work at most (the loads' registers)
constexpr int kUnroll = 4;    // 32-wide pieces of k a warp takes a step
constexpr int kStages = 2;    // steps of weights in flight in shared memory (kStages x NT x 16 KB a CTA)

template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    tensor_core::mma_bf16(d, a0, a1, a2, a3, b0, b1);
  } else {
    tensor_core::mma_fp16(d, a0, a1, a2, a3, b0, b1);
  }
}

// CTA blockIdx.x takes the units blockIdx.x, blockIdx.x + gridDim.x, ...; a unit is NT tiles of 8 rows of w
// (plain: rows 8 NT u .. 8 NT u + 8 NT - 1; SILU, NT = 2: the gate's rows 8 u .. 8 u + 7 and up's out + 8 u ..).
// Lane (g = lane / 4, t = lane % 4) of a warp loads, for each 32-wide piece c of k it takes (c = warp, warp + 8,
// ...), the 8 elements k = 32 c + 8 t .. + 7 of row g of each tile and of rows g and (X16) g + 8 of x: for the
// tensor cores' m16n8k16 products that lane's k slots {2t, 2t+1, 2t+8, 2t+9} of the first product take the piece's
// elements 0..3 and those of the second its elements 4..7, in A (x) and B (w) alike, so that the two products sum
// the 32 elements of k once each (a permutation of k, which a dot product does not see). Rows of x past m and of w
// past its end are zeros. Each warp sums its pieces in order into the accumulators (rows g, g + 8; columns 2t,
// 2t + 1 of each tile), which go to shared memory; the unit's results are the warps' sums added in warp order, the
// bias added, rounded once (SILU: the gate's and up's results so rounded, then silu_mul_one).
template <typename T, int NT, bool X16, bool SILU>
__global__ void __launch_bounds__(kThreads, kCtasPerSm)
    gemm_rows_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ y,
                     int m, int out, int in, int units) {
  static_assert(NT >= 1 && NT <= kMaxTiles && (!SILU || NT == 2), "tiles a unit");
  __shared__ __align__(16) float partial[kWarps * NT * 32 * 4];  // [warp][tile][lane][accumulator]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int pieces = (in + 31) / 32;                                 // 32-wide pieces of k
  const int iters = (pieces + kWarps * kUnroll - 1) / (kWarps * kUnroll);  // the same for every warp
  // the weight row of tile j of unit u this lane loads, or -1 past w's end
  auto w_row = [&](int u, int j) -> int64_t {
    if constexpr (SILU) {
      const int n = 8 * u + g;
      return n < out ? int64_t(j) * out + n : -1;
    } else {
      const int n = 8 * (NT * u + j) + g;
      return n < out ? n : -1;
    }
  };
  // The weights stream through a ring of kStages stages in dynamic shared memory ([stage][i][j][thread] 16-byte
  // pieces), each thread copying (cp.async) and later reading only its own pieces, so no barrier orders them: the
  // CTA's q-th step (unit u0 + (q / iters) gridDim.x, iteration q % iters) goes to stage q % kStages, one commit
  // group a step; the first kStages steps are issued before the wait (weights are no kernel's output), and each
  // step's stage is refilled with step q + kStages after the step's products. x's pieces (the kernel ahead's output)
  // are loaded one step ahead into registers.
  // the first of the 8 elements of k this lane takes of piece i of step (iteration) it: w's and x's alike
  auto k_of = [&](int it, int i) { return 32 * (warp + kWarps * (kUnroll * it + i)) + 8 * t; };
  extern __shared__ __align__(16) uint4 ring[];
  const int u0 = blockIdx.x;
  const int steps = u0 < units ? ((units - 1 - u0) / int(gridDim.x) + 1) * iters : 0;
  auto issue = [&](int q) {  // step q's weights into its stage (zeros past w's rows and in), then a commit group
    if (q < steps) {
      const int u = u0 + (q / iters) * int(gridDim.x), it = q % iters;
      uint4* stage = ring + (q % kStages) * (kUnroll * NT * kThreads) + threadIdx.x;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int64_t row = w_row(u, j);
#pragma unroll
        for (int i = 0; i < kUnroll; ++i) {
          const int k = k_of(it, i);
          const bool valid = row >= 0 && k < in;
          copy_weight_async(tensor_core::smem_addr(stage + (i * NT + j) * kThreads), valid ? w + row * in + k : w, valid);
        }
      }
    }
    tensor_core::cp_async_commit();  // (empty past the last step: one group a step keeps the waits' count)
  };
  uint4 x0[kUnroll], x1[kUnroll];
  auto load_x = [&](int it) {
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int k = k_of(it, i);
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      x0[i] = g < m && k < in ? __ldg(reinterpret_cast<const uint4*>(x + int64_t(g) * in + k)) : zero;
      if constexpr (X16) {
        x1[i] = g + 8 < m && k < in ? __ldg(reinterpret_cast<const uint4*>(x + int64_t(g + 8) * in + k)) : zero;
      } else {
        x1[i] = zero;
      }
    }
  };
#pragma unroll
  for (int q = 0; q < kStages; ++q) issue(q);
  grid_dependency_wait();
  if (steps > 0) load_x(0);
  int q = 0;
  for (int u = u0; u < units; u += gridDim.x) {
    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    for (int it = 0; it < iters; ++it, ++q) {
      tensor_core::cp_async_wait<kStages - 1>();  // step q's group has landed (at most kStages - 1 newer pending)
      uint4 wv[kUnroll][NT];
      const uint4* stage = ring + (q % kStages) * (kUnroll * NT * kThreads) + threadIdx.x;
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) {
#pragma unroll
        for (int j = 0; j < NT; ++j) wv[i][j] = stage[(i * NT + j) * kThreads];
      }
      uint4 xa[kUnroll], xb[kUnroll];  // this step's x, while the next step's loads
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) xa[i] = x0[i], xb[i] = x1[i];
      if (q + 1 < steps) load_x(it + 1 < iters ? it + 1 : 0);
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) {
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          mma<T>(acc[j], xa[i].x, xb[i].x, xa[i].y, xb[i].y, wv[i][j].x, wv[i][j].y);
          mma<T>(acc[j], xa[i].z, xb[i].z, xa[i].w, xb[i].w, wv[i][j].z, wv[i][j].w);
        }
      }
      issue(q + kStages);  // into the stage just read (after its products: their registers held its pieces)
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      reinterpret_cast<float4*>(partial)[(warp * NT + j) * 32 + lane] =
          make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
    }
    __syncthreads();
    // result (row r of x, column c of tile j): the warps' sums in warp order, the bias, rounded once
    auto result = [&](int r, int j, int c, int64_t wrow) {
      const int at = j * 128 + ((r % 8) * 4 + c / 2) * 4 + (r / 8) * 2 + c % 2;
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < kWarps; ++k) s += partial[k * NT * 128 + at];
      if (bias) s += to_float(bias[wrow]);
      return from_float<T>(s);
    };
    if constexpr (SILU) {
      for (int i = threadIdx.x; i < m * 8; i += kThreads) {
        const int r = i / 8, c = i % 8, n = 8 * u + c;
        if (n < out) y[int64_t(r) * out + n] = silu_mul_one(result(r, 0, c, n), result(r, 1, c, int64_t(out) + n));
      }
    } else {
      for (int i = threadIdx.x; i < m * 8 * NT; i += kThreads) {
        const int r = i / (8 * NT), c = i % (8 * NT), n = 8 * NT * u + c;
        if (n < out) y[int64_t(r) * out + n] = result(r, c / 8, c % 8, n);
      }
    }
    __syncthreads();  // the partial sums are the next unit's
  }
  // the next launch scheduled only as the CTAs end: scheduled once they had waited (as the other programmatic
  // kernels), MLA's 32k x 8 step took 7.62 ms against 5.93 (H200, 2026-12-01; docs/KERNELS.md, session 31)
  grid_launch_dependents();
}

template <typename T, int NT, bool X16, bool SILU>
void launch_nt(const void* x, const void* w, const void* bias, void* y, int m, int out, int in, int slots,
               cudaStream_t stream) {
  const int units = SILU ? (out + 7) / 8 : (out + 8 * NT - 1) / (8 * NT);
  constexpr int smem = kStages * kUnroll * NT * kThreads * int(sizeof(uint4));  // the weights' ring
  if constexpr (smem > 48 * 1024) {  // (gemv.cu's way: on the launch's device, each launch)
    const cudaError_t err =
        cudaFuncSetAttribute(gemm_rows_kernel<T, NT, X16, SILU>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    VLM2MLA_CHECK(err == cudaSuccess, Error, "launch_gemm_rows: ", smem, " bytes of shared memory a CTA: ",
                  cudaGetErrorString(err));
  }
  launch_programmatic(gemm_rows_kernel<T, NT, X16, SILU>, dim3(unsigned(std::min(units, slots))), dim3(kThreads),
                      size_t(smem), stream, static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
                      static_cast<T*>(y), m, out, in, units);
}

// The tiles a unit: where the card's CTA slots hold all of w's tiles in units of at most kMaxTiles, one unit a CTA
// of as many tiles as that takes (one wave: a q/k/v block of 4,608 rows in 192 CTAs of 3 tiles, where units of 2 left
// 24 CTAs a second unit, measured 0.81x cuBLAS at 8 rows); else units of 2 tiles, the CTAs taking several in turn.
// SILU's units are a gate tile and its up tile.
template <typename T, bool X16, bool SILU>
void launch_typed(const void* x, const void* w, const void* bias, void* y, int m, int out, int in,
                  cudaStream_t stream) {
  const int slots = current_device_sms() * kCtasPerSm;
  const int tiles = (out + 7) / 8, per_cta = (tiles + slots - 1) / slots;
  if constexpr (!SILU) {
    if (per_cta == 1) return launch_nt<T, 1, X16, SILU>(x, w, bias, y, m, out, in, slots, stream);
    if (per_cta == 3) return launch_nt<T, 3, X16, SILU>(x, w, bias, y, m, out, in, slots, stream);
  }
  launch_nt<T, 2, X16, SILU>(x, w, bias, y, m, out, in, slots, stream);
}

template <bool SILU>
void launch_dtype(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t out, int64_t in,
                  ElementDtype dtype, cudaStream_t stream) {
  const bool x16 = m > 8;
  if (dtype == ElementDtype::kBf16) {
    (x16 ? launch_typed<__nv_bfloat16, true, SILU> : launch_typed<__nv_bfloat16, false, SILU>)(
        x, w, bias, y, int(m), int(out), int(in), stream);
  } else {
    (x16 ? launch_typed<__half, true, SILU> : launch_typed<__half, false, SILU>)(x, w, bias, y, int(m), int(out),
                                                                                 int(in), stream);
  }
}

}  // namespace

const char* gemm_rows_unsupported(int64_t m, int64_t out, int64_t in, ElementDtype dtype, const void* x,
                                  const void* w) {
  if (dtype != ElementDtype::kBf16 && dtype != ElementDtype::kFp16) return "the dtype is not bf16 or fp16";
  if (m < 1 || m > kGemmRowsMax) return "x's rows are not between 1 and 16";
  if (out < 1 || out > int64_t(1) << 30) return "out-features are not between 1 and 2^30";
  if (in < 8 || in > int64_t(1) << 30 || in % 8 != 0) return "in-features are not a multiple of 8 between 8 and 2^30";
  if (!aligned16(x) || !aligned16(w)) return "x or the weight does not start on a 16-byte bound";
  return nullptr;
}

void launch_gemm_rows(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t out, int64_t in,
                      ElementDtype dtype, cudaStream_t stream) {
  const char* why = gemm_rows_unsupported(m, out, in, dtype, x, w);
  VLM2MLA_CHECK(!why, ArgumentError, "launch_gemm_rows: ", why, " (m ", m, ", out ", out, ", in ", in, ")");
  launch_dtype<false>(x, w, bias, y, m, out, in, dtype, stream);
  check_kernel_launch("launch_gemm_rows");
}

void launch_gemm_rows_silu_mul(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t out,
                               int64_t in, ElementDtype dtype, cudaStream_t stream) {
  const char* why = out > int64_t(1) << 29 ? "out-features are above 2^29 pairs"
                                           : gemm_rows_unsupported(m, 2 * out, in, dtype, x, w);
  VLM2MLA_CHECK(!why, ArgumentError, "launch_gemm_rows_silu_mul: ", why, " (m ", m, ", out ", out, " pairs, in ", in,
                ")");
  launch_dtype<true>(x, w, bias, y, m, out, in, dtype, stream);
  check_kernel_launch("launch_gemm_rows_silu_mul");
}

}  // namespace vlm2mla
