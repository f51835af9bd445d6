// Skinny GEMMs for decode steps (gemv.h). Layout:
//   - a CTA owns MT x 16 rows of W (output features); its 8 warps split K into 32-wide chunks (chunk c
//     to warp c % 8), so a row block's bytes stream through the CTA 512 contiguous bytes a row at a time;
//   - a warp multiplies its chunks with mma.m16n8k16 (W rows as A, tokens as B's 8 columns, NT 8-token
//     tiles): each lane loads 16 contiguous bytes of a row (8 k values) straight from global memory
//     into registers, no shared memory. The MMA's k order is permuted to match: lane (gid, tig) holds
//     k values 8 tig .. 8 tig + 7 of the chunk, its first four for the first k-step (fragment slots 2 tig,
//     2 tig + 1, 2 tig + 8, 2 tig + 9) and the next four for the second; B's fragments take the tokens'
//     values in the same order, so every product pairs W[r][k] with x[t][k];
//   - the warps' float32 partial sums meet in shared memory, are added in warp order (repeatable), the
//     bias added, rounded to the dtype once, and the residual added and rounded again where given.
// Weights are read with ld.global.nc.L1::no_allocate (streamed once), the tokens' values through L1
// (every warp of the SM reads them).
#include "kernels/cuda/gemv.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "core/error.h"
#include "kernels/cuda/element.cuh"

namespace vlm2mla {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 4;  // chunks in flight per warp

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// 16 bytes of a weight row, read once: not kept in L1.
__device__ __forceinline__ uint4 load_stream(const void* ptr) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(ptr));
  return v;
}

// Two values of T packed in a 32-bit word, and back.
template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t w) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  } else {
    __half2 h = *reinterpret_cast<__half2*>(&w);
    return __half22float2(h);
  }
}
template <typename T>
__device__ __forceinline__ uint32_t pack2(T lo, T hi) {
  const uint16_t l = *reinterpret_cast<uint16_t*>(&lo), h = *reinterpret_cast<uint16_t*>(&hi);
  return uint32_t(l) | (uint32_t(h) << 16);
}

// SwiGLU's input, two values: round(round(silu(g)) * u), as libtorch's silu then mul (each computed in
// float32 and rounded to T).
template <typename T>
__device__ __forceinline__ uint32_t swiglu2(uint32_t g, uint32_t u) {
  const float2 gf = unpack2<T>(g), uf = unpack2<T>(u);
  const T s0 = from_float<T>(gf.x / (1.f + expf(-gf.x))), s1 = from_float<T>(gf.y / (1.f + expf(-gf.y)));
  return pack2<T>(from_float<T>(to_float(s0) * uf.x), from_float<T>(to_float(s1) * uf.y));
}

// A token's 8 values at element k of the chunk (t < m, k < p.k).
template <typename T, bool SWIGLU>
__device__ __forceinline__ uint4 load_tokens(const GemvParams& p, int t, int64_t k) {
  const uint4 x = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + t * p.x_stride + k);
  if constexpr (!SWIGLU) {
    return x;
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.up) + t * p.up_stride + k);
    return make_uint4(swiglu2<T>(x.x, u.x), swiglu2<T>(x.y, u.y), swiglu2<T>(x.z, u.z), swiglu2<T>(x.w, u.w));
  }
}

// MT 16-row tiles of W per CTA, NT 8-token tiles.
template <typename T, int MT, int NT, bool SWIGLU>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvParams p) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const int64_t row0 = int64_t(blockIdx.x) * MT * 16;
  const T* w = static_cast<const T*>(p.w);
  const int64_t chunks = (p.k + 31) / 32;
  // the lane's rows (gid and gid + 8 of each tile), clamped into W for the loads of rows past n
  const T* wrow[MT][2];
  bool live[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = row0 + mt * 16 + gid + 8 * h;
      live[mt][h] = r < p.n;
      wrow[mt][h] = w + (live[mt][h] ? r : 0) * p.k + 8 * tig;
    }
  }
  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;

  for (int64_t c0 = warp; c0 < chunks; c0 += int64_t(kWarps) * kUnroll) {
    uint4 a[kUnroll][MT][2];
    uint4 bx[kUnroll][NT];
    // Every load is issued (addresses clamped into the tensors) and what lies past k, n or m zeroed after:
    // loads under a branch would not all be in flight at once.
    bool in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      int64_t k = (c0 + int64_t(u) * kWarps) * 32 + 8 * tig;
      in[u] = k < p.k;  // k % 8 == 0: a lane's 8 values are all in or all out
      if (!in[u]) k = 8 * tig < p.k ? 8 * tig : 0;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) a[u][mt][h] = load_stream(wrow[mt][h] + (k - 8 * tig));
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) bx[u][nt] = load_tokens<T, SWIGLU>(p, min(nt * 8 + gid, p.m - 1), k);
    }
    const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (!in[u] || !live[mt][h]) a[u][mt][h] = zero;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        if (!in[u] || nt * 8 + gid >= p.m) bx[u][nt] = zero;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          mma16816<T>(acc[mt][nt], a[u][mt][0].x, a[u][mt][1].x, a[u][mt][0].y, a[u][mt][1].y, bx[u][nt].x,
                      bx[u][nt].y);
          mma16816<T>(acc[mt][nt], a[u][mt][0].z, a[u][mt][1].z, a[u][mt][0].w, a[u][mt][1].w, bx[u][nt].z,
                      bx[u][nt].w);
        }
      }
    }
  }

  // the warps' sums: red[warp][row][token]
  constexpr int kRows = MT * 16, kCols = NT * 8;
  __shared__ float red[kWarps][kRows][kCols];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) red[warp][mt * 16 + gid + 8 * (i / 2)][nt * 8 + 2 * tig + (i % 2)] = acc[mt][nt][i];
  __syncthreads();
  for (int idx = threadIdx.x; idx < kRows * kCols; idx += kThreads) {
    const int t = idx / kRows, r = idx % kRows;  // consecutive threads: consecutive rows (coalesced stores)
    const int64_t row = row0 + r;
    if (t >= p.m || row >= p.n) continue;
    float v = 0.f;
#pragma unroll
    for (int q = 0; q < kWarps; ++q) v += red[q][r][t];
    if (p.bias) v += to_float(static_cast<const T*>(p.bias)[row]);
    T out = from_float<T>(v);
    if (p.residual) out = from_float<T>(to_float(static_cast<const T*>(p.residual)[t * p.residual_stride + row]) + to_float(out));
    static_cast<T*>(p.y)[t * p.y_stride + row] = out;
  }
}

template <typename T, int MT, bool SWIGLU>
void launch_nt(const GemvParams& p, cudaStream_t stream) {
  const unsigned blocks = unsigned((p.n + MT * 16 - 1) / (MT * 16));
  if (p.m <= 8) gemv_kernel<T, MT, 1, SWIGLU><<<blocks, kThreads, 0, stream>>>(p);
  else if (p.m <= 16) gemv_kernel<T, MT, 2, SWIGLU><<<blocks, kThreads, 0, stream>>>(p);
  else gemv_kernel<T, MT, 4, SWIGLU><<<blocks, kThreads, 0, stream>>>(p);
}

template <typename T>
void launch_typed(const GemvParams& p, cudaStream_t stream) {
  // Two row tiles per CTA (each token value loaded serves twice the rows) where the rows still give every
  // SM several CTAs; one where they would not (o_proj's 3,584 rows: 224 CTAs of 16 rows).
  int dev = 0, sms = 132;
  if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const bool two = p.n >= int64_t(32) * 4 * sms;
  const bool swiglu = p.up != nullptr;
  if (two) swiglu ? launch_nt<T, 2, true>(p, stream) : launch_nt<T, 2, false>(p, stream);
  else swiglu ? launch_nt<T, 1, true>(p, stream) : launch_nt<T, 1, false>(p, stream);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void launch_gemv(const GemvParams& p, ElementDtype dtype, cudaStream_t stream) {
  VLM2MLA_CHECK(dtype != ElementDtype::kFp32, ArgumentError, "gemv: float32 is not taken (bf16 or fp16 only)");
  VLM2MLA_CHECK(p.w && p.x && p.y, ArgumentError, "gemv: w, x and y must be set");
  VLM2MLA_CHECK(p.m >= 1 && p.m <= kGemvMaxRows, ArgumentError, "gemv: ", p.m, " rows (tokens); it takes 1 to ",
                kGemvMaxRows);
  VLM2MLA_CHECK(p.n >= 1 && p.n <= (int64_t(1) << 31) - 32 && p.k >= 8 && p.k % 8 == 0, ArgumentError, "gemv: W [",
                p.n, ", ", p.k, "]: needs n >= 1 and k a positive multiple of 8");
  VLM2MLA_CHECK(aligned16(p.w) && aligned16(p.x) && p.x_stride % 8 == 0 &&
                    (!p.up || (aligned16(p.up) && p.up_stride % 8 == 0)),
                ArgumentError, "gemv: W, x (and up) must be 16-byte aligned with rows a multiple of 8 elements apart");
  if (dtype == ElementDtype::kBf16) launch_typed<__nv_bfloat16>(p, stream);
  else launch_typed<__half>(p, stream);
  const cudaError_t err = cudaGetLastError();
  VLM2MLA_CHECK(err == cudaSuccess, Error, "gemv: launching the kernel failed: ", cudaGetErrorName(err), " (",
                cudaGetErrorString(err), ")");
}

}  // namespace vlm2mla
