// Absorbed MLA decode over a latent cache (params.h, METHOD.md §5), bf16 and int4 (§7) stores: the host
// side (validation, plan, launch) and the generic and combine kernels. The design of the tensor-core
// kernels, and their device code, is in mla_decode_kernels.cuh; their instances in mla_decode_{tc,rows}_*.cu.
// No libtorch here, so this file compiles with plain nvcc on machines without a CUDA libtorch too.
#include "kernels/cuda/mla_decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/mla_decode_kernels.cuh"
#include "kernels/cuda/pdl.cuh"

#define VLM2MLA_CUDA_CHECK(call, what)                                                            \
  do {                                                                                            \
    cudaError_t err_ = (call);                                                                    \
    if (err_ != cudaSuccess)                                                                      \
      throw ::vlm2mla::Error(::vlm2mla::detail::concat("mla_decode: ", what, " failed: ",         \
                                                       cudaGetErrorName(err_), " (",              \
                                                       cudaGetErrorString(err_), ")"));           \
  } while (0)

namespace vlm2mla {
namespace mla_decode_detail {

// ---- the generic kernel ------------------------------------------------------------------------------
// One CTA per (split, head, block of 4096 latent columns, sequence); fp32 arithmetic on CUDA cores.
// Handles every shape the tensor-core kernel does not (any r_kv % 8 == 0, any even d_rope, unaligned
// arrays); int4 keys are dequantized in fp32 per element, the ring read in place.
__device__ __forceinline__ float load_latent(const MlaDecodeParams& p, int b, int j, int qlen, int d) {
  if (p.format == MlaCacheFormat::kBf16) return bf16_bits_to_float(p.latent[(int64_t(b) * p.t_cap + j) * p.r_kv + d]);
  if (j >= qlen) return bf16_bits_to_float(p.latent_win[(int64_t(b) * p.window + j % p.window) * p.r_kv + d]);
  const int64_t row = int64_t(b) * p.t_cap + j;
  const uint32_t code = (p.latent_q[row * (p.r_kv / 2) + d / 2] >> ((d & 1) * 4)) & 15u;
  const int64_t gi = row * (p.r_kv / p.group_c) + d / p.group_c;
  return float(code) * half_bits_to_float(p.latent_scale[gi]) + half_bits_to_float(p.latent_lo[gi]);
}
__device__ __forceinline__ float load_krope(const MlaDecodeParams& p, int b, int j, int qlen, int d) {
  const int hr = p.h_kv * p.d_rope;
  if (p.format == MlaCacheFormat::kBf16) return bf16_bits_to_float(p.k_rope[(int64_t(b) * p.t_cap + j) * hr + d]);
  if (j >= qlen) return bf16_bits_to_float(p.k_rope_win[(int64_t(b) * p.window + j % p.window) * hr + d]);
  const int64_t row = int64_t(b) * p.t_cap + j;
  const uint32_t code = (p.k_rope_q[row * (hr / 2) + d / 2] >> ((d & 1) * 4)) & 15u;
  const int64_t gi = row * (hr / p.group_r) + d / p.group_r;
  return float(code) * half_bits_to_float(p.k_rope_scale[gi]) + half_bits_to_float(p.k_rope_lo[gi]);
}

template <int NMOD>
__global__ void __launch_bounds__(kGenericThreads)
    mla_decode_generic_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kPerThread = kGenericCols / kGenericThreads;  // 32
  float* q_s = reinterpret_cast<float*>(smem);  // [NMOD][r_kv] then [d_rope]
  float* qr_s = q_s + NMOD * p.r_kv;
  __shared__ float s_sm[kGenericChunk];
  __shared__ int mod_sm[kGenericChunk];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int split = blockIdx.x, head = blockIdx.y / g.col_blocks, cb = blockIdx.y % g.col_blocks, b = blockIdx.z;
  const int grp = head / (p.h_q / p.h_kv);
  for (int i = tid; i < NMOD * p.r_kv; i += kGenericThreads) {
    const int m = i / p.r_kv, d = i - m * p.r_kv;
    q_s[i] = load_q(p.qa, p.q_bf16, qa_offset(p, m, b, head) + d);
  }
  for (int i = tid; i < p.d_rope; i += kGenericThreads) qr_s[i] = load_q(p.qr, p.q_bf16, qr_offset(p, b, head) + i);
  float bias[NMOD];
#pragma unroll
  for (int m = 0; m < NMOD; ++m) bias[m] = load_qb(p, m, b, head);
  const float scale_log2 = p.scale * kLog2e;
  const SeqRange sr = seq_range(p, b);
  int t_first, t_end;
  split_tiles(sr.lo, sr.hi, split, g.splits, g.tiles_per_split, t_first, t_end);
  const int jlo = max(sr.lo, t_first * kTile), jhi = min(sr.hi, t_end * kTile);
  const int col0 = cb * kGenericCols, col1 = min(p.r_kv, col0 + kGenericCols);

  float acc[NMOD][kPerThread];
#pragma unroll
  for (int m = 0; m < NMOD; ++m)
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) acc[m][k] = 0.f;
  float m_run = -INFINITY, l[NMOD];
#pragma unroll
  for (int m = 0; m < NMOD; ++m) l[m] = 0.f;
  __syncthreads();

  for (int c0 = jlo; c0 < jhi; c0 += kGenericChunk) {
    const int n = min(kGenericChunk, jhi - c0);
    for (int t = warp; t < kGenericChunk; t += kGenericThreads / 32) {
      const int j = c0 + t;
      if (t < n) {
        const int m = NMOD == 2 ? (p.modality[int64_t(b) * p.t_cap + j] != 0 ? 1 : 0) : 0;
        float dot = 0.f;
        for (int d = lane; d < p.r_kv; d += 32) dot += q_s[m * p.r_kv + d] * load_latent(p, b, j, sr.qlen, d);
        for (int d = lane; d < p.d_rope; d += 32) dot += qr_s[d] * load_krope(p, b, j, sr.qlen, grp * p.d_rope + d);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (lane == 0) {
          s_sm[t] = (dot + (m ? bias[NMOD - 1] : bias[0])) * scale_log2;
          mod_sm[t] = m;
        }
      } else if (lane == 0) {
        s_sm[t] = -INFINITY;
        mod_sm[t] = 0;
      }
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int t = 0; t < n; ++t) mx = fmaxf(mx, s_sm[t]);
    const float m_new = fmaxf(m_run, mx);
    const float alpha = m_new == -INFINITY ? 1.f : exp2f(m_run - m_new);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;
    m_run = m_new;
#pragma unroll
    for (int m = 0; m < NMOD; ++m) {
      l[m] *= alpha;
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) acc[m][k] *= alpha;
    }
    for (int t = 0; t < n; ++t) {
      const float pt = exp2f(s_sm[t] - m_use);
      const int m = mod_sm[t];
      const float p0 = (NMOD == 2 && m) ? 0.f : pt, p1 = (NMOD == 2 && m) ? pt : 0.f;
      l[0] += p0;
      if (NMOD == 2) l[NMOD - 1] += p1;
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {
        const int d = col0 + tid + k * kGenericThreads;
        if (d >= col1) break;
        const float c = load_latent(p, b, c0 + t, sr.qlen, d);
        acc[0][k] += p0 * c;
        if (NMOD == 2) acc[NMOD - 1][k] += p1 * c;
      }
    }
    __syncthreads();
  }

  const Partials w = partials(p, g.total_splits);
  if (cb == 0 && tid == 0) {
    w.m_at(p, split, b, head) = m_run;
#pragma unroll
    for (int m = 0; m < NMOD; ++m) w.mass_at(p, split, m, b, head) = l[m];
  }
#pragma unroll
  for (int m = 0; m < NMOD; ++m) {
    float* out = w.acc_at(p, split, m, b, head);
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int d = col0 + tid + k * kGenericThreads;
      if (d < col1) out[d] = acc[m][k];
    }
  }
}

// ---- external RoPE scores (warp-rows kernel, Geom::rope_ext) ---------------------------------------------
// q_r . k_r for every key of a sequence and every head, in float32: CTA (x, b) takes tiles x, x + gridDim.x, ...
// of sequence b's tiles (64 positions from its first tile's first position), a thread per (token, head) with the
// heads of a token adjacent (the token's RoPE key row read by neighbouring threads, the scores written
// contiguously); positions outside [lo, hi) get 0 (the kernel masks them). The keys: the bf16 store's; int4:
// the quantized positions [lo, qlen) dequantized as dequant_rows does (code * scale + minimum in float32,
// rounded to bf16), the rest from the bf16 ring (row j % window). The queries in shared memory as float32,
// [d_rope][h_q]: a warp's threads (neighbouring heads) read neighbouring words, where [h_q][d_rope] put every
// head of a 32-head warp on one bank (a 32-way conflict on each of the d_rope reads).
constexpr int kRopeScoreThreads = 256;
__global__ void __launch_bounds__(kRopeScoreThreads)
    mla_rope_scores_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  extern __shared__ float q_sm[];
  const int b = blockIdx.y;
  for (int i = threadIdx.x; i < p.h_q * p.d_rope; i += blockDim.x) {
    const int h = i / p.d_rope, d = i - h * p.d_rope;
    q_sm[d * p.h_q + h] = load_q(p.qr, p.q_bf16, qr_offset(p, b, h) + d);
  }
  __syncthreads();
  const SeqRange sr = seq_range(p, b);
  if (sr.hi <= sr.lo) return;
  const int base = sr.lo & ~(kTile - 1), tiles = (sr.hi - 1) / kTile - sr.lo / kTile + 1;
  const int gsize = p.h_q / p.h_kv, hq = p.h_q;
  const bool int4 = p.format == MlaCacheFormat::kInt4;
  const int ng = int4 ? g.hr / p.group_r : 0;  // quantization groups per RoPE-key row
  float* out = p.workspace + g.off_rope_ws + int64_t(b) * g.rope_ws_tokens * p.h_q;
  for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
    for (int idx = threadIdx.x; idx < kTile * p.h_q; idx += blockDim.x) {
      const int i = idx / p.h_q, h = idx - i * p.h_q, j = base + t * kTile + i;
      const float* q = q_sm + h;  // q[d * h_q]: dim d of head h
      const int col = (h / gsize) * p.d_rope;  // the head's kv group's first dim in the row
      float s = 0.f;
      if (j >= sr.lo && j < sr.hi && int4 && j < sr.qlen) {  // quantized: 8 codes (4 bytes) at a time
        const int64_t row = int64_t(b) * p.t_cap + j;
        const uint32_t* codes = reinterpret_cast<const uint32_t*>(p.k_rope_q + row * (g.hr / 2) + col / 2);
        const uint16_t* sc = p.k_rope_scale + row * ng;
        const uint16_t* lo = p.k_rope_lo + row * ng;
        for (int d8 = 0; d8 < p.d_rope / 8; ++d8) {  // (g.hr % 32 == 0 and d_rope % 8 == 0: aligned words)
          const uint32_t w = codes[d8];
          const int gi = (col + 8 * d8) / p.group_r;  // groups are multiples of 8 (rows_geometry)
          const float scale = half_bits_to_float(sc[gi]), mn = half_bits_to_float(lo[gi]);
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            const float x = fmaf(__uint_as_float(((w >> (4 * e)) & 15u) | 0x4B000000u) - 8388608.f, scale, mn);
            s += q[(8 * d8 + e) * hq] * __bfloat162float(__float2bfloat16_rn(x));
          }
        }
      } else if (j >= sr.lo && j < sr.hi) {  // bf16: the store, or (int4) the ring
        const bool ring = int4;
        const uint16_t* keys = reinterpret_cast<const uint16_t*>(ring ? p.k_rope_win : p.k_rope);
        const int64_t row = int64_t(b) * (ring ? p.window : p.t_cap) + (ring ? j % p.window : j);
        const uint4* k = reinterpret_cast<const uint4*>(keys + row * g.hr + col);
        for (int d8 = 0; d8 < p.d_rope / 8; ++d8) {  // 8 bf16 values per 16-byte load (d_rope % 8 == 0)
          const uint4 v = k[d8];
          const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            s += q[(8 * d8 + 2 * e) * hq] * bf16_bits_to_float(uint16_t(w[e] & 0xffffu));
            s += q[(8 * d8 + 2 * e + 1) * hq] * bf16_bits_to_float(uint16_t(w[e] >> 16));
          }
        }
      }
      out[int64_t(t * kTile + i) * p.h_q + h] = s;
    }
  }
}

// ---- combine -----------------------------------------------------------------------------------------
// One CTA per (head, sequence) (kBlock) or one warp (kWarp): weights 2^(m_s - M) per split, then acc and mass
// normalized by the total.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = 0.f;
  for (int i = 0; i < nw; ++i) t += red[i];
  return t;
}
__device__ __forceinline__ float block_max(float v, float* red) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = -INFINITY;
  for (int i = 0; i < nw; ++i) t = fmaxf(t, red[i]);
  return t;
}

// Split s's weight 2^(m_s - M) against the maximum M over the splits (0 for a split without keys).
__device__ __forceinline__ float split_weight(const MlaDecodeParams& p, const Partials& w, int s, int b, int head,
                                              float M) {
  const float ms = w.m_at(p, s, b, head);
  return ms == -INFINITY ? 0.f : exp2f(ms - M);
}

// The normalized columns 4 c4 .. 4 c4 + 3 of modality m's accumulator of (sequence b, head) into the outputs.
__device__ __forceinline__ void store_acc4(const MlaDecodeParams& p, int m, int b, int head, int c4, const float4& v,
                                           float inv) {
  const int64_t o = m * p.acc_stride[0] + b * p.acc_stride[1] + head * p.acc_stride[2] + 4 * int64_t(c4);
  if (p.out_bf16) {
    __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.acc) + o);
    d[0] = __floats2bfloat162_rn(v.x * inv, v.y * inv);  // 4-byte aligned: checked by the host
    d[1] = __floats2bfloat162_rn(v.z * inv, v.w * inv);
  } else {
    float* d = static_cast<float*>(p.acc) + o;
    d[0] = v.x * inv;
    d[1] = v.y * inv;
    d[2] = v.z * inv;
    d[3] = v.w * inv;
  }
}

// The masses over their total (lane/thread 0 of the pair).
__device__ __forceinline__ void store_masses(const MlaDecodeParams& p, int b, int head, float mass0, float mass1,
                                             float inv) {
  const int64_t off = b * p.mass_stride[1] + head * p.mass_stride[2];
  store_out(p.mass, p.out_bf16, off, mass0 * inv);
  if (p.n_mod == 2) store_out(p.mass, p.out_bf16, off + p.mass_stride[0], mass1 * inv);
}

// The block layouts' split weights: wts [n_mod][s4] (s4 = total_splits rounded up to 4, zero tail) gets each split's
// weight 2^(m_s - M) for each modality, 0 where the split has none of its keys; returns the modalities' total masses.
// The maxima and the masses load in one round (the masses wait in wts, each thread's own, until the weights are
// known; a split without keys may have left its masses unwritten: they are read, never used), where the masses' loads
// used to wait for the maximum; `between` runs after those loads are issued (more loads of the same round). Each
// modality's sums keep their order. Every thread of the CTA calls it (block reductions).
template <typename Between>
__device__ __forceinline__ float2 block_split_weights(const MlaDecodeParams& p, const Partials& w, int total_splits,
                                                      int b, int head, float* wts, float* red, Between&& between) {
  const int s4 = (total_splits + 3) / 4 * 4;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < total_splits; s += blockDim.x) {
    mx = fmaxf(mx, w.m_at(p, s, b, head));
    wts[s] = w.mass_at(p, s, 0, b, head);
    if (p.n_mod == 2) wts[s4 + s] = w.mass_at(p, s, 1, b, head);
  }
  between();
  const float M = block_max(mx, red);
  float mass_part0 = 0.f, mass_part1 = 0.f;
  for (int s = threadIdx.x; s < s4; s += blockDim.x) {
    float ws0 = 0.f, ws1 = 0.f;
    if (s < total_splits) {
      const float ws = split_weight(p, w, s, b, head, M);
      if (ws != 0.f) {
        const float a0 = wts[s];
        mass_part0 += ws * a0;
        ws0 = a0 != 0.f ? ws : 0.f;
        if (p.n_mod == 2) {
          const float a1 = wts[s4 + s];
          mass_part1 += ws * a1;
          ws1 = a1 != 0.f ? ws : 0.f;
        }
      }
    }
    wts[s] = ws0;
    if (p.n_mod == 2) wts[s4 + s] = ws1;
  }
  const float mass0 = block_sum(mass_part0, red);
  const float mass1 = p.n_mod == 2 ? block_sum(mass_part1, red) : 0.f;
  return make_float2(mass0, mass1);
}

// Split 0's accumulator row of (sequence b, head) for each modality as float4s (a one-set model's second is its
// first), and the float4s between splits.
__device__ __forceinline__ int64_t split_acc_rows(const MlaDecodeParams& p, const Partials& w, int b, int head,
                                                  const float4* (&src)[2]) {
  const int nc4 = p.r_kv / 4;
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    src[m] = reinterpret_cast<const float4*>(w.acc) + (int64_t(m < p.n_mod ? m : 0) * p.b + b) * p.h_q * int64_t(nc4) +
             int64_t(head) * nc4;
  }
  return int64_t(p.n_mod) * p.b * p.h_q * nc4;
}

// Column quad c's sum over the nsg split groups' partial sums part[k width + c], in group order.
__device__ __forceinline__ float4 sum_split_groups(const float4* part, int c, int width, int nsg) {
  float4 t = part[c];
  for (int k = 1; k < nsg; ++k) {
    const float4 v = part[k * width + c];
    t.x += v.x;
    t.y += v.y;
    t.z += v.z;
    t.w += v.w;
  }
  return t;
}

constexpr int kCombineThreads = 256;
constexpr int kCombineBlocksPerSm = 2048 / kCombineThreads;  // resident CTAs of the block layout an SM

// smem: weights [n_mod][total_splits] (each rounded up to 4, zero tail), then float4 partial sums [256]. A
// split's accumulator of a modality whose mass is 0 is skipped (exact: every term of it was 0), so a kernel
// may leave it unwritten (the warp-rows kernel's modality CTAs do). Grid (h_q, b, column chunks): CTA z takes
// the column quads [z cols4, (z + 1) cols4) (cols4 = r_kv / 4: one CTA a pair), its threads in groups of splits
// where the chunk is narrower than the CTA; the masses from chunk 0.
__global__ void __launch_bounds__(kCombineThreads) mla_decode_combine_kernel(const __grid_constant__ MlaDecodeParams p,
                                                                             int total_splits, int cols4) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  extern __shared__ __align__(16) float csm[];
  const int s4 = (total_splits + 3) / 4 * 4;
  float* wts = csm;  // [n_mod][s4]
  float4* part = reinterpret_cast<float4*>(csm + p.n_mod * s4);
  __shared__ float red[32];
  const int head = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
  const Partials w = partials(p, total_splits);
  const float2 masses = block_split_weights(p, w, total_splits, b, head, wts, red, [] {});
  const float mass0 = masses.x, mass1 = masses.y;
  const float total = mass0 + mass1;
  const float inv = total > 0.f ? 1.f / total : 0.f;  // an empty key range gives zeros
  if (tid == 0 && blockIdx.z == 0) store_masses(p, b, head, mass0, mass1, inv);
  __syncthreads();  // wts written
  // acc: threads = (split group sg, column quad c4); each sums its splits, both modalities' loads in the same
  // rounds (they were a loop over the modalities, one round of loads after the other), then the groups are added
  const int nc4 = p.r_kv / 4;
  const int cbeg = blockIdx.z * cols4, cend = min(nc4, cbeg + cols4);  // this CTA's column quads
  const int width = min(cend - cbeg, kCombineThreads);
  const int nsg = kCombineThreads / width;  // (1 where the chunk is as wide as the CTA)
  const int sg = tid / width;
  const float4* src[2];
  const int64_t split_stride = split_acc_rows(p, w, b, head, src);  // float4s between splits
  for (int c0 = cbeg; c0 < cend; c0 += kCombineThreads) {
    const int c4 = c0 + tid % width;
    float4 a[2] = {make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f)};
    if (sg < nsg && c4 < cend) {
#pragma unroll 4
      for (int s = sg; s < total_splits; s += nsg) {
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          const float ws = m < p.n_mod ? wts[m * s4 + s] : 0.f;
          if (ws != 0.f) {
            const float4 v = src[m][s * split_stride + c4];
            a[m].x += ws * v.x;
            a[m].y += ws * v.y;
            a[m].z += ws * v.z;
            a[m].w += ws * v.w;
          }
        }
      }
    }
#pragma unroll
    for (int m = 0; m < 2; ++m) {  // (unrolled: a[] stays in registers)
      if (m >= p.n_mod) break;
      if (nsg == 1) {
        if (c4 < cend) store_acc4(p, m, b, head, c4, a[m], inv);
        continue;
      }
      if (sg < nsg) part[tid] = a[m];
      __syncthreads();
      if (tid < width) {  // (nsg > 1: the chunk in one pass, c0 = cbeg)
        store_acc4(p, m, b, head, c0 + tid, sum_split_groups(part, tid, width, nsg), inv);
      }
      __syncthreads();
    }
  }
}

// The block combine with the output product after it (MlaDecodePlan::combine_out; params.w_out, o_out): one CTA a
// (head, sequence), its columns in one chunk. The same sums as mla_decode_combine_kernel in the same order (its split
// groups of column quads, the groups added in order), the normalized accumulators and masses rounded as acc/mass
// would hold them into shared memory, then o[b][head] = x . w_out[kv head] over the n_mod r_kv + n_mod rows: thread
// (k group, 8 columns) sums its rows in order, the k groups are added in order (the same bits every run), rounded to
// bf16 once. w_out's rows for the head's kv group are copied into shared memory (cp.async) before the kernel waits
// for the one ahead (weights, no kernel's output), and each thread's first kCombineOutPre splits' accumulators are
// loaded with the maxima, in one round, where the block combine loads them after two barriers.
constexpr int kCombineOutPre = 4;
constexpr int kCombineOutRed = 8 * kCombineThreads;  // floats of the product's partial sums (8 columns a thread)
constexpr int64_t kCombineOutSmemCap = 113 * 1024;  // two CTAs an SM (228 KB)

__host__ __device__ inline int combine_out_rows(const MlaDecodeParams& p) { return p.n_mod * p.r_kv + p.n_mod; }

// Byte offsets in the kernel's dynamic shared memory: w_out's rows (bf16), x (float), the splits' weights, the
// partial sums (also the split groups' float4 sums), and the total.
struct CombineOutLayout {
  int64_t w = 0, x = 0, wts = 0, red = 0, total = 0;
};
__host__ __device__ inline CombineOutLayout combine_out_layout(const MlaDecodeParams& p, int total_splits) {
  CombineOutLayout l;
  const int rows = combine_out_rows(p);
  l.x = (int64_t(rows) * p.d_h * 2 + 15) / 16 * 16;
  l.wts = l.x + round4(rows) * 4;
  l.red = l.wts + int64_t(p.n_mod) * round4(total_splits) * 4;
  l.total = l.red + int64_t(kCombineOutRed) * 4;
  return l;
}

__device__ __forceinline__ float round_like_acc(const MlaDecodeParams& p, float v) {
  return p.out_bf16 ? __bfloat162float(__float2bfloat16_rn(v)) : v;
}

__global__ void __launch_bounds__(kCombineThreads) mla_decode_combine_out_kernel(const __grid_constant__ MlaDecodeParams p,
                                                                                 int total_splits) {
  extern __shared__ __align__(16) unsigned char co_smem[];
  const CombineOutLayout lay = combine_out_layout(p, total_splits);
  __nv_bfloat16* w_rows = reinterpret_cast<__nv_bfloat16*>(co_smem);
  float* xs = reinterpret_cast<float*>(co_smem + lay.x);
  float* wts = reinterpret_cast<float*>(co_smem + lay.wts);
  float* sums = reinterpret_cast<float*>(co_smem + lay.red);
  float4* part = reinterpret_cast<float4*>(sums);
  __shared__ float red[32];
  const int head = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
  const int rows = combine_out_rows(p);
  {
    const int kv = head / (p.h_q / p.h_kv);
    const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(p.w_out) + int64_t(kv) * p.w_out_rows * p.d_h;
    const int pieces = rows * p.d_h / 8;
    for (int i = tid; i < pieces; i += kCombineThreads) {
      tensor_core::cp_async(tensor_core::smem_addr(w_rows + 8 * i), src + 8 * int64_t(i), 16, true);
    }
    tensor_core::cp_async_commit();
  }
  grid_dependency_wait();
  grid_launch_dependents();
  const int s4 = (total_splits + 3) / 4 * 4;
  const Partials w = partials(p, total_splits);
  const int nc4 = p.r_kv / 4;  // <= kCombineThreads (the plan)
  const int nsg = kCombineThreads / nc4;
  const int sg = tid / nc4, c4 = tid % nc4;
  const bool summing = sg < nsg;
  const float4* src[2];
  const int64_t split_stride = split_acc_rows(p, w, b, head, src);  // float4s between splits
  // each thread's first kCombineOutPre splits' accumulators in the maxima's round of loads (a modality's accumulator
  // of a split without its keys may be unwritten: loaded, never used)
  float4 pre[kCombineOutPre][2];
  const float2 masses = block_split_weights(p, w, total_splits, b, head, wts, red, [&] {
#pragma unroll
    for (int i = 0; i < kCombineOutPre; ++i) {
      const int s = sg + i * nsg;
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        pre[i][m] = summing && s < total_splits && m < p.n_mod ? src[m][s * split_stride + c4]
                                                               : make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  });
  const float mass0 = masses.x, mass1 = masses.y;
  const float total = mass0 + mass1;
  const float inv = total > 0.f ? 1.f / total : 0.f;  // an empty key range gives zeros
  if (tid == 0) {
    xs[p.n_mod * p.r_kv] = round_like_acc(p, mass0 * inv);
    if (p.n_mod == 2) xs[p.n_mod * p.r_kv + 1] = round_like_acc(p, mass1 * inv);
  }
  __syncthreads();  // wts written
  float4 a[2] = {make_float4(0.f, 0.f, 0.f, 0.f), make_float4(0.f, 0.f, 0.f, 0.f)};
  auto add = [&](float4& acc, float ws, const float4& v) {
    acc.x += ws * v.x;
    acc.y += ws * v.y;
    acc.z += ws * v.z;
    acc.w += ws * v.w;
  };
  if (summing) {
#pragma unroll
    for (int i = 0; i < kCombineOutPre; ++i) {
      const int s = sg + i * nsg;
      if (s < total_splits) {
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          const float ws = m < p.n_mod ? wts[m * s4 + s] : 0.f;
          if (ws != 0.f) add(a[m], ws, pre[i][m]);
        }
      }
    }
#pragma unroll 4
    for (int s = sg + kCombineOutPre * nsg; s < total_splits; s += nsg) {
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const float ws = m < p.n_mod ? wts[m * s4 + s] : 0.f;
        if (ws != 0.f) add(a[m], ws, src[m][s * split_stride + c4]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < 2; ++m) {  // the split groups' sums added in order, normalized, rounded into x
    if (m >= p.n_mod) break;
    if (summing) part[tid] = a[m];
    __syncthreads();
    if (tid < nc4) {
      const float4 t = sum_split_groups(part, tid, nc4, nsg);
      float* x = xs + m * p.r_kv + 4 * tid;
      x[0] = round_like_acc(p, t.x * inv);
      x[1] = round_like_acc(p, t.y * inv);
      x[2] = round_like_acc(p, t.z * inv);
      x[3] = round_like_acc(p, t.w * inv);
    }
    __syncthreads();
  }
  tensor_core::cp_async_wait<0>();
  __syncthreads();  // w_out's rows arrived in every thread's view
  // the product: thread (k group kg, columns 8 c8 .. 8 c8 + 7), rows kg, kg + nkg, ...
  const int c8s = p.d_h / 8, nkg = kCombineThreads / c8s;
  const int c8 = tid % c8s, kg = tid / c8s;
  float y[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int k = kg; k < rows; k += nkg) {
    const float xv = xs[k];
    const uint4 wv = *reinterpret_cast<const uint4*>(w_rows + int64_t(k) * p.d_h + 8 * c8);
    const uint32_t pieces[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&pieces[j]));
      y[2 * j] = fmaf(xv, f.x, y[2 * j]);
      y[2 * j + 1] = fmaf(xv, f.y, y[2 * j + 1]);
    }
  }
  float4* mine = reinterpret_cast<float4*>(sums + kg * p.d_h + 8 * c8);
  mine[0] = make_float4(y[0], y[1], y[2], y[3]);
  mine[1] = make_float4(y[4], y[5], y[6], y[7]);
  __syncthreads();
  __nv_bfloat16* o = static_cast<__nv_bfloat16*>(p.o_out) + (int64_t(b) * p.h_q + head) * p.d_h;
  for (int c = tid; c < p.d_h; c += kCombineThreads) {
    float t = 0.f;
    for (int k = 0; k < nkg; ++k) t += sums[k * p.d_h + c];
    o[c] = __float2bfloat16_rn(t);
  }
}

// kWarp: one warp a (sequence, head), kCombineWarps pairs a CTA, no barriers. kBlock's CTA a pair (eleven barriers
// at r_kv 128 over two sets) runs in waves of short dependent loads at large batches (7,168 CTAs at b = 256 x 28
// heads); there the warps take 0-8% off the decode call (H200, BENCHMARKS.md session 15). Lane l takes splits l,
// l + 32, ... for the maximum and the masses, and columns 4 l .. 4 l + 3 (then 128 on) of each split's
// accumulator, the splits in order, four loads in flight; a modality's accumulator of a split without its keys is
// skipped, as kBlock skips it. Every lane takes part in the shuffles (lanes past r_kv / 4 skip their loads only).
constexpr int kCombineWarps = 8;
__global__ void __launch_bounds__(kCombineWarps * 32) mla_decode_combine_warp_kernel(
    const __grid_constant__ MlaDecodeParams p, int total_splits) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  const int lane = threadIdx.x & 31;
  const int64_t pair = int64_t(blockIdx.x) * kCombineWarps + (threadIdx.x >> 5);
  if (pair >= int64_t(p.b) * p.h_q) return;  // (whole warps)
  const int b = int(pair / p.h_q), head = int(pair % p.h_q);
  const Partials w = partials(p, total_splits);
  float mx = -INFINITY;
  for (int s = lane; s < total_splits; s += 32) mx = fmaxf(mx, w.m_at(p, s, b, head));
  const float M = warp_max(mx);
  float mass0 = 0.f, mass1 = 0.f;
  for (int s = lane; s < total_splits; s += 32) {
    const float ws = split_weight(p, w, s, b, head, M);
    if (ws != 0.f) {
      mass0 += ws * w.mass_at(p, s, 0, b, head);
      if (p.n_mod == 2) mass1 += ws * w.mass_at(p, s, 1, b, head);
    }
  }
  mass0 = warp_sum(mass0);
  mass1 = p.n_mod == 2 ? warp_sum(mass1) : 0.f;
  const float total = mass0 + mass1;
  const float inv = total > 0.f ? 1.f / total : 0.f;  // an empty key range gives zeros
  if (lane == 0) store_masses(p, b, head, mass0, mass1, inv);
  const int nc4 = p.r_kv / 4;
  const int64_t split_stride = int64_t(p.n_mod) * p.b * p.h_q * nc4;  // float4s between splits
  for (int m = 0; m < p.n_mod; ++m) {
    const float4* src = reinterpret_cast<const float4*>(w.acc) + (int64_t(m) * p.b + b) * p.h_q * int64_t(nc4) +
                        int64_t(head) * nc4;
    for (int c0 = 0; c0 < nc4; c0 += 32) {
      const int c4 = c0 + lane;
      float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int s0 = 0; s0 < total_splits; s0 += 32) {
        float wl = 0.f;  // lane l: split s0 + l's weight, where it has keys of modality m
        if (s0 + lane < total_splits) {
          const float ws = split_weight(p, w, s0 + lane, b, head, M);
          if (ws != 0.f && w.mass_at(p, s0 + lane, m, b, head) != 0.f) wl = ws;
        }
        unsigned live = __ballot_sync(0xffffffffu, wl != 0.f);  // the same on every lane
        while (live != 0u) {
          float4 v[4];
          float wk[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const int j = live != 0u ? __ffs(live) - 1 : 0;
            wk[k] = __shfl_sync(0xffffffffu, wl, j);
            if (live == 0u) wk[k] = 0.f;
            v[k] = wk[k] != 0.f && c4 < nc4 ? src[(s0 + j) * split_stride + c4] : make_float4(0.f, 0.f, 0.f, 0.f);
            live &= live - 1u;
          }
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            a.x += wk[k] * v[k].x;
            a.y += wk[k] * v[k].y;
            a.z += wk[k] * v[k].z;
            a.w += wk[k] * v[k].w;
          }
        }
      }
      if (c4 < nc4) store_acc4(p, m, b, head, c4, a, inv);
    }
  }
}
}  // namespace mla_decode_detail

namespace {
using namespace mla_decode_detail;

// ---- host: validation, planning, dispatch ---------------------------------------------------------------
void check_sizes(const MlaDecodeParams& p) {
  VLM2MLA_CHECK(p.b > 0 && p.h_q > 0 && p.h_kv > 0 && p.t_cap > 0, ArgumentError,
                "mla_decode: b, h_q, h_kv and t_cap must be positive (got b=", p.b, ", h_q=", p.h_q,
                ", h_kv=", p.h_kv, ", t_cap=", p.t_cap, ")");
  VLM2MLA_CHECK(p.h_q % p.h_kv == 0, ArgumentError, "mla_decode: h_q (", p.h_q, ") must be a multiple of h_kv (",
                p.h_kv, ")");
  VLM2MLA_CHECK(p.r_kv > 0 && p.r_kv % 8 == 0, ArgumentError, "mla_decode: r_kv must be a positive multiple of 8 (got ",
                p.r_kv, ")");
  VLM2MLA_CHECK(p.d_rope > 0 && p.d_rope % 2 == 0, ArgumentError,
                "mla_decode: d_rope must be positive and even (got ", p.d_rope, ")");
  VLM2MLA_CHECK(p.n_mod == 1 || p.n_mod == 2, ArgumentError, "mla_decode: n_mod must be 1 or 2 (got ", p.n_mod, ")");
  VLM2MLA_CHECK(p.max_length >= 0, ArgumentError, "mla_decode: max_length must be >= 0");
  VLM2MLA_CHECK(p.qa && p.qr && p.start && p.length && p.acc && p.mass, ArgumentError,
                "mla_decode: qa, qr, start, length, acc and mass must be set");
  VLM2MLA_CHECK(p.n_mod == 1 || p.modality, ArgumentError, "mla_decode: two modalities need the modality array");
  VLM2MLA_CHECK(!p.o_out == !p.w_out && (!p.o_out || (p.d_h > 0 && p.w_out_rows >= combine_out_rows(p))),
                ArgumentError, "mla_decode: o_out needs w_out (and back), d_h > 0 and w_out_rows >= n_mod * r_kv + "
                "n_mod (got d_h=", p.d_h, ", w_out_rows=", p.w_out_rows, ")");
  VLM2MLA_CHECK(!p.split_bounds || (p.bound_segments >= 1 && p.bound_segments <= kMaxSplitSegments), ArgumentError,
                "mla_decode: split_bounds needs bound_segments in [1, ", kMaxSplitSegments, "] (got ", p.bound_segments,
                ")");
  switch (p.format) {
    case MlaCacheFormat::kBf16:
      VLM2MLA_CHECK(p.latent && p.k_rope, ArgumentError, "mla_decode: the bf16 format needs latent and k_rope");
      break;
    case MlaCacheFormat::kInt4: {
      const int hr = p.h_kv * p.d_rope;
      VLM2MLA_CHECK(p.latent_q && p.latent_scale && p.latent_lo && p.k_rope_q && p.k_rope_scale && p.k_rope_lo,
                    ArgumentError, "mla_decode: the int4 format needs latent_q/scale/lo and k_rope_q/scale/lo");
      VLM2MLA_CHECK(p.group_c > 0 && p.r_kv % p.group_c == 0 && p.group_c % 2 == 0, ArgumentError,
                    "mla_decode: group_c (", p.group_c, ") must be even and divide r_kv (", p.r_kv, ")");
      VLM2MLA_CHECK(p.group_r > 0 && hr % p.group_r == 0 && p.group_r % 2 == 0, ArgumentError,
                    "mla_decode: group_r (", p.group_r, ") must be even and divide h_kv * d_rope (", hr, ")");
      VLM2MLA_CHECK(p.window >= 0, ArgumentError, "mla_decode: window must be >= 0");
      VLM2MLA_CHECK(p.window == 0 || (p.latent_win && p.k_rope_win), ArgumentError,
                    "mla_decode: window > 0 needs latent_win and k_rope_win");
      break;
    }
  }
}

struct Device {
  int sms = 0;
  int smem_optin = 0;
  int major = 0, minor = 0;  // compute capability
};
Device device_info() {
  int dev = 0;
  VLM2MLA_CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  Device d;
  d.sms = current_device_sms();
  VLM2MLA_CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
                     "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  VLM2MLA_CUDA_CHECK(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev),
                     "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
  VLM2MLA_CUDA_CHECK(cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, dev),
                     "cudaDeviceGetAttribute(ComputeCapabilityMinor)");
  return d;
}
KernelFn tc_kernel(const MlaDecodeParams& p, int mt, int ntw, bool codes) {
  if (codes) return tc_kernel_codes(p.n_mod, mt, ntw);
  return p.format == MlaCacheFormat::kInt4 ? tc_kernel_int4(p.n_mod, mt, ntw) : tc_kernel_bf16(p.n_mod, mt, ntw);
}
// The warp-rows kernel; with p.specialized, the instance built for these sizes where there is one (its
// grouped-rows twin where h_q is kSpecHeadsPerGroup heads per kv group and the layout has one, else the masked
// one). `specialized`: the level taken (0: the generic instance).
// cs: column splits (rows_geometry: r_kv > 256, so never the sizes of the specialized instances); ext: the
// external RoPE scores (Geom::rope_ext; r_kv > 128, never those sizes either).
// pure_only: the modality CTAs' pure splits' instance, at the level `specialized` gives (that of the main one:
// the same geometry), or nullptr where there is none.
KernelFn rows_kernel(const MlaDecodeParams& p, int mt, int no, bool modality_ctas, int cs, bool ext,
                     int& specialized, bool pure_only = false) {
  auto get = [&](int spec) {
    return p.format == MlaCacheFormat::kInt4
               ? rows_kernel_int4(p.n_mod, mt, no, modality_ctas, spec, cs, ext, pure_only)
               : rows_kernel_bf16(p.n_mod, mt, no, modality_ctas, spec, cs, ext, pure_only);
  };
  if (pure_only) return get(specialized);
  const bool sizes = p.r_kv == kSpecRkv && p.h_kv * p.d_rope == kSpecHr && p.d_rope == kSpecDrope;
  const bool grouped = p.h_q == kSpecHeadsPerGroup * p.h_kv;
  specialized = !sizes ? 0 : p.specialized == 2 && !grouped ? 1 : p.specialized;
  for (; specialized > 0; --specialized)  // (a layout without a grouped-rows twin: its masked one)
    if (KernelFn fn = get(specialized)) return fn;
  return get(0);
}
KernelFn generic_kernel(const MlaDecodeParams& p) {
  return p.n_mod == 1 ? mla_decode_generic_kernel<1> : mla_decode_generic_kernel<2>;
}

// Raises `fn`'s dynamic shared-memory limit to `smem` (every time: the limit is per function and a later
// plan may have lowered it) and returns how many CTAs of it fit on a multiprocessor (cached).
int prepare_kernel(KernelFn fn, int threads, int64_t smem) {
  VLM2MLA_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(fn),
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
                     "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int64_t>, int> cache;
  int dev = 0;
  VLM2MLA_CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  const auto key = std::make_tuple(dev, reinterpret_cast<const void*>(fn), smem);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  VLM2MLA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, reinterpret_cast<const void*>(fn), threads,
                                                                   size_t(smem)),
                     "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  VLM2MLA_CHECK(n > 0, Error, "mla_decode: the kernel cannot run with ", smem, " bytes of shared memory");
  cache.emplace(key, n);
  return n;
}

int align16(int x) { return (x + 15) / 16 * 16; }

// Largest cp.async size (16, 8, 4) dividing the base address, 64 rows and a sequence's rows; 0 if none.
int chunk_for(const void* base, int64_t row_bytes, int64_t t_cap) {
  const auto addr = reinterpret_cast<uintptr_t>(base);
  for (int c : {16, 8, 4}) {
    if (addr % c == 0 && (kTile * row_bytes) % c == 0 && (t_cap * row_bytes) % c == 0) return c;
  }
  return 0;
}

// Number of 64-aligned tiles a key range of `len` positions can touch.
int max_tiles(int64_t len) { return len > 0 ? int((len + 62) / kTile + 1) : 0; }
// The scores-first kernels' scores pass: its CTAs along the keys (token groups of 128, a grid-stride loop beyond
// 1,024), enough for any key range of up to max_length keys.
int wide_score_groups(int64_t max_length) { return std::max(1, std::min((max_tiles(max_length) + 1) / 2 + 1, 1024)); }

struct FullPlan {
  MlaDecodePlan plan;
  Geom geom;
  KernelFn fn = nullptr;
  KernelFn fn_pure = nullptr;  // plan.pure_launch: the pure splits' instance
};

// Why the bf16 arrays cannot be copied in 16-byte pieces ("" if they can): both tensor-core kernels.
std::string bf16_alignment(const MlaDecodeParams& p) {
  const bool int4 = p.format == MlaCacheFormat::kInt4;
  if (!int4 && !(aligned16(p.latent) && aligned16(p.k_rope))) return "latent/k_rope are not 16-byte aligned";
  if (int4 && p.window > 0 && !(aligned16(p.latent_win) && aligned16(p.k_rope_win)))
    return "latent_win/k_rope_win are not 16-byte aligned";
  return "";
}

// The strides of the bf16 tiles and of the queries, which both tensor-core kernels share (stage_queries and
// the tile loaders read them), and the queries' shared memory for `rows` MMA rows from offset 0 (g.hr set);
// returns the offset after them.
int tile_strides_and_queries(const MlaDecodeParams& p, Geom& g, int rows) {
  g.rope_pad = (p.d_rope + 15) / 16 * 16;
  g.c_stride = (p.r_kv + 8) * 2;
  g.k_stride = (g.hr + 8) * 2;
  g.ql_stride = (p.r_kv + 8) * 2;
  g.qr_stride = (g.rope_pad + 8) * 2;
  g.tile_bytes = kTile * (g.c_stride + g.k_stride);
  auto row_shift = [](int pieces) {  // log2 of a row's 16-byte pieces when they divide kThreads, else -1
    for (int sh = 0; (1 << sh) <= kThreads; ++sh)
      if ((1 << sh) == pieces) return sh;
    return -1;
  };
  g.c_row_shift = p.r_kv % 8 == 0 ? row_shift(p.r_kv / 8) : -1;
  g.k_row_shift = g.hr % 8 == 0 ? row_shift(g.hr / 8) : -1;
  int off = 0;
  g.off_qlat = off;
  off += align16(rows * g.ql_stride);
  g.off_qrope = off;
  off += align16(rows * g.qr_stride);
  return off;
}

// Why the tensor-core kernel cannot take these sizes ("" if it can); fills the geometry when it can.
std::string tc_geometry(const MlaDecodeParams& p, const Device& dev, bool codes, Geom& g, int& mt, int& ntw) {
  const bool int4 = p.format == MlaCacheFormat::kInt4;
  g.hr = p.h_kv * p.d_rope;
  if (p.r_kv % 16 != 0) return "r_kv is not a multiple of 16";
  if (p.r_kv > 512) return "r_kv > 512";
  if (p.d_rope % 8 != 0) return "d_rope is not a multiple of 8";
  if (const std::string why = bf16_alignment(p); !why.empty()) return why;
  if (int4 && (p.group_c % 8 != 0 || p.group_r % 8 != 0)) return "a quantization group is not a multiple of 8";
  const int ngc = p.r_kv / std::max(p.group_c, 1), ngr = g.hr / std::max(p.group_r, 1);
  if (int4) {
    g.chunk_cq = chunk_for(p.latent_q, p.r_kv / 2, p.t_cap);
    g.chunk_cs = std::min(chunk_for(p.latent_scale, 2 * ngc, p.t_cap), chunk_for(p.latent_lo, 2 * ngc, p.t_cap));
    g.chunk_kq = chunk_for(p.k_rope_q, g.hr / 2, p.t_cap);
    g.chunk_ks = std::min(chunk_for(p.k_rope_scale, 2 * ngr, p.t_cap), chunk_for(p.k_rope_lo, 2 * ngr, p.t_cap));
    if (!g.chunk_cq || !g.chunk_cs || !g.chunk_kq || !g.chunk_ks)
      return "the quantized arrays' rows are not 4-byte aligned (t_cap odd with one group per row?)";
  }
  for (int sh = 0; sh < 31; ++sh) {
    if ((1 << sh) == p.group_c) g.shift_c = sh;
    if ((1 << sh) == p.group_r) g.shift_r = sh;
  }
  const int nt = p.r_kv / 8;  // 8-column output tiles
  ntw = nt <= kWarps ? 1 : nt <= 2 * kWarps ? 2 : nt <= 4 * kWarps ? 4 : 8;
  const int mt_needed = (p.h_q * p.n_mod + 15) / 16;
  mt = (mt_needed <= 2 || ntw == 8) ? 2 : 4;
  const int rows = mt * 16;
  int off = tile_strides_and_queries(p, g, rows);
  g.p_stride = (kTile + 8) * 2;
  g.off_p = off;
  off += align16(rows * g.p_stride);
  g.off_red = off;
  off += align16(2 * kWarps * rows * 4);
  if (codes) {
    if (!int4) return "products on the codes need an int4 cache";
    if (p.group_c % 16 != 0 || p.group_r % 16 != 0) return "products on the codes need groups that are multiples of 16";
    if (p.d_rope % 16 != 0) return "products on the codes need d_rope % 16 == 0";
    if (p.r_kv / p.group_c > 8) return "products on the codes take at most 8 latent groups per token";
    g.n_gc = p.r_kv / p.group_c;
    g.n_rk = p.d_rope / 16;
    g.off_qs = off;
    off += align16(rows * (g.n_gc + g.n_rk) * 4);
  }
  g.off_tiles = off;
  off += (int4 ? 1 : kBf16Stages) * g.tile_bytes;
  if (int4) {
    int r = 0;
    g.raw_cq = r;
    r += align16(kTile * p.r_kv / 2);
    g.raw_cs = r;
    r += align16(kTile * 2 * ngc);
    g.raw_cl = r;
    r += align16(kTile * 2 * ngc);
    g.raw_kq = r;
    r += align16(kTile * g.hr / 2);
    g.raw_ks = r;
    r += align16(kTile * 2 * ngr);
    g.raw_kl = r;
    r += align16(kTile * 2 * ngr);
    g.raw_bytes = r;
    g.off_raw = off;
    off += kRawStages * r;
  }
  g.smem_bytes = off;
  if (off > dev.smem_optin) return "the tiles need more shared memory than the device has";
  return "";
}

// The warp-rows kernel's merge after the tiles, in the tiles' region: maxima [parts][rows], sums [rows],
// O [rows][r_kv + 4] (floats); parts = kWarps / (mt cs).
int rows_merge_bytes(const MlaDecodeParams& p, int mt, int cs) {
  const int rows = mt * 16;
  return 4 * ((kWarps / (mt * cs)) * rows + rows + rows * (p.r_kv + 4));
}

// The warp-rows kernel's 16-row m-tiles per CTA for `rows` rows of a head block (more rows: more blocks).
int rows_m_tiles(int rows) { return rows <= 32 ? 2 : 4; }

// Why the warp-rows kernel cannot take these sizes ("" if it can); fills the geometry when it can.
// modality_ctas: one modality's rows per CTA (two-set models), else both modalities' rows in each CTA.
// cs: its column splits (2 for r_kv > 256: O's 16 rows x r_kv over two warps, which add their partial scores).
// rope_ext: the RoPE scores computed apart (Geom::rope_ext), the tiles (and the int4 pieces) the latent's alone.
// too_wide: set where the sizes fail on the RoPE key's room (shared memory, or int4 pieces a thread).
std::string rows_geometry_with(const MlaDecodeParams& p, const Device& dev, bool modality_ctas, bool rope_ext,
                               Geom& g, int& mt, int& no, int& cs, bool& too_wide) {
  const bool int4 = p.format == MlaCacheFormat::kInt4;
  too_wide = false;
  g = Geom{};
  g.hr = p.h_kv * p.d_rope;
  g.rope_ext = rope_ext ? 1 : 0;
  const int hr_tiled = rope_ext ? 0 : g.hr;  // the RoPE values a token in the tiles
  if (p.r_kv % 16 != 0) return "r_kv is not a multiple of 16";
  cs = p.r_kv > 256 ? 2 : 1;
  if (p.r_kv > 512) return "r_kv > 512 (the O accumulators of 16 rows x r_kv / 2 live in one warp's registers)";
  if (cs == 2 && p.r_kv % 32 != 0) return "r_kv > 256 and not a multiple of 32 (two column slices of 16-wide k-steps)";
  if (p.d_rope % 8 != 0) return "d_rope is not a multiple of 8";
  const int rows = modality_ctas ? p.h_q : p.h_q * p.n_mod;
  if (rows <= 16) {
    return modality_ctas ? "16 heads or fewer (modality CTAs hold one modality's rows)"
                         : "16 rows or fewer (h_q * n_mod): half the warps would have no rows";
  }
  if (cs == 2 && rows > 32) return "r_kv > 256 with more than 32 rows a CTA (column splits take two m-tiles)";
  if (const std::string why = bf16_alignment(p); !why.empty()) return why;
  no = p.r_kv <= 128 ? 16 : 32;
  if (int4) {
    if (p.r_kv % 32 != 0 || g.hr % 32 != 0) return "int4 rows are not whole 16-byte pieces (r_kv or h_kv*d_rope % 32)";
    if (!aligned16(p.latent_q) || !aligned16(p.k_rope_q)) return "the int4 codes are not 16-byte aligned";
    for (int group : {p.group_c, p.group_r})
      if (group != 16 && group % 32 != 0) return "an int4 group is neither 16 nor a multiple of 32";
    // groups of 16: a piece loads its two groups' scales (and minima) as one 32-bit word (fetch_piece)
    if (p.group_c == 16 && !(aligned4(p.latent_scale) && aligned4(p.latent_lo)))
      return "latent_scale/latent_lo are not 4-byte aligned (groups of 16 load two scales at once)";
    if (p.group_r == 16 && !(aligned4(p.k_rope_scale) && aligned4(p.k_rope_lo)))
      return "k_rope_scale/k_rope_lo are not 4-byte aligned (groups of 16 load two scales at once)";
    const int chunks = cs > 1 ? kRowsWideChunks : no / 8;
    if (2 * (p.r_kv + hr_tiled) > kThreads * chunks) {
      too_wide = true;
      return "too many int4 pieces per thread (h_kv*d_rope too wide)";
    }
    g.q_groups_c = p.r_kv / p.group_c;
    g.q_groups_r = g.hr / p.group_r;
  }
  mt = rows_m_tiles(rows);
  int off = tile_strides_and_queries(p, g, mt * 16);
  g.off_mods = off;
  off += 2 * kTile;
  g.off_tmask = off;
  off += 2 * kWarps * 4 + 3 * kThreads;
  if (cs > 1) {  // the warps' partial scores: NS n-tiles of 4 floats per lane, NS = (64 / token parts) / 8
    off = align16(off);
    g.off_xch = off;
    const int parts = kWarps / (mt * cs);
    off += kWarps * (kTile / parts / 8) * 32 * 16;
  }
  if (int4) {  // the threads' int4 code slots (16 bytes per piece)
    g.off_raw = off;
    off += kThreads * (cs > 1 ? kRowsWideChunks : no / 8) * 16;
  }
  g.off_tiles = off;
  if (rope_ext) {  // the instances with that path: one modality's rows (one set or modality CTAs), 2 m-tiles
    if (p.n_mod == 2 && !modality_ctas) return "external RoPE scores in the joint layout (no instance)";
    if (mt != 2) return "external RoPE scores with more than 32 rows a CTA (no instance)";
    g.tile_bytes = kTile * g.c_stride;
  }
  // two bf16 tile stages; int4 with column splits one (the kernel's kOneStage)
  off += std::max((int4 && cs > 1 ? 1 : 2) * g.tile_bytes, rows_merge_bytes(p, mt, cs));
  g.smem_bytes = off;
  if (off > dev.smem_optin) {
    too_wide = true;
    return "the tiles need more shared memory than the device has";
  }
  return "";
}

// rows_geometry_with the RoPE key in the tiles; where it does not fit them (shared memory, or int4 pieces a
// thread: MHA models, h_kv * d_rope = h_q R) and r_kv > 128 (the instances with 32 output n-tiles a warp, which
// have that path), with its scores computed apart (mla_rope_scores_kernel, into the workspace).
std::string rows_geometry(const MlaDecodeParams& p, const Device& dev, bool modality_ctas, Geom& g, int& mt,
                          int& no, int& cs) {
  bool too_wide = false;
  std::string why = rows_geometry_with(p, dev, modality_ctas, false, g, mt, no, cs, too_wide);
  if (too_wide && p.r_kv > 128) {
    Geom ge;
    int mt_e = 0, no_e = 0, cs_e = 1;
    bool still_wide = false;
    if (rows_geometry_with(p, dev, modality_ctas, true, ge, mt_e, no_e, cs_e, still_wide).empty()) {
      g = ge;
      mt = mt_e;
      no = no_e;
      cs = cs_e;
      return "";
    }
  }
  return why;
}

// Why the scores-first kernels cannot take these sizes ("" if they can); fills their geometry when they can.
std::string wide_geometry(const MlaDecodeParams& p, const Device& dev, Geom& g) {
  g = Geom{};
  g.hr = p.h_kv * p.d_rope;
  if (p.r_kv % 64 != 0) return "r_kv is not a multiple of 64";
  if (p.h_q % 4 != 0) return "h_q is not a multiple of 4 (the scores move in 16-byte pieces of 4 heads)";
  if (p.d_rope % 8 != 0) return "d_rope is not a multiple of 8";
  if (const std::string why = bf16_alignment(p); !why.empty()) return why;
  if (p.format == MlaCacheFormat::kInt4) {
    if (p.group_c % 8 != 0 || p.group_r % 8 != 0) return "a quantization group is not a multiple of 8";
    if (!aligned16(p.latent_q) || !aligned16(p.k_rope_q)) return "the int4 codes are not 16-byte aligned";
  }
  g.wide_hb = std::min(p.h_q, wide_rows_per_block() / p.n_mod);
  g.wide_col_blocks = (p.r_kv + wide_value_cols() - 1) / wide_value_cols();
  {  // the absorbed queries as 16-byte vectors: 8 bf16 or 4 float32 values, rows and modalities on 16-byte bounds
    const int per = p.q_bf16 ? 8 : 4;
    g.wide_qvec = aligned16(p.qa) && p.qa_stride[0] % per == 0 && p.qa_stride[1] % per == 0 &&
                  p.qa_stride[2] % per == 0;
    // else bf16 pairs on 4-byte bounds (the model's views: rows of n_mod r_kv + n_mod values, 16-byte aligned
    // only when n_mod r_kv + n_mod is a multiple of 8)
    g.wide_qpair = !g.wide_qvec && p.q_bf16 && reinterpret_cast<uintptr_t>(p.qa) % 4 == 0 &&
                   p.qa_stride[0] % 2 == 0 && p.qa_stride[1] % 2 == 0 && p.qa_stride[2] % 2 == 0;
  }
  g.rope_ext = 1;
  g.smem_bytes = std::max(wide_scores_smem_bytes(), wide_values_smem_bytes());
  if (g.smem_bytes > dev.smem_optin) return "the tiles need more shared memory than the device has";
  return "";
}

// The splits of a key range of `tiles` 64-token tiles: as many as `capacity` CTAs hold groups of `per_split`
// (at least one), at most one a tile, and at least `min_tiles` tiles each, but at most `max_tiles` tiles each
// where that is positive (it wins); sets plan.tiles_per_split and plan.splits (the last split takes what is left).
void size_splits(MlaDecodePlan& plan, int tiles, int64_t capacity, int64_t per_split, int min_tiles,
                 int max_tiles = 0) {
  int splits = int(std::max<int64_t>(1, capacity / per_split));
  splits = std::max(1, std::min({splits, tiles, (tiles + min_tiles - 1) / min_tiles}));
  if (max_tiles > 0) splits = std::max(splits, std::min(tiles, (tiles + max_tiles - 1) / max_tiles));
  plan.tiles_per_split = std::max(1, (tiles + splits - 1) / splits);
  plan.splits = std::max(1, (tiles + plan.tiles_per_split - 1) / plan.tiles_per_split);
}

// Why the combine cannot take the output product (params.o_out given: check_sizes has checked w_out, d_h and its rows),
// or nullptr.
const char* combine_out_refusal(const MlaDecodeParams& p, const MlaDecodePlan& plan, int total_splits, const Device& dev) {
  if (plan.warp_combine) return "the combine takes a warp a (sequence, head) here (large batches)";
  if (plan.combine_chunks != 1) return "the combine splits a pair's columns over CTAs here (a wide latent, few pairs)";
  if (p.r_kv % 4 != 0 || p.r_kv / 4 > kCombineThreads) return "r_kv is not a multiple of 4 up to 1,024";
  if (p.d_h < 8 || p.d_h % 8 != 0 || kCombineThreads % (p.d_h / 8) != 0) {
    return "d_h is not 8 times a divisor of 256 (8, 16, .., 2,048)";
  }
  if (!aligned16(p.w_out)) return "w_out does not start on a 16-byte bound";
  const int64_t smem = combine_out_layout(p, total_splits).total;
  if (smem > std::min<int64_t>(kCombineOutSmemCap, dev.smem_optin)) {
    return "w_out's rows for a kv head and the splits' weights need more than 113 KB of shared memory";
  }
  return nullptr;
}

// The plan's common part once a kernel and its splits are chosen: the partials' layout, the workspace, the combine.
void finish_plan(const MlaDecodeParams& p, const Device& dev, FullPlan& fp) {
  MlaDecodePlan& plan = fp.plan;
  Geom& g = fp.geom;
  g.splits = plan.splits;
  g.ring_splits = plan.ring_splits;
  g.tiles_per_split = plan.tiles_per_split;
  g.total_splits = (plan.splits + plan.ring_splits) * (plan.modality_ctas ? 2 : 1);
  plan.workspace_floats = workspace_floats_for(p, g.total_splits);
  // kAuto: one warp a (sequence, head) from half a wave of the block layout's CTAs (8 of 256 threads an SM) on.
  // Measured on the H200 (docs/KERNELS.md, "The combine"): 2-4% less decode time at b = 32 x 28 heads (896 pairs
  // on 132 SMs), 0-8% at b = 256, 3% at int4's b = 768; 2-5% more at b = 8 (224 pairs; 33 splits: two rounds of a
  // lane's).
  const int64_t pairs = int64_t(p.b) * p.h_q;
  plan.warp_combine = p.combine == MlaDecodeCombine::kWarp ||
                      (p.combine == MlaDecodeCombine::kAuto && 2 * pairs >= int64_t(kCombineBlocksPerSm) * dev.sms);
  // kAuto's block layout over fewer pairs than a quarter of a wave of its CTAs: each pair's columns in chunks of
  // at least 64 quads (256 columns), as many as fill that quarter (kColumns: all of them). At one sequence of
  // LLaVA-1.5 d_kv 32 (32 pairs, r_kv 1,024, 65 splits) one CTA a pair took 42 us of a 130 us decode call
  // (Nsight Compute); in chunks, decode calls at b = 1-2 took 5-23% less (r_kv 512-2,048), at b = 8 0.4-2% more
  // (H200, session 16).
  const int64_t most_chunks = std::max<int64_t>(1, p.r_kv / 4 / 64);
  if (p.combine == MlaDecodeCombine::kColumns) {
    plan.combine_chunks = int(most_chunks);
  } else if (p.combine == MlaDecodeCombine::kAuto && !plan.warp_combine) {
    const int64_t quarter_wave = int64_t(kCombineBlocksPerSm) * dev.sms / 4;
    plan.combine_chunks = int(std::clamp<int64_t>(quarter_wave / std::max<int64_t>(1, pairs), 1, most_chunks));
  }
  if (p.o_out) {
    const char* why = combine_out_refusal(p, plan, g.total_splits, dev);
    plan.combine_out = why == nullptr;
    if (why) plan.why_not_combine_out = why;
  }
  if (g.rope_ext) {  // the external RoPE scores after the partials: [b][tokens][h_q], tokens covering any key range
    plan.rope_scores = true;
    g.off_rope_ws = round4(plan.workspace_floats);
    g.rope_ws_tokens = (p.t_cap + kTile - 1) / kTile * kTile + kTile;
    plan.workspace_floats = g.off_rope_ws + int64_t(p.b) * g.rope_ws_tokens * p.h_q;
  }
}

// The warpgroup-MMA kernel's consumer and producer warpgroups: those asked for, else the defaults (two producers at
// one sequence: there the layout without them took 2-7% more time, its splits of a few tiles each; H200, session 39)
std::pair<int, int> wgmma_layout(const MlaDecodeParams& p) {
  const int producers = p.wgmma_producers > 0   ? p.wgmma_producers
                        : p.wgmma_producers < 0 ? 0
                        : p.b == 1              ? 2
                                                : kWgmmaDefaultProducers;
  return {p.wgmma_consumers > 0 ? p.wgmma_consumers : kWgmmaDefaultConsumers, producers};
}

// Why the warpgroup-MMA kernel (MlaDecodeVariant::kWgmma, mla_decode_wgmma.cu) cannot take the call ("" if it can):
// built for sm_90a and for Qwen2.5-VL-7B's sizes converted with D = 32 over int4 stores alone.
std::string wgmma_refusal(const MlaDecodeParams& p, const Device& dev) {
  if (dev.major != 9 || dev.minor != 0) {
    return "it is built for compute capability 9.0 (sm_90a: H100, H200), this device has " + std::to_string(dev.major) +
           "." + std::to_string(dev.minor);
  }
  if (p.format != MlaCacheFormat::kInt4) return "it reads int4 caches only (bf16 caches: the warp-rows kernel)";
  if (p.r_kv != kWgmmaRkv || p.h_kv != kWgmmaHkv || p.d_rope != kWgmmaDrope || p.h_q != kWgmmaHq) {
    return "it is built for r_kv 128, h_kv 4, d_rope 32, h_q 28 (Qwen2.5-VL-7B converted with D = 32), got r_kv " +
           std::to_string(p.r_kv) + ", h_kv " + std::to_string(p.h_kv) + ", d_rope " + std::to_string(p.d_rope) +
           ", h_q " + std::to_string(p.h_q);
  }
  for (int group : {p.group_c, p.group_r}) {
    if (group != 32 && group != 64 && group != 128) {
      return "it takes int4 groups of 32, 64 or 128 values, got " + std::to_string(group);
    }
  }
  if (!aligned16(p.latent_q) || !aligned16(p.k_rope_q)) return "the int4 codes are not 16-byte aligned";
  if (p.window > 0 && !(aligned16(p.latent_win) && aligned16(p.k_rope_win)))
    return "latent_win/k_rope_win are not 16-byte aligned";
  const auto [consumers, producers] = wgmma_layout(p);
  // groups of 32: a producer thread reads its two chunks' scales (offsets) as one word (without producers, each
  // consumer thread reads one group's)
  if (producers > 0 && ((p.group_c == 32 && !(aligned4(p.latent_scale) && aligned4(p.latent_lo))) ||
                        (p.group_r == 32 && !(aligned4(p.k_rope_scale) && aligned4(p.k_rope_lo)))))
    return "the int4 scales/offsets of groups of 32 are not 4-byte aligned (for its producer warpgroups)";
  if (consumers != 2 && consumers != 3) return "it runs 2 or 3 consumer warpgroups, got " + std::to_string(consumers);
  if (producers != 1 && !((producers == 2 || producers == 0) && consumers == 2)) {
    return "it runs 1 producer warpgroup, or 2 or none with 2 consumers, got " + std::to_string(producers) +
           " producers with " + std::to_string(consumers) + " consumers";
  }
  if (wgmma_smem_bytes(consumers, producers) > dev.smem_optin) return "its shared memory exceeds the device's";
  return "";
}

// The warpgroup-MMA kernel's plan: a CTA a (split, modality, sequence) in the modality CTAs' partials (one set: a
// (split, sequence)), the splits sized as the modality CTAs' of the warp-rows kernel (a tile is mostly one
// modality's: the grid as if by one modality's CTAs), the int4 ring a split of its own.
void plan_wgmma(const MlaDecodeParams& p, const Device& dev, FullPlan& fp) {
  const std::string why = wgmma_refusal(p, dev);
  VLM2MLA_CHECK(why.empty(), ArgumentError, "mla_decode: the wgmma kernel cannot take this call: ", why);
  MlaDecodePlan& plan = fp.plan;
  Geom& g = fp.geom;
  plan.tensor_core = true;
  plan.wgmma = true;
  plan.modality_ctas = p.n_mod == 2;
  plan.head_blocks = 1;
  std::tie(plan.wgmma_consumers, plan.wgmma_producers) = wgmma_layout(p);
  plan.smem_bytes = wgmma_smem_bytes(plan.wgmma_consumers, plan.wgmma_producers);
  fp.fn = wgmma_kernel_int4(plan.wgmma_consumers, plan.wgmma_producers);
  plan.ctas_per_sm = prepare_kernel(fp.fn, 128 * (plan.wgmma_consumers + plan.wgmma_producers), plan.smem_bytes);
  g.shift_c = __builtin_ctz(unsigned(p.group_c));
  g.shift_r = __builtin_ctz(unsigned(p.group_r));
  const int tiles = max_tiles(p.max_length);
  const int64_t per_split = p.b;
  plan.ring_splits = p.window > 0 ? 1 : 0;
  const int64_t capacity = int64_t(dev.sms) * plan.ctas_per_sm - per_split * plan.ring_splits;
  size_splits(plan, tiles, capacity, per_split,
              p.min_tiles_per_split > 0 ? p.min_tiles_per_split : kMinTilesPerSplitModalityCtas,
              p.max_tiles_per_split);
}

FullPlan make_plan(const MlaDecodeParams& p, MlaDecodeVariant variant) {
  check_sizes(p);
  const Device dev = device_info();
  FullPlan fp;
  MlaDecodePlan& plan = fp.plan;
  Geom& g = fp.geom;
  // kAuto over an int4 store at the sizes the warpgroup-MMA kernel is built for, on sm_90a: that kernel (0.77-0.87x
  // the warp-rows kernel's time at 32k keys, b = 8-768, one set and two; 0.78x at one sequence; whole int4 steps
  // 2-17% shorter: docs/KERNELS.md, session 37); anywhere else it refuses, the choices below
  if (variant == MlaDecodeVariant::kWgmma || (variant == MlaDecodeVariant::kAuto && wgmma_refusal(p, dev).empty())) {
    plan_wgmma(p, dev, fp);
    finish_plan(p, dev, fp);
    return fp;
  }
  int mt = 0, ntw = 0, cs = 1;
  const bool codes = variant == MlaDecodeVariant::kTensorCoreCodes;
  const bool int4 = p.format == MlaCacheFormat::kInt4;
  // kAuto (where the wgmma kernel refused): the warp-rows kernel where it takes the sizes, else the split-keys
  // tensor-core kernel, else generic.
  // Two-set models: its modality CTAs where a modality's heads fill its rows (h_q > 16) and, for kAuto, the
  // batch gives at least kModalityCtasMinPairs (sequence, head block) pairs, else the joint layout. Measured
  // on the H200 (docs/KERNELS.md): at b = 32 the modality CTAs take 12-16% less time on text-only keys and
  // the same on image runs; at b = 1..8 they took 3-18% more when first measured (2026-11-29), and since the
  // splits along the segments and the image bound, whole steps at 32k x 8 take 7% less with them (2026-11-30),
  // so the threshold is now one pair.
  std::string why_rows = "not asked for";
  bool modality_ctas = false;
  const bool joint = variant == MlaDecodeVariant::kTensorCoreWarpRowsJoint;
  if (variant == MlaDecodeVariant::kAuto || variant == MlaDecodeVariant::kTensorCoreWarpRows || joint) {
    const int mod_block_heads = rows_m_tiles(p.h_q) * 16;  // one modality's heads per block
    const int64_t pairs = int64_t(p.b) * ((p.h_q + mod_block_heads - 1) / mod_block_heads);
    modality_ctas = p.n_mod == 2 && !joint && p.h_q > 16 &&
                    (variant == MlaDecodeVariant::kTensorCoreWarpRows || pairs >= kModalityCtasMinPairs);
    why_rows = rows_geometry(p, dev, modality_ctas, g, mt, ntw, cs);
    // kAuto, two sets, where the joint layout cannot take the sizes (a wide latent's column splits take at most
    // two m-tiles): the modality CTAs, at any batch, before the split-keys kernel
    if (!why_rows.empty() && variant == MlaDecodeVariant::kAuto && !modality_ctas && p.n_mod == 2 && p.h_q > 16) {
      Geom gm;
      int mt_m = 0, ntw_m = 0, cs_m = 1;
      if (rows_geometry(p, dev, true, gm, mt_m, ntw_m, cs_m).empty()) {
        modality_ctas = true;
        why_rows.clear();
        g = gm;
        mt = mt_m;
        ntw = ntw_m;
        cs = cs_m;
      }
    }
    VLM2MLA_CHECK(variant == MlaDecodeVariant::kAuto || why_rows.empty(), ArgumentError, "mla_decode: the warp-rows ",
                  joint ? "(joint layout) " : "", "tensor-core kernel cannot take these sizes: ", why_rows);
  }
  std::string why;
  const bool cluster_asked = variant == MlaDecodeVariant::kWideCluster;
  const bool wide_asked = variant == MlaDecodeVariant::kWide || cluster_asked;
  if (!why_rows.empty()) {
    g = Geom{};
    why = variant == MlaDecodeVariant::kGeneric ? "the generic kernel was asked for"
          : wide_asked                          ? "the scores-first kernels were asked for"
                                                : tc_geometry(p, dev, codes, g, mt, ntw);
  }
  // kAuto (or kWide): the scores-first kernels where neither tensor-core kernel takes the sizes
  if (!why.empty() && (variant == MlaDecodeVariant::kAuto || wide_asked)) {
    Geom gw;
    const std::string why_wide = wide_geometry(p, dev, gw);
    VLM2MLA_CHECK(!wide_asked || why_wide.empty(), ArgumentError,
                  "mla_decode: the scores-first kernels cannot take these sizes: ", why_wide);
    if (why_wide.empty()) {
      g = gw;
      plan.tensor_core = true;
      plan.wide = true;
      plan.wide_cluster = cluster_asked;
      plan.rope_scores = true;
      plan.head_blocks = (p.h_q + wide_value_heads() - 1) / wide_value_heads();
      if (cluster_asked) {  // the column blocks of a (split, head block, sequence) as one cluster
        VLM2MLA_CHECK(dev.major >= 9, ArgumentError,
                      "mla_decode: the one-pass scores-first kernel needs thread-block clusters (compute capability "
                      ">= 9.0), this device has ", dev.major, ".x");
        VLM2MLA_CHECK(g.wide_col_blocks <= 8, ArgumentError, "mla_decode: the one-pass scores-first kernel takes r_kv "
                      "up to ", 8 * wide_value_cols(), " (clusters of at most 8 column blocks), got ", p.r_kv);
        plan.smem_bytes = wide_cluster_smem_bytes(p.n_mod);
        VLM2MLA_CHECK(plan.smem_bytes <= dev.smem_optin, ArgumentError, "mla_decode: the one-pass scores-first "
                      "kernel needs ", plan.smem_bytes, " bytes of shared memory a CTA, the device has ",
                      dev.smem_optin);
        fp.fn = wide_cluster_kernel(p.n_mod, int4);
        plan.ctas_per_sm = prepare_kernel(fp.fn, kThreads, plan.smem_bytes);
      } else {
        plan.smem_bytes = g.smem_bytes;
        plan.wide_warps = p.wide_warps == 16 ? 16 : 8;
        fp.fn = wide_values_kernel(p.n_mod, int4, plan.wide_warps);
        plan.ctas_per_sm = prepare_kernel(fp.fn, plan.wide_warps * 32, wide_values_smem_bytes());
        prepare_kernel(wide_scores_kernel(false), kThreads, wide_scores_smem_bytes());
        // the scores pass under a wave of CTAs (one sequence of a few thousand keys: 34 CTAs at 4k, latency-bound
        // at 52 of a 130 us decode call, Nsight Compute, H200, session 16): the latent's columns over clusters
        // of 2, 4 or 8 CTAs (at least one 64-column chunk each), as many as keep about one CTA an SM (1/8 over).
        // Measured on the H200 (session 16): 34 CTAs in clusters of 4 (4k x 1), decode calls 9-10% less at
        // r_kv 1,024 and 21-22% at 2,048, LLaVA-1.5-7B steps 2-3% less; 130 in clusters of 2 (16k x 1), steps
        // 2-5% more (not taken now)
        if (p.score_clusters && dev.major >= 9) {
          const int64_t grid = int64_t(wide_score_groups(p.max_length)) * ((p.h_q + g.wide_hb - 1) / g.wide_hb) * p.b;
          const int chunks = p.r_kv / wide_score_chunk_cols();
          while (plan.score_ks < 8 && 8 * grid * 2 * plan.score_ks <= 9 * int64_t(dev.sms) &&
                 2 * plan.score_ks <= chunks)
            plan.score_ks *= 2;
          if (plan.score_ks > 1) prepare_kernel(wide_scores_kernel(true), kThreads, wide_scores_smem_bytes());
        }
      }
      // values CTAs: (split, head block x column block, sequence); a few waves of them, at least 4 tiles a split
      // (each split's partials, n_mod x h_q x r_kv floats, as large as 2-8 tiles of the latent): at one sequence
      // of 4k, LLaVA-1.5 d_kv 32 / 64, 3-5% less time a decode call than one tile a split (H200, session 16)
      const int tiles = max_tiles(p.max_length);
      const int64_t per_split = int64_t(p.b) * plan.head_blocks * g.wide_col_blocks;
      size_splits(plan, tiles, 2 * int64_t(dev.sms) * plan.ctas_per_sm, per_split,
                  p.min_tiles_per_split > 0 ? p.min_tiles_per_split : kMinTilesPerSplitWide, p.max_tiles_per_split);
      plan.ring_splits = 0;  // (the kernels read the ring where they read the store)
    } else {
      why = why + "; scores-first kernels: " + why_wide;
    }
  }
  VLM2MLA_CHECK(!codes || why.empty(), ArgumentError,
                "mla_decode: the tensor-core kernel on int4 codes cannot take these sizes: ", why);
  VLM2MLA_CHECK(variant != MlaDecodeVariant::kTensorCore || why.empty(), ArgumentError,
                "mla_decode: the tensor-core kernel cannot take these sizes: ", why);
  if (plan.wide) {
    // planned above (splits, kernels, shared memory); the workspace below
  } else if (why.empty()) {
    const bool rows = why_rows.empty();
    plan.tensor_core = true;
    plan.warp_rows = rows;
    plan.modality_ctas = rows && modality_ctas;
    plan.m_tiles = mt;
    plan.n_tiles_per_warp = ntw;
    plan.column_splits = rows ? cs : 1;
    const int heads_per_block = plan.modality_ctas ? mt * 16 : mt * 16 / p.n_mod;
    plan.head_blocks = (p.h_q + heads_per_block - 1) / heads_per_block;
    plan.smem_bytes = g.smem_bytes;
    fp.fn = rows ? rows_kernel(p, mt, ntw, plan.modality_ctas, plan.column_splits, g.rope_ext != 0,
                               plan.specialized)
                 : tc_kernel(p, mt, ntw, codes);
    VLM2MLA_CHECK(fp.fn != nullptr, Error, "mla_decode: no tensor-core kernel for m_tiles=", mt, ", n_tiles=", ntw);
    plan.ctas_per_sm = prepare_kernel(fp.fn, kThreads, plan.smem_bytes);
    // the pure splits in a launch of their own (p.pure_splits 2) where their instance exists and fits as many
    // CTAs an SM: the grid is sized by the main kernel's occupancy
    if (plan.modality_ctas && p.pure_splits == 2) {
      int level = plan.specialized;
      fp.fn_pure = rows_kernel(p, mt, ntw, true, plan.column_splits, g.rope_ext != 0, level, true);
      if (fp.fn_pure && prepare_kernel(fp.fn_pure, kThreads, plan.smem_bytes) < plan.ctas_per_sm) fp.fn_pure = nullptr;
      plan.pure_launch = fp.fn_pure != nullptr;
      g.pure_launch = plan.pure_launch ? 1 : 0;
    }
    const int tiles = max_tiles(p.max_length);
    // Modality CTAs: twice the CTAs, but a tile is attended by the CTAs of the modalities it holds, mostly
    // one (images are runs of tokens): the grid is sized as if by one modality's.
    const int64_t per_split = int64_t(p.b) * plan.head_blocks;
    plan.ring_splits = (int4 && p.window > 0) ? 1 : 0;
    const int64_t capacity = int64_t(dev.sms) * plan.ctas_per_sm - per_split * plan.ring_splits;
    // at least min_tiles tiles per split: a small batch would otherwise spread over one tile per CTA, and
    // write (and combine) partials as large as the keys it reads
    // (modality CTAs: 4, measured on the H200 at b = 1..8, where twice the CTAs would otherwise take two
    // waves: docs/KERNELS.md)
    const int min_tiles = p.min_tiles_per_split > 0 ? p.min_tiles_per_split
                          : plan.modality_ctas      ? kMinTilesPerSplitModalityCtas
                                                    : kMinTilesPerSplit;
    // Where the keys hold an image (params.h's image_first): the image CTAs dispatched first, in the plan's own
    // splits, where those put every text CTA in one wave (then the short image CTAs pass through the slots first);
    // else (measured: int4 at b = 768, 1.5 waves of whole-context CTAs, 18% slower a step than the cap) each split's
    // two CTAs side by side, in splits of at most kMaxTilesPerSplitImage tiles. The most a split, where given,
    // wins over both. The modality CTAs' splits follow each sequence's segments where given (params.h's
    // split_bounds): the plan's own chunks of them, and as many more splits as segments (a segment's last chunk may
    // be short), so that every sequence's chunks fit; no cap, and the image CTAs first at any count of waves (the
    // text segments are pure, walked as a text-only context's).
    const bool bounded = plan.modality_ctas && p.split_bounds && p.bound_segments > 0;
    const bool image = plan.modality_ctas && p.holds_image;
    size_splits(plan, tiles, capacity, per_split, min_tiles, p.max_tiles_per_split);
    plan.image_first = image && p.image_first && (bounded || per_split * plan.splits <= capacity);
    if (image && !plan.image_first && !bounded && p.max_tiles_per_split == 0)
      size_splits(plan, tiles, capacity, per_split, min_tiles, kMaxTilesPerSplitImage);
    g.image_first = plan.image_first ? 1 : 0;
    if (bounded) {
      plan.splits += p.bound_segments;
      plan.bound_segments = p.bound_segments;
      g.bound_segments = p.bound_segments;
    }
  } else {
    plan.why_generic = why;
    g = Geom{};
    g.col_blocks = (p.r_kv + kGenericCols - 1) / kGenericCols;
    plan.smem_bytes = int64_t(p.n_mod * p.r_kv + p.d_rope) * 4;
    VLM2MLA_CHECK(plan.smem_bytes <= dev.smem_optin, ArgumentError, "mla_decode: r_kv ", p.r_kv,
                  " needs more shared memory for the queries than the device has");
    fp.fn = generic_kernel(p);
    plan.ctas_per_sm = prepare_kernel(fp.fn, kGenericThreads, plan.smem_bytes);
    plan.head_blocks = p.h_q;
    // the whole key range (ring included) in one set of splits
    const int tiles = max_tiles(p.max_length);
    const int64_t per_split = int64_t(p.b) * p.h_q * g.col_blocks;
    // one CTA per head walks its keys alone: aim for several waves of CTAs
    size_splits(plan, tiles, 4 * int64_t(dev.sms) * plan.ctas_per_sm, per_split, 1);
    plan.ring_splits = 0;
  }
  finish_plan(p, dev, fp);
  return fp;
}

// A kernel of kThreads threads over `grid`, `smem` bytes of dynamic shared memory each, launched with one
// attribute (cudaLaunchKernelEx).
void launch_with(KernelFn fn, dim3 grid, int64_t smem, cudaStream_t stream, cudaLaunchAttribute attr,
                 const MlaDecodeParams& params, const Geom& geom, const char* what, int threads = kThreads) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(unsigned(threads));
  config.dynamicSmemBytes = size_t(smem);
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  VLM2MLA_CUDA_CHECK(cudaLaunchKernelEx(&config, fn, params, geom), what);
}

// ... in thread-block clusters of (1, cluster_y, 1) CTAs (sm_90; grid.y a multiple of cluster_y).
void launch_in_clusters(KernelFn fn, dim3 grid, int cluster_y, int64_t smem, cudaStream_t stream,
                        const MlaDecodeParams& params, const Geom& geom, const char* what) {
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = 1;
  cluster.val.clusterDim.y = unsigned(cluster_y);
  cluster.val.clusterDim.z = 1;
  launch_with(fn, grid, smem, stream, cluster, params, geom, what);
}

}  // namespace

using namespace mla_decode_detail;

MlaDecodePlan plan_mla_decode(const MlaDecodeParams& params, MlaDecodeVariant variant) {
  return make_plan(params, variant).plan;
}

int64_t mla_decode_workspace_floats(const MlaDecodeParams& params, MlaDecodeVariant variant) {
  return make_plan(params, variant).plan.workspace_floats;
}

void launch_mla_decode(const MlaDecodeParams& params, cudaStream_t stream, MlaDecodeVariant variant) {
  const FullPlan fp = make_plan(params, variant);
  const MlaDecodePlan& plan = fp.plan;
  VLM2MLA_CHECK(params.workspace != nullptr && params.workspace_floats >= plan.workspace_floats, ArgumentError,
                "mla_decode: the workspace holds ", params.workspace_floats, " floats, ", plan.workspace_floats,
                " needed");
  VLM2MLA_CHECK(reinterpret_cast<uintptr_t>(params.workspace) % 16 == 0, ArgumentError,
                "mla_decode: the workspace must be 16-byte aligned");
  const int total = fp.geom.total_splits;
  VLM2MLA_CHECK(total <= 65535 && (plan.image_first ? 2 : 1) * int64_t(params.b) <= 65535, ArgumentError,
                "mla_decode: too many splits or sequences");
  if (fp.geom.rope_ext) {
    const dim3 grid(std::max(1, std::min(max_tiles(params.max_length), 1024)), params.b);
    mla_rope_scores_kernel<<<grid, kRopeScoreThreads, size_t(params.h_q) * params.d_rope * 4, stream>>>(params,
                                                                                                       fp.geom);
    VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the RoPE scores kernel");
  }
  if (plan.wide_cluster) {  // the values kernel in clusters of the column blocks, computing the scores
    const dim3 grid(total, plan.head_blocks * fp.geom.wide_col_blocks, params.b);
    VLM2MLA_CHECK(grid.y <= 65535, ArgumentError, "mla_decode: too many head x column blocks");
    launch_in_clusters(fp.fn, grid, fp.geom.wide_col_blocks, plan.smem_bytes, stream, params, fp.geom,
                       "launching the one-pass scores-first kernel (clusters of the column blocks)");
  } else if (plan.wide) {  // the scores (into the RoPE scores' region, in place), then the values per column block
    const int groups = wide_score_groups(params.max_length);
    const int score_blocks = (params.h_q + fp.geom.wide_hb - 1) / fp.geom.wide_hb;
    if (plan.score_ks > 1) {  // the latent's columns over clusters of score_ks CTAs
      launch_in_clusters(wide_scores_kernel(true), dim3(groups, score_blocks * plan.score_ks, params.b), plan.score_ks,
                         wide_scores_smem_bytes(), stream, params, fp.geom,
                         "launching the scores-first kernels' scores pass (clusters over the latent's columns)");
    } else {
      wide_scores_kernel(false)<<<dim3(groups, score_blocks, params.b), kThreads, wide_scores_smem_bytes(),
                                  stream>>>(params, fp.geom);
    }
    VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the scores-first scores kernel");
    const dim3 grid(total, plan.head_blocks * fp.geom.wide_col_blocks, params.b);
    VLM2MLA_CHECK(grid.y <= 65535, ArgumentError, "mla_decode: too many head x column blocks");
    fp.fn<<<grid, plan.wide_warps * 32, wide_values_smem_bytes(), stream>>>(params, fp.geom);
    VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the scores-first values kernel");
  } else if (plan.wgmma) {  // (split, modality) pairs across, the sequences down z; a producer and the consumers
    const dim3 grid(total, 1, params.b);
    const int threads = 128 * (plan.wgmma_consumers + plan.wgmma_producers);
    if (programmatic_launches()) {
      // (pdl.cuh: its launch and its CTAs' start behind the kernel ahead; it waits for that one's results first)
      launch_with(fp.fn, grid, plan.smem_bytes, stream, programmatic_serialization(), params, fp.geom,
                  "launching the wgmma split kernel", threads);
    } else {
      fp.fn<<<grid, threads, plan.smem_bytes, stream>>>(params, fp.geom);
    }
    VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the wgmma split kernel");
  } else if (plan.tensor_core) {
    // (image first: the splits across, the image CTAs' sequences then the text CTAs' down z)
    const dim3 grid(plan.image_first ? total / 2 : total, plan.head_blocks, plan.image_first ? 2 * params.b : params.b);
    if (plan.pure_launch) {
      // the pure splits, whose CTAs the main kernel's then leave; the main one starts once the pure one's CTAs
      // have all started (programmatic stream serialization; mla_decode_rows_kernel)
      fp.fn_pure<<<grid, kThreads, plan.smem_bytes, stream>>>(params, fp.geom);
      VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the tensor-core split kernel (pure splits)");
      launch_with(fp.fn, grid, plan.smem_bytes, stream, programmatic_serialization(), params, fp.geom,
                  "launching the tensor-core split kernel (beside the pure splits')");
    } else {
      fp.fn<<<grid, kThreads, plan.smem_bytes, stream>>>(params, fp.geom);
    }
    VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the tensor-core split kernel");
  } else {
    const dim3 grid(total, params.h_q * fp.geom.col_blocks, params.b);
    VLM2MLA_CHECK(grid.y <= 65535, ArgumentError, "mla_decode: too many heads x column blocks");
    fp.fn<<<grid, kGenericThreads, plan.smem_bytes, stream>>>(params, fp.geom);
    VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the generic split kernel");
  }
  if (plan.combine_out) {
    const int64_t smem = combine_out_layout(params, total).total;
    VLM2MLA_CUDA_CHECK(cudaFuncSetAttribute(mla_decode_combine_out_kernel,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
                       "cudaFuncSetAttribute(the combine with the output product's shared memory)");
    launch_programmatic(mla_decode_combine_out_kernel, dim3(params.h_q, params.b), kCombineThreads, size_t(smem), stream,
                        params, total);
  } else if (plan.warp_combine) {
    const int64_t ctas = (int64_t(params.b) * params.h_q + kCombineWarps - 1) / kCombineWarps;
    VLM2MLA_CHECK(ctas <= std::numeric_limits<int32_t>::max(), ArgumentError,
                  "mla_decode: too many (sequence, head) pairs for the combine kernel");
    launch_programmatic(mla_decode_combine_warp_kernel, unsigned(ctas), kCombineWarps * 32, 0, stream, params, total);
  } else {
    const int64_t combine_smem = int64_t(params.n_mod) * ((total + 3) / 4 * 4) * 4 + kCombineThreads * 16;
    VLM2MLA_CHECK(combine_smem <= 48 * 1024, ArgumentError, "mla_decode: too many splits for the combine kernel");
    const int nc4 = params.r_kv / 4, cols4 = (nc4 + plan.combine_chunks - 1) / plan.combine_chunks;
    launch_programmatic(mla_decode_combine_kernel, dim3(params.h_q, params.b, (nc4 + cols4 - 1) / cols4),
                        kCombineThreads, combine_smem, stream, params, total, cols4);
  }
  VLM2MLA_CUDA_CHECK(cudaGetLastError(), "launching the combine kernel");
}

}  // namespace vlm2mla
