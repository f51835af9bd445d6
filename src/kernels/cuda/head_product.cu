// The per-kv-head product of a decode step in one launch (head_product.h), on tensor cores. Grid (column slices
// of 64, kv heads, row blocks of 16 (sequence, row) pairs); 4 warps, each 16 of the slice's columns. The inner
// dimension goes in chunks of 64 through four shared-memory stages, three chunks in flight ahead of the one
// in use (cp.async, zero-filled past d, n and the last row): a chunk's w[k] slice (64 x 64) and its 16 rows of x (16 x 64), rows padded by 16 bytes so that
// ldmatrix's eight row addresses fall on distinct banks; then mma.m16n8k16 (bf16 or fp16 in, float32
// accumulators) over the chunk's 16-wide steps, and one rounding to the dtype at the end. Launched
// programmatically, it issues the first chunks' w slices before it waits for the kernel ahead (weights: the
// ramp's round trip to memory overlaps that kernel's tail), and its x pieces after.
#include "kernels/cuda/head_product.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/error.h"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/tensor_core.cuh"

namespace vlm2mla {
namespace {

using namespace tensor_core;

constexpr int kThreads = 128;           // 4 warps
constexpr int kCols = 64;               // columns of y a CTA (16 a warp: two 8-column MMA tiles)
constexpr int kRows = 16;               // (sequence, row) pairs a CTA: one MMA tile's rows
constexpr int kChunk = 64;              // inner elements a stage
constexpr int kWPitch = kCols + 8;      // elements a staged row of w (144 bytes)
constexpr int kXPitch = kChunk + 8;     // elements a staged row of x
constexpr int kStages = 4;              // 45 KB of shared memory: d up to 192 in flight at once
constexpr int kPieces = 8;              // 16-byte pieces of 8 elements in a staged row (kCols = kChunk = 64)
static_assert(kRows * kPieces == kThreads, "one piece of x a thread a stage");

template <bool kBf16>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kBf16) {
    mma_bf16(d, a[0], a[1], a[2], a[3], b0, b1);
  } else {
    mma_fp16(d, a[0], a[1], a[2], a[3], b0, b1);
  }
}

template <bool kBf16>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (kBf16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

template <bool kBf16>
__global__ void __launch_bounds__(kThreads) head_product_kernel(const HeadProductParams p) {
  __shared__ __align__(16) uint16_t ws[kStages][kChunk * kWPitch];
  __shared__ __align__(16) uint16_t xs[kStages][kRows * kXPitch];
  const int64_t d = p.d, n = p.n, rows = p.b * p.m;
  const int64_t c0 = int64_t(blockIdx.x) * kCols, k = blockIdx.y;
  const int64_t r0 = int64_t(blockIdx.z) * kRows;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const uint16_t* wk = static_cast<const uint16_t*>(p.w) + k * d * n;
  // this thread's piece of x a stage: row xr of the block, elements 8 xq .. 8 xq + 7 of the chunk
  const int xr = tid / kPieces, xq = tid % kPieces;
  const int64_t row = r0 + xr;
  const bool row_ok = row < rows;
  const uint16_t* xrow = static_cast<const uint16_t*>(p.x);
  if (row_ok) {
    const int64_t bi = row / p.m, i = row - bi * p.m;
    xrow += bi * p.x_stride[0] + k * p.x_stride[1] + i * p.x_stride[2];
  }
  // a chunk's stage: its w slice and its rows of x, one cp.async group (stage); the w slices of the first chunks are
  // issued before the kernel waits for the one ahead (weights, no kernel's output), and their groups committed with
  // their x pieces after it (a group holds every cp.async issued before its commit: the first holds the first
  // chunks' w slices, so each chunk's pieces have landed when its group has, as before)
  auto stage_w = [&](int s, int64_t k0) {
    for (int e = tid; e < kChunk * kPieces; e += kThreads) {
      const int j = e / kPieces, q = e % kPieces;
      const int64_t kk = k0 + j, col = c0 + q * 8;
      const bool ok = kk < d && col < n;
      cp_async(smem_addr(&ws[s][j * kWPitch + q * 8]), ok ? wk + kk * n + col : wk, 16, ok);
    }
  };
  auto stage_x = [&](int s, int64_t k0) {
    const bool ok = row_ok && k0 + xq * 8 < d;
    cp_async(smem_addr(&xs[s][xr * kXPitch + xq * 8]), ok ? xrow + k0 + xq * 8 : xrow, 16, ok);
    cp_async_commit();
  };
  float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
  const int64_t chunks = (d + kChunk - 1) / kChunk;
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < chunks) stage_w(c, int64_t(c) * kChunk);
  }
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  // kStages - 1 chunks in flight ahead of the one in use; empty groups past the last chunk keep the count even
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < chunks) {
      stage_x(c, int64_t(c) * kChunk);
    } else {
      cp_async_commit();
    }
  }
  for (int64_t c = 0; c < chunks; ++c) {
    cp_async_wait<kStages - 2>();  // chunk c's group has landed
    __syncthreads();               // ... for every thread, and every thread is done with chunk c - 1's buffer
    const int s = int(c % kStages);
    const int64_t left = d - c * kChunk;  // a multiple of 8: a partial 16-wide step meets zeros
    const int steps = int(left >= kChunk ? kChunk / 16 : (left + 15) / 16);
    for (int ks = 0; ks < steps; ++ks) {
      uint32_t a[4], b[4];
      ldsm_x4(smem_addr(&xs[s][(lane % 16) * kXPitch + ks * 16 + (lane / 16) * 8]), a[0], a[1], a[2], a[3]);
      ldsm_x4_trans(smem_addr(&ws[s][(ks * 16 + lane % 16) * kWPitch + warp * 16 + (lane / 16) * 8]), b[0], b[1],
                    b[2], b[3]);
      mma<kBf16>(acc[0], a, b[0], b[1]);
      mma<kBf16>(acc[1], a, b[2], b[3]);
    }
    const int64_t next = c + kStages - 1;  // into chunk c - 1's buffer
    if (next < chunks) {
      stage_w(int(next % kStages), next * kChunk);
      stage_x(int(next % kStages), next * kChunk);
    } else {
      cp_async_commit();
    }
  }
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const int64_t col = c0 + warp * 16 + t * 8 + 2 * (lane % 4);  // col + 1 < n too: n is a multiple of 8
    if (col >= n) continue;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t rr = r0 + lane / 4 + half * 8;
      if (rr >= rows) continue;
      const int64_t bi = rr / p.m, i = rr - bi * p.m;
      uint16_t* y = static_cast<uint16_t*>(p.y) + ((bi * p.h + k) * p.m + i) * n + col;
      *reinterpret_cast<uint32_t*>(y) = pack2<kBf16>(acc[t][2 * half], acc[t][2 * half + 1]);
    }
  }
}

}  // namespace

void launch_head_product(const HeadProductParams& p, ElementDtype dtype, cudaStream_t stream) {
  VLM2MLA_CHECK(dtype == ElementDtype::kBf16 || dtype == ElementDtype::kFp16, ArgumentError,
                "head_product: bf16 or fp16 (tensor cores), got float32");
  VLM2MLA_CHECK(p.b >= 0 && p.h > 0 && p.m > 0 && p.d > 0 && p.n > 0, ArgumentError, "head_product: sizes b ", p.b,
                ", h ", p.h, ", m ", p.m, ", d ", p.d, ", n ", p.n, " out of range");
  VLM2MLA_CHECK(p.d % 8 == 0 && p.n % 8 == 0 && p.x_stride[0] % 8 == 0 && p.x_stride[1] % 8 == 0 &&
                    p.x_stride[2] % 8 == 0,
                ArgumentError, "head_product: d (", p.d, "), n (", p.n,
                ") and x's strides must be multiples of 8 elements (16-byte pieces)");
  VLM2MLA_CHECK(aligned16(p.x) && aligned16(p.w) && aligned16(p.y), ArgumentError,
                "head_product: x, w and y must be 16-byte aligned");
  const int64_t blocks_z = (p.b * p.m + kRows - 1) / kRows;
  VLM2MLA_CHECK(p.h <= 65535 && blocks_z <= 65535, ArgumentError, "head_product: ", p.h, " heads or ", p.b * p.m,
                " rows a head: too many for one launch");
  if (p.b == 0) return;
  const dim3 grid(unsigned((p.n + kCols - 1) / kCols), unsigned(p.h), unsigned(blocks_z));
  if (dtype == ElementDtype::kBf16) {
    launch_programmatic(head_product_kernel<true>, grid, kThreads, 0, stream, p);
  } else {
    launch_programmatic(head_product_kernel<false>, grid, kThreads, 0, stream, p);
  }
  check_kernel_launch("head_product");
}

}  // namespace vlm2mla
