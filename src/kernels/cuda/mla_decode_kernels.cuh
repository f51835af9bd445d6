// Absorbed MLA decode over a latent cache (params.h, METHOD.md §5), bf16 and int4 (§7) stores.
//
// Two tensor-core layouts share the plan, the tile loaders and the partials: the split-keys kernel described
// here (MlaDecodeVariant::kTensorCore) and the warp-rows kernel (kTensorCoreWarpRows, kAuto's first choice;
// see "the warp-rows tensor-core kernel" below and docs/KERNELS.md), each the other's twin.
// Design (FlashMLA / flash-decoding): the latent c_j is shared by every head, so a CTA owns one sequence,
// a block of heads and a contiguous run of 64-token tiles (split-KV). Each tile is read from device memory
// once into shared memory (cp.async, double-buffered; int4 codes and their scales are staged raw and
// dequantized to bf16 in shared memory) and used by all heads of the block through tensor-core MMAs:
//   scores  S[(m,h), j] = qa[m,h] . c_j + qr[h] . k_j[g(h)]     (mma.m16n8k16 bf16, fp32 accumulate)
//   output  O[(m,h), :] += P[(m,h), j] c_j                      (same MMA, P rounded to bf16)
// Rows of an MMA tile are (modality, head) pairs: with two modalities, row r < 8 is (text, head r) and
// row r + 8 is (image, head r), so one thread holds both hypotheses of a token's score and picks the one
// of the token's modality; P is zero in the other row, which makes O's rows the per-modality sums.
// The online softmax keeps a running max per row (log2 domain) shared by the warps through a small
// reduction in shared memory. Each CTA writes unnormalized partials (max, per-modality mass, acc); a
// second kernel combines the splits. Shapes outside the tensor-core kernel's limits use a generic
// kernel (plain fp32 arithmetic, one CTA per head) with the same partials.
//
// This header holds the kernels' device code (internal to src/kernels/cuda): the geometry, the tile loaders,
// the split-keys and warp-rows kernel templates. Their instantiations are spread over translation units that
// compile in parallel (mla_decode_tc_{bf16,int4,codes}.cu, mla_decode_rows_{bf16,int4}.cu, each returning
// function pointers through the getters at the end); mla_decode.cu holds the generic and combine kernels and
// the host side (plan and launch). No libtorch here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/mla_decode.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/tensor_core.cuh"
#include "kernels/split_map.h"

namespace vlm2mla {
namespace mla_decode_detail {

constexpr int kTile = 64;            // tokens per tile
constexpr int kMinTilesPerSplit = 1;  // tensor-core kernels: fewest tiles per split CTA (params.h)
constexpr int kMinTilesPerSplitModalityCtas = 4;  // the same for the warp-rows kernel's modality CTAs
// The most tiles a modality-CTA split takes where the keys hold an image (params.h's holds_image). Measured on the
// H200 (docs/KERNELS.md, "Shorter splits where a context holds an image"; 32k contexts, one 2,304-token image
// each): int4 b = 768 5,326 -> 4,184 µs a call, b = 256 2,021 -> 1,479, bf16 b = 256 1,400 -> 1,278; over
// text-only keys the same cap cost 5-13%, hence the hint.
constexpr int kMaxTilesPerSplitImage = 64;
constexpr int kMinTilesPerSplitWide = 4;  // the same for the scores-first kernels (kWide, kWideCluster)
// kAuto: the (sequence, head block) pairs from which it takes the modality CTAs. 1 since 2026-11-30 (H200, Qwen2.5-VL-7B
// shapes, D = 32, text-only 32k x 8 steps: bf16 7.26 -> 6.70 ms, int4 7.62 -> 7.09; 4k x 1: int4 -4%, bf16 even;
// docs/KERNELS.md "The modality CTAs at small batches"): the joint layout stays for the sizes they do not take.
constexpr int kModalityCtasMinPairs = 1;
constexpr int kWarps = 8;            // tensor-core kernel: warp w scores tokens [8w, 8w + 8) of a tile
constexpr int kThreads = kWarps * 32;
constexpr int kBf16Stages = 2;       // shared-memory stages of the bf16 tiles
constexpr int kRawStages = 4;        // shared-memory stages of the raw int4 tiles
constexpr int kGenericThreads = 128;
constexpr int kGenericChunk = 32;    // tokens scored together by the generic kernel
constexpr int kGenericCols = 4096;   // latent columns per generic CTA (32 per thread)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kMaxSlack = 8.f;  // warp-rows kernel: how far a score may pass the running max (log2)
// warp-rows kernel, modality CTAs over bf16: the fewest consecutive tiles of the CTA's modality only that its
// walk takes in the pure loop (each switch of loops drains the copy pipeline once)
constexpr int kPureRunTiles = 16;
// The sizes the specialized warp-rows instances are built for (rows_kernel_for): r_kv, h_kv * d_rope, d_rope
// of Qwen2.5-VL-7B converted with D = 32, R = 32.
constexpr int kSpecRkv = 128, kSpecHr = 128, kSpecDrope = 32;
// Their grouped-rows twins (specialized 2): rows per kv group, for kSpecHeadsPerGroup heads per group (h_q 28
// over h_kv 4: the 4 groups' 32 rows fill the 2 m-tiles of one modality exactly).
constexpr int kSpecGroupRows = 8, kSpecHeadsPerGroup = 7;
static_assert(kSpecHeadsPerGroup == kSpecGroupRows - 1, "grouped rows: a group's heads and one padding row");

// ---- geometry shared by host and device ------------------------------------------------------------
// Everything derived from the sizes that the kernels need, computed once on the host.
struct Geom {
  int hr = 0;          // h_kv * d_rope
  int rope_pad = 0;    // d_rope rounded up to 16 (the MMA k step); Q rows are zero beyond d_rope
  int c_stride = 0;    // bytes per token row of a bf16 latent tile: (r_kv + 8) * 2
  int k_stride = 0;    // bytes per token row of a bf16 RoPE tile: (hr + 8) * 2, the 8 pad columns zeroed
  int ql_stride = 0;   // bytes per row of the absorbed-query tile: (r_kv + 8) * 2
  int qr_stride = 0;   // bytes per row of the RoPE-query tile: (rope_pad + 8) * 2
  int p_stride = 0;    // bytes per row of the P tile: (64 + 8) * 2
  // shared memory offsets (bytes)
  int off_qlat = 0, off_qrope = 0, off_p = 0, off_red = 0, off_tiles = 0, off_raw = 0;
  int tile_bytes = 0;  // one bf16 stage: latent tile then RoPE tile
  int raw_bytes = 0;   // one raw int4 stage
  int raw_cq = 0, raw_cs = 0, raw_cl = 0, raw_kq = 0, raw_ks = 0, raw_kl = 0;  // offsets in a raw stage
  int chunk_cq = 0, chunk_cs = 0, chunk_kq = 0, chunk_ks = 0;  // cp.async sizes (4, 8 or 16 bytes)
  int shift_c = -1, shift_r = -1;  // log2 of group_c / group_r when a power of two, else -1
  // log2 of the 16-byte pieces in a bf16 latent (r_kv / 8) and RoPE-key (hr / 8) row when a power of two up to
  // kThreads (so dividing it: a tile's whole rows copy as one block, load_bf16_rows_interior), else -1
  int c_row_shift = -1, k_row_shift = -1;
  int q_groups_c = 0, q_groups_r = 0;  // warp-rows kernel, int4: quantization groups per latent / RoPE-key row
  // int4 products on the codes (MlaDecodeVariant::kTensorCoreCodes): per-row query sums in shared memory
  int n_gc = 0;        // latent quantization groups per token (r_kv / group_c, <= 8)
  int n_rk = 0;        // 16-wide RoPE k-steps per head (d_rope / 16)
  int off_qs = 0;      // float [rows][n_gc + n_rk]: sum of each group's (k-step's) bf16 query values
  int off_mods = 0;    // warp-rows kernel: uint8 [2][64], the modality bytes of the current and next tile
  int off_tmask = 0;   // warp-rows kernel, modality CTAs: uint32 [kWarps], which of kThreads tiles to attend,
                       // uint32 [kWarps], which lie in long pure runs, then uint8 [3][kThreads], the scan's
                       // flags (a key of the CTA's modality, of the other, a long pure run starts)
  int off_xch = 0;     // warp-rows kernel, column splits: float4 [kWarps][NS][32], the warps' partial scores
  // warp-rows kernel, external RoPE scores (where the RoPE key's tile does not fit shared memory or, int4, a
  // thread's pieces, as h_kv * d_rope = 1,024 of MHA models; and the scores-first kernels, whose scores region
  // it is): mla_rope_scores_kernel writes q_r . k_r of every (token, head) into the workspace from float offset
  // off_rope_ws, [b][rope_ws_tokens][h_q] (a sequence's tokens from its first
  // tile's first position); the tiles hold the latent only, and the warps add those scores instead of the
  // RoPE product.
  int rope_ext = 0;
  int64_t off_rope_ws = 0;
  int rope_ws_tokens = 0;
  int splits = 0;           // splits over the main store
  int ring_splits = 0;      // int4: 1 when window > 0
  int tiles_per_split = 0;
  int bound_segments = 0;   // warp-rows kernel, modality CTAs: > 0 where the splits follow params' split_bounds
                            // (segment_split_tiles over that many segments a sequence), else uniform
  int total_splits = 0;     // splits + ring_splits (twice that with modality CTAs): the partials' leading size
  int pure_launch = 0;      // warp-rows kernel, modality CTAs: 1 when an instance of their own (PURE_ONLY) attends
                            // the pure splits in a launch before this one, so the CTAs of this one leave them
  int image_first = 0;      // warp-rows kernel, modality CTAs: 1 when the grid is (split, head block, 2 b), the
                            // image CTAs' sequences first (dispatched first), partials at 2 split + modality as ever
  int smem_bytes = 0;       // host side: the tensor-core kernels' dynamic shared memory (the geometry's sum)
  int col_blocks = 0;       // generic kernel: CTAs across the latent columns
  int wide_hb = 0;          // scores-first kernels (mla_decode_wide.cu): heads per scores CTA
  int wide_col_blocks = 0;  // scores-first kernels: values CTAs across the latent columns
  int wide_qvec = 0;        // scores-first kernels: the absorbed queries load as 16-byte vectors (aligned rows)
  int wide_qpair = 0;       // ... else as 4-byte bf16 pairs (bf16 rows on 4-byte bounds)
};

// Partials in the workspace, for S = total_splits:
//   ws_m    [S, b, h_q]               running max (log2 domain), -inf for an empty split
//   ws_mass [S, n_mod, b, h_q]        sum of 2^(s - max) per modality
//   ws_acc  [S, n_mod, b, h_q, r_kv]  sum of 2^(s - max) c_j per modality
struct Partials {
  float* m;
  float* mass;
  float* acc;
  // The entries of split s, sequence b and head h (mod: modality) in that layout; acc_at: its r_kv values.
  __host__ __device__ float& m_at(const MlaDecodeParams& p, int s, int b, int h) const {
    return m[(int64_t(s) * p.b + b) * p.h_q + h];
  }
  __host__ __device__ float& mass_at(const MlaDecodeParams& p, int s, int mod, int b, int h) const {
    return mass[((int64_t(s) * p.n_mod + mod) * p.b + b) * p.h_q + h];
  }
  __host__ __device__ float* acc_at(const MlaDecodeParams& p, int s, int mod, int b, int h) const {
    return acc + (((int64_t(s) * p.n_mod + mod) * p.b + b) * p.h_q + h) * p.r_kv;
  }
};

// Each region starts on a 16-byte boundary (the kernel stores float2 pairs into ws_acc).
__host__ __device__ inline int64_t round4(int64_t n) { return (n + 3) / 4 * 4; }

__host__ __device__ inline Partials partials(const MlaDecodeParams& p, int total_splits) {
  const int64_t rows = int64_t(total_splits) * p.b * p.h_q;
  Partials w;
  w.m = p.workspace;
  w.mass = w.m + round4(rows);
  w.acc = w.mass + round4(rows * p.n_mod);
  return w;
}

inline int64_t workspace_floats_for(const MlaDecodeParams& p, int total_splits) {
  const int64_t rows = int64_t(total_splits) * p.b * p.h_q;
  return round4(rows) + round4(rows * p.n_mod) + rows * p.n_mod * p.r_kv;
}

// ---- small device helpers -----------------------------------------------------------------------------
// smem_addr, cp_async, named_barrier, cp_async_commit / _wait, the ldmatrix loads and mma_bf16: tensor_core.cuh
using namespace tensor_core;

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<uint32_t*>(&v);
}
// 2^x by one MUFU.EX2 (ex2.approx.ftz): exp2f's PTX is ex2.approx.f32 without ftz, which ptxas wraps in a scaling
// of its argument and result for results below 2^-126 (a compare and two predicated multiplies); above those the
// same instruction on the same argument, so the same bits. A softmax weight below 2^-126 of its row's running max
// becomes 0 here where exp2f kept a subnormal (against a row sum of at least 1: below a float's resolution).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}
__device__ __forceinline__ float half_bits_to_float(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

// Query and output elements at element offsets, float32 or bf16 (params.h).
__device__ __forceinline__ float load_q(const void* base, int bf16, int64_t off) {
  return bf16 ? bf16_bits_to_float(static_cast<const uint16_t*>(base)[off]) : static_cast<const float*>(base)[off];
}
__device__ __forceinline__ void store_out(void* base, int bf16, int64_t off, float v) {
  if (bf16) {
    static_cast<__nv_bfloat16*>(base)[off] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(base)[off] = v;
  }
}
__device__ __forceinline__ int64_t qa_offset(const MlaDecodeParams& p, int mod, int b, int head) {
  return mod * p.qa_stride[0] + b * p.qa_stride[1] + head * p.qa_stride[2];
}
__device__ __forceinline__ int64_t qr_offset(const MlaDecodeParams& p, int b, int head) {
  return b * p.qr_stride[0] + head * p.qr_stride[1];
}
__device__ __forceinline__ float load_qb(const MlaDecodeParams& p, int mod, int b, int head) {
  return p.qb ? load_q(p.qb, p.q_bf16, mod * p.qb_stride[0] + b * p.qb_stride[1] + head * p.qb_stride[2]) : 0.f;
}

// The key range of sequence b and, for int4, where the quantized store ends.
struct SeqRange {
  int lo, hi;  // keys [lo, hi)
  int qlen;    // int4: positions < qlen are quantized, the rest are in the ring
};
__device__ __forceinline__ SeqRange seq_range(const MlaDecodeParams& p, int b) {
  SeqRange r;
  r.hi = min(max(p.length[b], 0), p.t_cap);
  r.lo = min(max(p.start[b], 0), r.hi);
  r.qlen = p.format == MlaCacheFormat::kInt4 ? max(0, r.hi - p.window) : r.hi;
  return r;
}

// (split_tiles and segment_split_tiles, the tiles a split attends: kernels/split_map.h)
static_assert(kTile == kSplitTileTokens, "split_map.h's tiles are the kernels'");

// ---- the tensor-core kernel ----------------------------------------------------------------------------
// Template: NMOD modalities, MT 16-row MMA tiles per CTA, NTW 8-column output tiles per warp, INT4 store.
template <int NMOD, int MT, int NTW>
struct TcState {
  float o[MT][NTW][4];  // output accumulators: rows (gid, gid + 8) of m-tile mt, columns of n-tile i
  float m_run[MT][2];   // running max (log2 domain) of the thread's two rows per m-tile
  float l_part[MT][2];  // the thread's share of the row sums (same rescaling as o)
};

// Row r of the CTA's MMA rows -> (modality, head). With two modalities the first MT/2 m-tiles are the
// text rows of the block's MT * 8 heads and the last MT/2 the image rows of the same heads, in the same
// order: a thread holds (head, token) of both in the same fragment slots, and a tile whose tokens are all
// of one modality skips the other modality's m-tiles. With one modality's rows (NMOD == 1) they are that of
// `mod1`: 0 for a one-set model, the CTA's modality for the warp-rows kernel's modality CTAs.
// GP > 0 (grouped rows, warp-rows kernel): each kv group's GP - 1 heads take GP rows, the last a padding row
// (head kPadHead, past any h_q), so that an m-tile's 16 rows are exactly 16 / GP whole groups: Qwen2.5-VL-7B's
// 7 heads per group in 8 rows, 4 groups in 2 m-tiles.
constexpr int kPadHead = 1 << 30;
template <int NMOD, int MT, int GP = 0>
__device__ __forceinline__ void row_to_head(int row, int head0, int& mod, int& head, int mod1 = 0) {
  constexpr int kHalf = MT * 8;
  if (NMOD == 1) {
    mod = mod1;
    head = head0 + row;
  } else {
    mod = row >= kHalf ? 1 : 0;
    head = head0 + row - mod * kHalf;
  }
  if constexpr (GP > 0) {
    const int r = NMOD == 1 ? row : row - mod * kHalf;  // the row among its modality's
    head = r % GP == GP - 1 ? kPadHead : head0 + (r / GP) * (GP - 1) + r % GP;
  }
}

struct RowInfo {
  int grp[2];      // RoPE group of the thread's rows gid, gid + 8 (-1: padding row)
  int head[2];     // their heads (-1: padding row)
  float bias[2];   // qb of those rows
  int g_lo, g_hi;  // groups spanned by the m-tile (uniform); g_lo > g_hi for an empty tile
};

// Walks the (token, column) pairs c = tid, tid + blockDim, ... of a [64, per_row] grid without a
// division per step (one per tile): t += step / per_row, col += step % per_row with a carry.
struct GridWalk {
  int t, col, dt, dcol, per_row;
  __device__ __forceinline__ GridWalk(int per_row_) : per_row(per_row_) {
    t = threadIdx.x / per_row;
    col = threadIdx.x - t * per_row;
    dt = blockDim.x / per_row;
    dcol = blockDim.x - dt * per_row;
  }
  __device__ __forceinline__ bool more() const { return t < kTile; }
  __device__ __forceinline__ void next() {
    t += dt;
    col += dcol;
    if (col >= per_row) {
      col -= per_row;
      ++t;
    }
  }
};

// Copies `width` bf16 values per token of tokens [tok0, tok0 + 64) into a shared tile with `stride`-byte
// rows; tokens outside [vlo, vhi) are zero-filled. ring > 0: token j is row j % ring (the int4 window).
__device__ __forceinline__ void load_bf16_rows(const uint16_t* base, int b, int rows, int width, uint32_t dst,
                                               int stride, int tok0, int vlo, int vhi, bool ring) {
  const uint16_t* seq = base + int64_t(b) * rows * width;
  for (GridWalk w(width / 8); w.more(); w.next()) {
    const int j = tok0 + w.t;
    const bool valid = j >= vlo && j < vhi;
    const int row = valid ? (ring ? j % rows : j) : 0;
    cp_async(dst + w.t * stride + w.col * 16, seq + int64_t(row) * width + w.col * 8, 16, valid);
  }
}

// The same copy for a tile whose 64 tokens are all valid and in order (no ring), when a row's 16-byte
// pieces, 2^shift of them, divide the CTA's threads: the tile is one contiguous block in device memory, and a
// thread's k-th piece lies kThreads pieces after its first, kThreads / 2^shift rows further in the shared
// tile. Shifts, not divisions: this runs for every tile.
__device__ __forceinline__ void load_bf16_rows_interior(const uint16_t* base, int b, int t_cap, int width,
                                                        int shift, uint32_t dst, int stride, int tok0) {
  const char* src = reinterpret_cast<const char*>(base + (int64_t(b) * t_cap + tok0) * width) + threadIdx.x * 16;
  const int t = threadIdx.x >> shift;
  uint32_t d = dst + t * stride + (threadIdx.x & ((1 << shift) - 1)) * 16;
  const uint32_t d_step = (kThreads >> shift) * stride;
  for (int c = threadIdx.x; c < (kTile << shift); c += kThreads, src += kThreads * 16, d += d_step)
    cp_async(d, src, 16, true);
}

// load_bf16_rows_interior for the instances built for r_kv RKV and h_kv d_rope HR (bf16 tiles of the latent and
// the RoPE key, the geometry's strides (RKV + 8) 2 and (HR + 8) 2): the thread's source bases (its sequence's rows
// from its first piece) and its destination offsets are computed once a CTA, and a tile's copy is two address
// adds and the unrolled cp.async of whole pieces with constant offsets (the same pieces to the same places: the
// same bits). Nsight Compute put ~20% of the 32k x 8 kernel's instructions in the runtime loop's copies and
// addresses (docs/bench/ncu_step_32768x8_lines_h200_2026-11-30_s27.txt).
template <int RKV, int HR>
struct InteriorTileCopy {
  static constexpr int kCRow = RKV * 2, kKRow = HR * 2;            // bytes a token
  static constexpr int kCPieces = kCRow / 16, kKPieces = kKRow / 16;  // 16-byte pieces a token
  static constexpr int kCStride = (RKV + 8) * 2, kKStride = (HR + 8) * 2;
  static_assert(kCRow % 16 == 0 && kKRow % 16 == 0 && kThreads % kCPieces == 0 && kThreads % kKPieces == 0 &&
                    (kTile * kCPieces) % kThreads == 0 && (kTile * kKPieces) % kThreads == 0,
                "interior copy: a row's pieces divide the CTA's threads, which divide the tile's pieces");
  const char* c_src;
  const char* k_src;
  uint32_t c_dst, k_dst;
  __device__ __forceinline__ InteriorTileCopy(const MlaDecodeParams& p, int b) {
    const int tid = threadIdx.x;
    c_src = reinterpret_cast<const char*>(p.latent) + int64_t(b) * p.t_cap * kCRow + tid * 16;
    k_src = reinterpret_cast<const char*>(p.k_rope) + int64_t(b) * p.t_cap * kKRow + tid * 16;
    c_dst = (tid / kCPieces) * kCStride + (tid % kCPieces) * 16;
    k_dst = (tid / kKPieces) * kKStride + (tid % kKPieces) * 16;
  }
  // tokens [tok0, tok0 + 64), all valid and in order (no ring), into the tiles at ctile and ktile
  __device__ __forceinline__ void operator()(uint32_t ctile, uint32_t ktile, int tok0) const {
    const char* c = c_src + int64_t(tok0) * kCRow;
    const char* k = k_src + int64_t(tok0) * kKRow;
#pragma unroll
    for (int i = 0; i < kTile * kCPieces / kThreads; ++i)
      cp_async16(ctile + c_dst + i * (kThreads / kCPieces) * kCStride, c + i * kThreads * 16);
#pragma unroll
    for (int i = 0; i < kTile * kKPieces / kThreads; ++i)
      cp_async16(ktile + k_dst + i * (kThreads / kKPieces) * kKStride, k + i * kThreads * 16);
  }
};

__device__ __forceinline__ void load_bf16_tile(const MlaDecodeParams& p, const Geom& g, int b, uint32_t ctile,
                                               uint32_t ktile, int tok0, int vlo, int vhi, bool ring) {
  // (external RoPE scores, g.rope_ext: the latent alone)
  if (!ring && tok0 >= vlo && tok0 + kTile <= vhi && g.c_row_shift >= 0 && (g.rope_ext || g.k_row_shift >= 0)) {
    load_bf16_rows_interior(p.latent, b, p.t_cap, p.r_kv, g.c_row_shift, ctile, g.c_stride, tok0);
    if (!g.rope_ext) load_bf16_rows_interior(p.k_rope, b, p.t_cap, g.hr, g.k_row_shift, ktile, g.k_stride, tok0);
    return;
  }
  const int rows = ring ? p.window : p.t_cap;
  load_bf16_rows(ring ? p.latent_win : p.latent, b, rows, p.r_kv, ctile, g.c_stride, tok0, vlo, vhi, ring);
  if (!g.rope_ext)
    load_bf16_rows(ring ? p.k_rope_win : p.k_rope, b, rows, g.hr, ktile, g.k_stride, tok0, vlo, vhi, ring);
}

// Flat copy of one raw int4 array's 64-token block: row_bytes per token, in `chunk`-byte pieces (the
// host checked that chunk divides the base address, 64 * row_bytes and t_cap * row_bytes, so no piece
// crosses the end of the sequence's rows). Pieces with no token in [vlo, vhi) are zero-filled.
__device__ __forceinline__ void load_raw_block(uint32_t dst, const uint8_t* base, int b, int t_cap, int row_bytes,
                                               int chunk, int tok0, int vlo, int vhi) {
  const uint8_t* seq = base + int64_t(b) * t_cap * row_bytes;
  const uint8_t* tile = seq + int64_t(tok0) * row_bytes;
  const int n = kTile * row_bytes / chunk;
  const bool interior = tok0 >= vlo && tok0 + kTile <= vhi;  // every token valid (and below t_cap)
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    const int off = c * chunk;
    bool valid = interior;
    if (!interior) {
      const int first = tok0 + off / row_bytes, last = tok0 + (off + chunk - 1) / row_bytes;
      valid = first < vhi && last >= vlo;
    }
    cp_async(dst + off, valid ? tile + off : base, chunk, valid);
  }
}

__device__ __forceinline__ void load_raw_tile(const MlaDecodeParams& p, const Geom& g, int b, uint32_t raw, int tok0,
                                              int vlo, int vhi) {
  const int ngc = p.r_kv / p.group_c, ngr = g.hr / p.group_r;
  load_raw_block(raw + g.raw_cq, p.latent_q, b, p.t_cap, p.r_kv / 2, g.chunk_cq, tok0, vlo, vhi);
  load_raw_block(raw + g.raw_cs, reinterpret_cast<const uint8_t*>(p.latent_scale), b, p.t_cap, ngc * 2, g.chunk_cs,
                 tok0, vlo, vhi);
  load_raw_block(raw + g.raw_cl, reinterpret_cast<const uint8_t*>(p.latent_lo), b, p.t_cap, ngc * 2, g.chunk_cs,
                 tok0, vlo, vhi);
  load_raw_block(raw + g.raw_kq, p.k_rope_q, b, p.t_cap, g.hr / 2, g.chunk_kq, tok0, vlo, vhi);
  load_raw_block(raw + g.raw_ks, reinterpret_cast<const uint8_t*>(p.k_rope_scale), b, p.t_cap, ngr * 2, g.chunk_ks,
                 tok0, vlo, vhi);
  load_raw_block(raw + g.raw_kl, reinterpret_cast<const uint8_t*>(p.k_rope_lo), b, p.t_cap, ngr * 2, g.chunk_ks,
                 tok0, vlo, vhi);
}

// Raw int4 rows [64, width/2] with float16 scale/lo [64, width/group] -> bf16 rows [64, stride]; tokens
// outside [vlo, vhi) become zeros. Units of 8 values (4 code bytes, one 16-byte store). A code q becomes
// a float as (2^23 + q) - 2^23 (bit operations and one add, no int-to-float conversion).
__device__ __forceinline__ void dequant_rows(const unsigned char* codes, const unsigned char* scales,
                                             const unsigned char* los, unsigned char* out, int width, int group,
                                             int group_shift, int stride, int tok0, int vlo, int vhi) {
  const int ng = width / group;
  for (GridWalk w(width / 8); w.more(); w.next()) {
    const int j = tok0 + w.t;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (j >= vlo && j < vhi) {
      const uint32_t q = *reinterpret_cast<const uint32_t*>(codes + w.t * (width / 2) + w.col * 4);
      const int gcol = group_shift >= 0 ? (w.col * 8) >> group_shift : (w.col * 8) / group;
      const int gi = w.t * ng + gcol;
      const float sc = half_bits_to_float(reinterpret_cast<const uint16_t*>(scales)[gi]);
      const float lo = half_bits_to_float(reinterpret_cast<const uint16_t*>(los)[gi]);
      float x[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) x[e] = fmaf(__uint_as_float(((q >> (4 * e)) & 15u) | 0x4B000000u) - 8388608.f, sc, lo);
      v.x = pack_bf16x2(x[0], x[1]);
      v.y = pack_bf16x2(x[2], x[3]);
      v.z = pack_bf16x2(x[4], x[5]);
      v.w = pack_bf16x2(x[6], x[7]);
    }
    *reinterpret_cast<uint4*>(out + w.t * stride + w.col * 16) = v;
  }
}

// int4 codes (a byte holds two: the even element in the low nibble) as floats: (2^23 + q) - 2^23.
__device__ __forceinline__ float code_float(uint32_t q) { return __uint_as_float(q | 0x4B000000u) - 8388608.f; }
// Two codes times their tokens' (or group's) scales, rounded to bf16x2: the keys without their minima.
__device__ __forceinline__ uint32_t scaled_codes(uint32_t q0, uint32_t q1, float s0, float s1) {
  return pack_bf16x2(code_float(q0) * s0, code_float(q1) * s1);
}
// A score product's B fragment from a token's code row: the bytes at crow and crow + 4 hold the k-step's
// elements 2 tig, 2 tig + 1 and 2 tig + 8, 2 tig + 9; sb is the token's scale for the k-step's group.
__device__ __forceinline__ void codes_fragment(const unsigned char* crow, float sb, uint32_t& b0, uint32_t& b1) {
  const uint32_t c0 = crow[0], c1 = crow[4];
  b0 = scaled_codes(c0 & 15u, c0 >> 4, sb, sb);
  b1 = scaled_codes(c1 & 15u, c1 >> 4, sb, sb);
}
__device__ __forceinline__ float half_at(const unsigned char* base, int i) {
  return half_bits_to_float(reinterpret_cast<const uint16_t*>(base)[i]);
}

// Modality bits of the thread's two score columns (bit e: token tok0 + 8 warp + 2 tig + e is an image).
__device__ __forceinline__ uint32_t load_mods(const MlaDecodeParams& p, int b, int tok0, int vlo, int vhi) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = tok0 + warp * 8 + 2 * (lane & 3);
  const uint8_t* m = p.modality + int64_t(b) * p.t_cap;
  uint32_t bits = 0;
  if (j >= vlo && j < vhi && m[j] != 0) bits |= 1u;
  if (j + 1 >= vlo && j + 1 < vhi && m[j + 1] != 0) bits |= 2u;
  return bits;
}

// 8 consecutive query values from element `off` of `base` as 4 bf16 pairs (x0 x1) (x2 x3) (x4 x5) (x6 x7): one
// 16-byte load over bf16 queries (two over float32) where `vec` says the address allows it, four 4-byte loads of
// bf16 pairs where `pair` does, else element by element with conversions. Shared by the wide kernel (its Geom's
// wide_qvec / wide_qpair) and the warp-rows kernel's pair-order staging (load_q8_pairs).
__device__ __forceinline__ uint4 load_q8_span(const void* base, int bf16, int64_t off, bool vec, bool pair) {
  if (vec && bf16) return __ldg(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + off));
  if (pair) {
    const unsigned int* q2 = reinterpret_cast<const unsigned int*>(static_cast<const uint16_t*>(base) + off);
    return make_uint4(__ldg(q2), __ldg(q2 + 1), __ldg(q2 + 2), __ldg(q2 + 3));
  }
  if (vec) {
    const float4 x = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(base) + off));
    const float4 y = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(base) + off + 4));
    return make_uint4(pack_bf16x2(x.x, x.y), pack_bf16x2(x.z, x.w), pack_bf16x2(y.x, y.y), pack_bf16x2(y.z, y.w));
  }
  float x[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) x[e] = load_q(base, bf16, off + e);
  return make_uint4(pack_bf16x2(x[0], x[1]), pack_bf16x2(x[2], x[3]), pack_bf16x2(x[4], x[5]),
                    pack_bf16x2(x[6], x[7]));
}

// 8 consecutive query values from element `off` as 4 bf16 pairs (x0 x1) .. (x6 x7), through load_q8_span with the
// widest loads the address allows: one 16-byte load over bf16 rows on 16-byte bounds (the model's query views: a
// product's rows), 4-byte pairs where those are aligned, two float4 loads over aligned float32 rows, else element
// by element.
__device__ __forceinline__ uint4 load_q8(const void* base, int bf16, int64_t off) {
  const uintptr_t a = bf16 ? reinterpret_cast<uintptr_t>(static_cast<const uint16_t*>(base) + off)
                           : reinterpret_cast<uintptr_t>(static_cast<const float*>(base) + off);
  return load_q8_span(base, bf16, off, (a & 15u) == 0, bf16 && (a & 3u) == 0);
}

// The pairs of channel order (x0 x1) (x2 x3) (x4 x5) (x6 x7) in pair order (x0 x4) (x1 x5) (x2 x6) (x3 x7).
__device__ __forceinline__ uint4 to_pair_order(const uint4 v) {
  return make_uint4(__byte_perm(v.x, v.z, 0x5410), __byte_perm(v.x, v.z, 0x7632), __byte_perm(v.y, v.w, 0x5410),
                    __byte_perm(v.y, v.w, 0x7632));
}

// The block's queries in shared memory (bf16, rows in MMA order, zero rows past h_q), and zeros in the 8 pad
// columns of the RoPE tile rows of `stages` bf16 stages (read, times zero queries, when d_rope % 16 == 8).
// pairs: each 8 channels in pair order (0 4 1 5 2 6 3 7), the order of the warp-rows kernel's int4 tiles
// (store_piece): stored pair k of an 8-channel group holds channels k and k + 4.
// 8 channels a thread and piece (the tensor-core kernels' sizes: r_kv % 16 == 0, d_rope % 8 == 0), the latent's
// pieces and then the RoPE dims' in one index space, kQueryBatch pieces a thread loaded before any is stored: at
// the 7B sizes (32 rows, r_kv 128, R 32: 640 pieces, 3 a thread) every load of a thread is in flight at once (4
// spilled the bf16 main instance at the 128-register cap; with 3 the 7B instances spill as before, but for 16 bytes
// in the int4 pure one's), where a loop of
// one piece (or, in channel order, one pair) at a time waited for each in turn (a CTA's prologue at b = 1 is
// mostly such waits: docs/KERNELS.md, "Small-batch steps").
constexpr int kQueryBatch = 3;
template <int NMOD, int MT, int GP = 0>
__device__ __forceinline__ void stage_queries(const MlaDecodeParams& p, const Geom& g, unsigned char* smem, int b,
                                              int head0, int stages, int mod1 = 0, bool pairs = false) {
  constexpr int kRows = MT * 16;
  const int tid = threadIdx.x;
  const int lat8 = p.r_kv / 8, rope8 = g.rope_pad / 8;
  const int n_lat = kRows * lat8, n = n_lat + kRows * rope8;
  // piece idx's place in shared memory (the loads' loop and the stores' loop each work it out: no offsets held
  // in registers across the loads)
  auto dst = [&](int idx) -> unsigned char* {
    if (idx < n_lat) return smem + g.off_qlat + (idx / lat8) * g.ql_stride + (idx % lat8) * 16;
    const int j = idx - n_lat;
    return smem + g.off_qrope + (j / rope8) * g.qr_stride + (j % rope8) * 16;
  };
  for (int first = 0; first < n; first += kQueryBatch * int(blockDim.x)) {
    uint4 v[kQueryBatch];
#pragma unroll
    for (int k = 0; k < kQueryBatch; ++k) {
      const int idx = first + k * int(blockDim.x) + tid;
      v[k] = make_uint4(0, 0, 0, 0);
      int mod, head;
      if (idx < n_lat) {
        const int row = idx / lat8, c8 = idx - row * lat8;
        row_to_head<NMOD, MT, GP>(row, head0, mod, head, mod1);
        if (head < p.h_q) v[k] = load_q8(p.qa, p.q_bf16, qa_offset(p, mod, b, head) + 8 * c8);
      } else if (idx < n) {
        const int j = idx - n_lat, row = j / rope8, c8 = j - row * rope8;
        row_to_head<NMOD, MT, GP>(row, head0, mod, head);
        if (head < p.h_q && 8 * c8 < p.d_rope) v[k] = load_q8(p.qr, p.q_bf16, qr_offset(p, b, head) + 8 * c8);
      }
    }
#pragma unroll
    for (int k = 0; k < kQueryBatch; ++k) {
      const int idx = first + k * int(blockDim.x) + tid;
      if (idx < n) *reinterpret_cast<uint4*>(dst(idx)) = pairs ? to_pair_order(v[k]) : v[k];
    }
  }
  for (int idx = tid; idx < (g.rope_ext ? 0 : stages) * kTile; idx += blockDim.x) {  // (no RoPE tile: none)
    const int st = idx / kTile, t = idx - st * kTile;
    *reinterpret_cast<uint4*>(smem + g.off_tiles + st * g.tile_bytes + kTile * g.c_stride + t * g.k_stride +
                              g.hr * 2) = make_uint4(0, 0, 0, 0);
  }
}

// The RoPE groups and k-biases of the thread's rows (gid, gid + 8) of m-tile mt, and the groups it spans.
// GP > 0 (grouped rows, row_to_head): the m-tile's rows are 16 / GP whole groups (gsize == GP - 1; the host
// takes that layout for such sizes only).
template <int NMOD, int MT, int GP = 0>
__device__ __forceinline__ RowInfo row_info(const MlaDecodeParams& p, int b, int head0, int gsize, int mt, int gid,
                                            int mod1 = 0) {
  RowInfo ri;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    int mod, head;
    row_to_head<NMOD, MT, GP>(mt * 16 + gid + 8 * h, head0, mod, head, mod1);
    ri.grp[h] = head < p.h_q ? head / gsize : -1;
    ri.head[h] = head < p.h_q ? head : -1;
    ri.bias[h] = head < p.h_q ? load_qb(p, mod, b, head) : 0.f;
  }
  const int mh = NMOD == 1 ? mt : mt % (MT / 2);  // the m-tile among its modality's
  if constexpr (GP > 0) {
    ri.g_lo = head0 / gsize + mh * (16 / GP);
    ri.g_hi = ri.g_lo + 16 / GP - 1;
  } else {
    const int first = head0 + mh * 16, last = min(first + 16, p.h_q) - 1;
    ri.g_lo = first < p.h_q ? first / gsize : 1;
    ri.g_hi = first < p.h_q ? last / gsize : 0;
  }
  return ri;
}

// One tile: scores, online softmax, P, and O += P C. ctile/ktile: bf16 tiles of tokens [tok0, tok0 + 64).
// Two modalities (row_to_head): m-tiles [0, MT/2) are the text rows, [MT/2, MT) the image rows of the same
// heads. The RoPE product (the same for both) is computed once per head; a warp whose 8 tokens hold no
// image (text) token skips the image (text) rows' latent products, and the CTA skips their P C products
// when none of the tile's 64 tokens needs them (an image is a contiguous run of tokens, so most tiles of
// a real context are of one modality).
// CODES: the keys are the raw int4 stage `raw` (codes, float16 scales and minima; load_raw_tile) instead of
// bf16 tiles: x = code * scale + lo per token and group, with the products taken on the codes (exact small
// integers in bf16) and scale and lo applied to the fp32 results (docs/KERNELS.md, "int4 MMAs on the codes").
template <int NMOD, int MT, int NTW, bool CODES>
__device__ __forceinline__ void compute_tile(const MlaDecodeParams& p, const Geom& g, unsigned char* smem,
                                             uint32_t ctile, uint32_t ktile, int tok0, int vlo, int vhi,
                                             uint32_t mods, const RowInfo (&ri)[MT], float scale_log2,
                                             TcState<NMOD, MT, NTW>& st, const unsigned char* raw = nullptr) {
  static_assert(NMOD == 1 || MT % 2 == 0, "two modalities need an even number of m-tiles");
  constexpr int MH = NMOD == 1 ? MT : MT / 2;  // m-tiles of head rows (text rows with two modalities)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
  const uint32_t sbase = smem_addr(smem);

  // ---- the thread's two tokens: valid, and which modality
  const int j0 = tok0 + warp * 8 + 2 * tig;
  const bool v0 = j0 >= vlo && j0 < vhi, v1 = j0 + 1 >= vlo && j0 + 1 < vhi;
  const bool img0 = NMOD == 2 && (mods & 1u), img1 = NMOD == 2 && (mods & 2u);  // load_mods: valid tokens only
  bool warp_txt = true, warp_img = false;
  if (NMOD == 2) {
    warp_txt = __any_sync(0xffffffffu, (v0 && !img0) || (v1 && !img1));
    warp_img = __any_sync(0xffffffffu, img0 || img1);
  }

  // ---- scores of the warp's 8 tokens: the RoPE product into the head rows, copied to the image rows,
  // then each modality's latent product. CODES: a key is sc * code + lo per token and group; the B
  // fragments are bf16(sc * code) built in registers from the raw stage, and the minima add lo times the
  // row's query sum over the group (qs, once per CTA).
  float s[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) s[mt][0] = s[mt][1] = s[mt][2] = s[mt][3] = 0.f;
  const int tb = warp * 8 + gid;      // CODES: the token of the thread's B fragments (n = gid)
  const int tc = warp * 8 + 2 * tig;  // CODES: the tokens of its score columns, tc and tc + 1
  const float* qs = reinterpret_cast<const float*>(smem + g.off_qs);  // CODES: [rows][n_gc + n_rk]
  const int qs_w = g.n_gc + g.n_rk;
  {
    const uint32_t b_addr = ktile + (warp * 8 + (lane & 7)) * g.k_stride + ((lane >> 3) & 1) * 16;
    const uint32_t a_addr = sbase + g.off_qrope + (lane & 15) * g.qr_stride + (lane >> 4) * 16;
#pragma unroll
    for (int mt = 0; mt < MH; ++mt) {
      for (int kr = 0; kr < g.rope_pad; kr += 16) {
        uint32_t a0, a1, a2, a3;
        ldsm_x4(a_addr + mt * 16 * g.qr_stride + kr * 2, a0, a1, a2, a3);
        for (int gq = ri[mt].g_lo; gq <= ri[mt].g_hi; ++gq) {
          // Rows of other groups see zeros: the product of a block-diagonal query with all groups' keys.
          const bool m0 = ri[mt].grp[0] == gq, m1 = ri[mt].grp[1] == gq;
          uint32_t b0, b1;
          if constexpr (CODES) {  // the k-step lies in one quantization group (group_r % 16 == 0)
            const int d0 = gq * p.d_rope + kr, ngr = g.hr / p.group_r, gr = d0 / p.group_r;
            codes_fragment(raw + g.raw_kq + tb * (g.hr / 2) + d0 / 2 + tig, half_at(raw + g.raw_ks, tb * ngr + gr),
                           b0, b1);
            mma_bf16(s[mt], m0 ? a0 : 0u, m1 ? a1 : 0u, m0 ? a2 : 0u, m1 ? a3 : 0u, b0, b1);
            const float lo0 = half_at(raw + g.raw_kl, tc * ngr + gr), lo1 = half_at(raw + g.raw_kl, (tc + 1) * ngr + gr);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              if (ri[mt].grp[h] != gq) continue;
              const float q = qs[(mt * 16 + gid + 8 * h) * qs_w + g.n_gc + kr / 16];
              s[mt][2 * h] += lo0 * q;
              s[mt][2 * h + 1] += lo1 * q;
            }
          } else {
            ldsm_x2(b_addr + (gq * p.d_rope + kr) * 2, b0, b1);
            mma_bf16(s[mt], m0 ? a0 : 0u, m1 ? a1 : 0u, m0 ? a2 : 0u, m1 ? a3 : 0u, b0, b1);
          }
        }
      }
      if (NMOD == 2) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[(mt + MH) % MT][e] = s[mt][e];
      }
    }
  }
  {
    const uint32_t b_addr = ctile + (warp * 8 + (lane & 7)) * g.c_stride + ((lane >> 3) & 1) * 16;
    const uint32_t a_addr = sbase + g.off_qlat + (lane & 15) * g.ql_stride + (lane >> 4) * 16;
#pragma unroll(CODES ? 1 : 4)  // CODES: not unrolled (unrolling it makes the kernel spill registers)
    for (int k = 0; k < p.r_kv; k += 16) {
      uint32_t b0, b1;
      if constexpr (CODES) {
        codes_fragment(raw + g.raw_cq + tb * (p.r_kv / 2) + k / 2 + tig,
                       half_at(raw + g.raw_cs, tb * g.n_gc + k / p.group_c), b0, b1);
      } else {
        ldsm_x2(b_addr + k * 2, b0, b1);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (!(mt < MH ? warp_txt : warp_img)) continue;
        uint32_t a0, a1, a2, a3;
        ldsm_x4(a_addr + mt * 16 * g.ql_stride + k * 2, a0, a1, a2, a3);
        mma_bf16(s[mt], a0, a1, a2, a3, b0, b1);
      }
    }
    if constexpr (CODES) {  // the minima of each latent group
      for (int gi = 0; gi < g.n_gc; ++gi) {
        const float lo0 = half_at(raw + g.raw_cl, tc * g.n_gc + gi), lo1 = half_at(raw + g.raw_cl, (tc + 1) * g.n_gc + gi);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if (!(mt < MH ? warp_txt : warp_img)) continue;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float q = qs[(mt * 16 + gid + 8 * h) * qs_w + gi];
            s[mt][2 * h] += lo0 * q;
            s[mt][2 * h + 1] += lo1 * q;
          }
        }
      }
    }
  }

  // ---- scores in the log2 domain, masked (each token's own modality with two); the row maxima over
  // the thread's two tokens
  float tmax[MH][2];
#pragma unroll
  for (int mt = 0; mt < MH; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (NMOD == 1) {
        s[mt][2 * h] = v0 ? (s[mt][2 * h] + ri[mt].bias[h]) * scale_log2 : -INFINITY;
        s[mt][2 * h + 1] = v1 ? (s[mt][2 * h + 1] + ri[mt].bias[h]) * scale_log2 : -INFINITY;
      } else {
        const int mi = (mt + MH) % MT;  // the image rows of the same heads
        s[mt][2 * h] = v0 ? (img0 ? s[mi][2 * h] + ri[mi].bias[h] : s[mt][2 * h] + ri[mt].bias[h]) * scale_log2
                          : -INFINITY;
        s[mt][2 * h + 1] =
            v1 ? (img1 ? s[mi][2 * h + 1] + ri[mi].bias[h] : s[mt][2 * h + 1] + ri[mt].bias[h]) * scale_log2
               : -INFINITY;
      }
      tmax[mt][h] = fmaxf(s[mt][2 * h], s[mt][2 * h + 1]);
      tmax[mt][h] = fmaxf(tmax[mt][h], __shfl_xor_sync(0xffffffffu, tmax[mt][h], 1));
      tmax[mt][h] = fmaxf(tmax[mt][h], __shfl_xor_sync(0xffffffffu, tmax[mt][h], 2));
    }
  }
  static_assert(kWarps == 8, "the row maxima are read as two float4 per row");
  float* red_max = reinterpret_cast<float*>(smem + g.off_red);  // [kRows][8 warps]; head rows only
  if (tig == 0) {
#pragma unroll
    for (int mt = 0; mt < MH; ++mt) {
      red_max[(mt * 16 + gid) * kWarps + warp] = tmax[mt][0];
      red_max[(mt * 16 + gid + 8) * kWarps + warp] = tmax[mt][1];
    }
  }
  // with two modalities the barrier also tells whether any warp of the CTA saw an image token
  const bool cta_img = NMOD == 2 ? __syncthreads_or(warp_img) != 0 : (__syncthreads(), false);

  // ---- new running max (shared by a head's rows of both modalities), rescale, P
  unsigned char* psm = smem + g.off_p;
#pragma unroll
  for (int mt = 0; mt < MH; ++mt) {
    constexpr int kMods = NMOD;
    float m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = mt * 16 + gid + 8 * h;
      const float4 r0 = *reinterpret_cast<const float4*>(red_max + row * kWarps);
      const float4 r1 = *reinterpret_cast<const float4*>(red_max + row * kWarps + 4);
      const float mx = fmaxf(fmaxf(fmaxf(r0.x, r0.y), fmaxf(r0.z, r0.w)), fmaxf(fmaxf(r1.x, r1.y), fmaxf(r1.z, r1.w)));
      const float m_new = fmaxf(st.m_run[mt][h], mx);
      const float alpha = m_new == -INFINITY ? 1.f : exp2f(st.m_run[mt][h] - m_new);
      st.m_run[mt][h] = m_new;
      m_use[h] = m_new == -INFINITY ? 0.f : m_new;
#pragma unroll
      for (int md = 0; md < kMods; ++md) {
        const int mr = mt + md * MH;  // this head's rows of modality md
        st.l_part[mr][h] *= alpha;
#pragma unroll
        for (int i = 0; i < NTW; ++i) {
          st.o[mr][i][2 * h] *= alpha;
          st.o[mr][i][2 * h + 1] *= alpha;
        }
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float e0 = exp2f(s[mt][2 * h] - m_use[h]), e1 = exp2f(s[mt][2 * h + 1] - m_use[h]);
#pragma unroll
      for (int md = 0; md < kMods; ++md) {
        const int mr = mt + md * MH;
        const float p0 = (NMOD == 1 || img0 == (md == 1)) ? e0 : 0.f;
        const float p1 = (NMOD == 1 || img1 == (md == 1)) ? e1 : 0.f;
        st.l_part[mr][h] += p0 + p1;
        *reinterpret_cast<uint32_t*>(psm + (mr * 16 + gid + 8 * h) * g.p_stride + (warp * 8 + 2 * tig) * 2) =
            pack_bf16x2(p0, p1);
      }
    }
  }
  const bool cta_txt = NMOD == 2 ? __syncthreads_or(warp_txt) != 0 : (__syncthreads(), true);

  // ---- O += P C over the warp's output columns (the m-tiles of a modality with tokens in the tile).
  // CODES: B = bf16(sc * code) of the fragment's four tokens, each with its scale for the n-tile's group (an
  // 8-column n-tile lies in one group), and the minima add sum_j P[r,j] lo[j,g]: one more product of the P
  // tile with the tokens' minima (groups as its columns), added to O's columns of each group after the tile.
  const uint32_t pa_addr = sbase + g.off_p + (lane & 15) * g.p_stride + (lane >> 4) * 16;
  float plo[MT][4];  // CODES: sum_j P lo[j, g], rows (gid, gid + 8) x groups (2 tig, 2 tig + 1)
  if constexpr (CODES) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) plo[mt][0] = plo[mt][1] = plo[mt][2] = plo[mt][3] = 0.f;
  }
#pragma unroll
  for (int ks = 0; ks < kTile / 16; ++ks) {
    const int j0 = ks * 16 + 2 * tig;  // CODES: the fragments' tokens j0, j0 + 1, j0 + 8, j0 + 9
    uint32_t bf[NTW][2];
#pragma unroll
    for (int i = 0; i < NTW; ++i) {
      const int nt = warp + i * kWarps;
      if (nt * 8 >= p.r_kv) continue;
      if constexpr (CODES) {
        const int d = nt * 8 + gid, sh = (d & 1) * 4, gi = (nt * 8) / p.group_c, rb = p.r_kv / 2;
        const unsigned char* col = raw + g.raw_cq + d / 2;
        const unsigned char* sc = raw + g.raw_cs;
        bf[i][0] = scaled_codes((col[j0 * rb] >> sh) & 15u, (col[(j0 + 1) * rb] >> sh) & 15u,
                                half_at(sc, j0 * g.n_gc + gi), half_at(sc, (j0 + 1) * g.n_gc + gi));
        bf[i][1] = scaled_codes((col[(j0 + 8) * rb] >> sh) & 15u, (col[(j0 + 9) * rb] >> sh) & 15u,
                                half_at(sc, (j0 + 8) * g.n_gc + gi), half_at(sc, (j0 + 9) * g.n_gc + gi));
      } else {
        ldsm_x2_trans(ctile + (ks * 16 + (lane & 15)) * g.c_stride + nt * 16, bf[i][0], bf[i][1]);
      }
    }
    uint32_t lb0 = 0u, lb1 = 0u;  // CODES: B of the minima, n = group gid
    if constexpr (CODES) {
      const unsigned char* lo = raw + g.raw_cl;
      const bool gv = gid < g.n_gc;
      lb0 = pack_bf16x2(gv ? half_at(lo, j0 * g.n_gc + gid) : 0.f, gv ? half_at(lo, (j0 + 1) * g.n_gc + gid) : 0.f);
      lb1 = pack_bf16x2(gv ? half_at(lo, (j0 + 8) * g.n_gc + gid) : 0.f, gv ? half_at(lo, (j0 + 9) * g.n_gc + gid) : 0.f);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (!(mt < MH ? cta_txt : cta_img)) continue;
      uint32_t a0, a1, a2, a3;
      ldsm_x4(pa_addr + mt * 16 * g.p_stride + ks * 32, a0, a1, a2, a3);
      if constexpr (CODES) mma_bf16(plo[mt], a0, a1, a2, a3, lb0, lb1);
#pragma unroll
      for (int i = 0; i < NTW; ++i) {
        if ((warp + i * kWarps) * 8 < p.r_kv) mma_bf16(st.o[mt][i], a0, a1, a2, a3, bf[i][0], bf[i][1]);
      }
    }
  }
  if constexpr (CODES) {  // plo[r, g] is in lane (gid, g / 2), slot g % 2; an n-tile's group is warp-uniform
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (!(mt < MH ? cta_txt : cta_img)) continue;
#pragma unroll
      for (int i = 0; i < NTW; ++i) {
        const int nt = warp + i * kWarps;
        const int gi = nt * 8 < p.r_kv ? (nt * 8) / p.group_c : 0;
        const int src = (lane & ~3) | (gi >> 1);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float v = __shfl_sync(0xffffffffu, (gi & 1) ? plo[mt][2 * h + 1] : plo[mt][2 * h], src);
          st.o[mt][i][2 * h] += v;
          st.o[mt][i][2 * h + 1] += v;
        }
      }
    }
  }
}

template <int NMOD, int MT, int NTW, bool INT4, bool CODES = false>
__global__ void __launch_bounds__(kThreads, (MT * NTW <= 8) ? 2 : 1)
    mla_decode_tc_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  static_assert(INT4 || !CODES, "products on the codes need the int4 store");
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kRows = MT * 16;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tig = lane & 3;
  const int split = blockIdx.x, b = blockIdx.z;
  const int head0 = blockIdx.y * MT * (16 / NMOD);
  const int gsize = p.h_q / p.h_kv;
  const uint32_t sbase = smem_addr(smem);

  stage_queries<NMOD, MT>(p, g, smem, b, head0, INT4 ? 1 : kBf16Stages);
  RowInfo ri[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) ri[mt] = row_info<NMOD, MT>(p, b, head0, gsize, mt, gid);

  TcState<NMOD, MT, NTW> st;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      st.m_run[mt][h] = -INFINITY;
      st.l_part[mt][h] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < NTW; ++i) st.o[mt][i][0] = st.o[mt][i][1] = st.o[mt][i][2] = st.o[mt][i][3] = 0.f;
  }
  const float scale_log2 = p.scale * kLog2e;
  const SeqRange sr = seq_range(p, b);
  __syncthreads();  // queries and pads written
  if constexpr (CODES) {  // each row's sums of its bf16 queries over every latent group and RoPE k-step
    float* qs = reinterpret_cast<float*>(smem + g.off_qs);
    const int w = g.n_gc + g.n_rk;
    for (int idx = tid; idx < kRows * w; idx += kThreads) {
      const int row = idx / w, j = idx - row * w;
      const bool lat = j < g.n_gc;
      const unsigned char* q = lat ? smem + g.off_qlat + row * g.ql_stride + j * p.group_c * 2
                                   : smem + g.off_qrope + row * g.qr_stride + (j - g.n_gc) * 32;
      const int n = lat ? p.group_c : 16;
      float sum = 0.f;
      for (int d = 0; d < n; ++d) sum += bf16_bits_to_float(reinterpret_cast<const uint16_t*>(q)[d]);
      qs[idx] = sum;
    }
    __syncthreads();
  }

  const bool ring = INT4 && split >= g.splits;
  if (!ring) {
    // keys of the main store: the bf16 cache, or the quantized positions [lo, qlen)
    const int vlo = sr.lo, vhi = INT4 ? min(sr.hi, sr.qlen) : sr.hi;
    int t_first, t_end;
    split_tiles(vlo, vhi, split, g.splits, g.tiles_per_split, t_first, t_end);
    if (!INT4) {
      constexpr int S = kBf16Stages;
#pragma unroll
      for (int s = 0; s < S - 1; ++s) {
        if (t_first + s < t_end) {
          const uint32_t tb = sbase + g.off_tiles + s * g.tile_bytes;
          load_bf16_tile(p, g, b, tb, tb + kTile * g.c_stride, (t_first + s) * kTile, vlo, vhi, false);
        }
        cp_async_commit();
      }
      uint32_t mods_next = (NMOD == 2 && t_first < t_end) ? load_mods(p, b, t_first * kTile, vlo, vhi) : 0u;
      for (int t = t_first; t < t_end; ++t) {
        const int i = t - t_first;
        cp_async_wait<S - 2>();
        __syncthreads();
        if (t + S - 1 < t_end) {
          const uint32_t tb = sbase + g.off_tiles + ((i + S - 1) % S) * g.tile_bytes;
          load_bf16_tile(p, g, b, tb, tb + kTile * g.c_stride, (t + S - 1) * kTile, vlo, vhi, false);
        }
        cp_async_commit();
        const uint32_t mods = mods_next;
        if (NMOD == 2 && t + 1 < t_end) mods_next = load_mods(p, b, (t + 1) * kTile, vlo, vhi);
        const uint32_t tb = sbase + g.off_tiles + (i % S) * g.tile_bytes;
        compute_tile<NMOD, MT, NTW, false>(p, g, smem, tb, tb + kTile * g.c_stride, t * kTile, vlo, vhi, mods, ri,
                                    scale_log2, st);
      }
    } else {
      constexpr int S = kRawStages;
      unsigned char* ctile = smem + g.off_tiles;
      unsigned char* ktile = ctile + kTile * g.c_stride;
#pragma unroll
      for (int s = 0; s < S - 1; ++s) {
        if (t_first + s < t_end) load_raw_tile(p, g, b, sbase + g.off_raw + s * g.raw_bytes, (t_first + s) * kTile, vlo, vhi);
        cp_async_commit();
      }
      uint32_t mods_next = (NMOD == 2 && t_first < t_end) ? load_mods(p, b, t_first * kTile, vlo, vhi) : 0u;
      for (int t = t_first; t < t_end; ++t) {
        const int i = t - t_first;
        cp_async_wait<S - 2>();
        __syncthreads();  // raw tile t landed; everyone is done with the previous tile
        if (t + S - 1 < t_end)
          load_raw_tile(p, g, b, sbase + g.off_raw + ((i + S - 1) % S) * g.raw_bytes, (t + S - 1) * kTile, vlo, vhi);
        cp_async_commit();
        const uint32_t mods = mods_next;
        if (NMOD == 2 && t + 1 < t_end) mods_next = load_mods(p, b, (t + 1) * kTile, vlo, vhi);
        const unsigned char* raw = smem + g.off_raw + (i % S) * g.raw_bytes;
        if constexpr (CODES) {  // the raw stage as it landed: no dequantization pass, no extra barrier
          compute_tile<NMOD, MT, NTW, true>(p, g, smem, 0u, 0u, t * kTile, vlo, vhi, mods, ri, scale_log2, st, raw);
        } else {
          dequant_rows(raw + g.raw_cq, raw + g.raw_cs, raw + g.raw_cl, ctile, p.r_kv, p.group_c, g.shift_c,
                       g.c_stride, t * kTile, vlo, vhi);
          dequant_rows(raw + g.raw_kq, raw + g.raw_ks, raw + g.raw_kl, ktile, g.hr, p.group_r, g.shift_r,
                       g.k_stride, t * kTile, vlo, vhi);
          __syncthreads();
          compute_tile<NMOD, MT, NTW, false>(p, g, smem, smem_addr(ctile), smem_addr(ktile), t * kTile, vlo, vhi,
                                             mods, ri, scale_log2, st);
        }
      }
    }
  } else {
    // int4: the bf16 ring holds positions [qlen, hi); one split, one stage (a window is a few tiles)
    const int vlo = max(sr.lo, sr.qlen), vhi = sr.hi;
    int t_first, t_end;
    split_tiles(vlo, vhi, 0, 1, 1, t_first, t_end);
    const uint32_t ctile = sbase + g.off_tiles, ktile = ctile + kTile * g.c_stride;
    for (int t = t_first; t < t_end; ++t) {
      __syncthreads();  // everyone is done with the previous tile
      load_bf16_tile(p, g, b, ctile, ktile, t * kTile, vlo, vhi, true);
      cp_async_commit();
      const uint32_t mods = NMOD == 2 ? load_mods(p, b, t * kTile, vlo, vhi) : 0u;
      cp_async_wait<0>();
      __syncthreads();
      compute_tile<NMOD, MT, NTW, false>(p, g, smem, ctile, ktile, t * kTile, vlo, vhi, mods, ri, scale_log2, st);
    }
  }
  cp_async_wait<0>();
  // ---- partials: row sums over the quad and the warps, then max, mass and acc
  float* red_l = reinterpret_cast<float*>(smem + g.off_red) + kWarps * kRows;  // [8 warps][kRows]
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = st.l_part[mt][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      if (tig == 0) red_l[warp * kRows + mt * 16 + gid + 8 * h] = l;
    }
  }
  __syncthreads();
  const Partials w = partials(p, g.total_splits);
  if (tid < kRows) {
    int mod, head;
    row_to_head<NMOD, MT>(tid, head0, mod, head);
    if (head < p.h_q) {
      float l = 0.f;
      for (int ww = 0; ww < kWarps; ++ww) l += red_l[ww * kRows + tid];
      w.mass_at(p, split, mod, b, head) = l;
    }
  }
  if (warp == 0 && tig == 0) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int mod, head;
        row_to_head<NMOD, MT>(mt * 16 + gid + 8 * h, head0, mod, head);
        if (head < p.h_q && mod == 0) w.m_at(p, split, b, head) = st.m_run[mt][h];
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int mod, head;
      row_to_head<NMOD, MT>(mt * 16 + gid + 8 * h, head0, mod, head);
      if (head >= p.h_q) continue;
      float* out = w.acc_at(p, split, mod, b, head);
#pragma unroll
      for (int i = 0; i < NTW; ++i) {
        const int col = (warp + i * kWarps) * 8 + 2 * tig;
        if (col < p.r_kv) *reinterpret_cast<float2*>(out + col) = make_float2(st.o[mt][i][2 * h], st.o[mt][i][2 * h + 1]);
      }
    }
  }
}

// ---- the warp-rows tensor-core kernel -----------------------------------------------------------------
// FlashAttention-2's layout for the decode (MlaDecodeVariant::kTensorCoreWarpRows, docs/KERNELS.md): warp w
// owns m-tile w % MT (16 rows) and tokens [part TW, part TW + TW) of every tile, part = w / MT, TW = 64 /
// (8 / MT), with its own running max, row sums and O accumulators over all r_kv columns. The scores stay in
// registers and become P's A fragments directly, so a tile needs no shared-memory round trip for P or the
// row maxima and one barrier (the stage's) instead of three. With two modalities the text rows of the
// block's heads are m-tiles [0, MT/2) and the image rows [MT/2, MT), each with its own running max over its
// modality's tokens; a warp whose tokens of a tile hold none of its modality skips the tile. The token
// parts and the two modalities of a head are merged once, at the end, through shared memory.
// int4 (the quantized positions): each thread copies 16-byte pieces of codes (32 values) of the next tile
// into its own slot of shared memory (cp.async) and loads their scales and minima into registers, and after
// the current tile's products dequantizes its own pieces (visible to it after its cp.async.wait_group, no
// barrier) into the other bf16 buffer, which the next tile's barrier publishes: one barrier per tile.
// The bf16 ring (int4's last `window` positions) takes the bf16 path.
constexpr int kRowsMaxChunks = 4;  // int4 16-byte pieces per thread per tile (64 (r_kv + h_kv R) / 32 / 256)
// the same for the column-split instances (r_kv up to 512 with h_kv R up to 128: 1,280 pieces a tile)
constexpr int kRowsWideChunks = 5;

// The float16 scale and minimum of one int4 piece as loaded: with groups of 16, those of its first 16 values
// (low half) and second 16 (high half), two groups, in one 32-bit load; else its one group's value in the low
// half, doubled where the piece is dequantized (store_piece). No instruction touches them until then, a tile
// later, so no warp waits on these loads where they are issued (Nsight Compute, 2026-11-29: packing two 16-bit
// loads into a pair at the fetch held ~19% of the int4 kernel's stall samples, on the loads' latency).
struct Int4Scales {
  uint32_t sc = 0u, lo = 0u;
};

// Where a thread's piece lies in a tile (the same for every tile), packed: bits 0-6 token (127: none),
// bit 7 RoPE key (else latent), bits 8-15 which 32-value piece of the row, bit 16 whether its second 16
// values are the next quantization group (groups of 16), bits 17.. its scales' offset from the tile's first
// row's (token x groups a row + the group of its first value; below 2^15: rows_geometry holds r_kv + h_kv R
// to 640 values, so at most 64 x 40 groups a tile). Computed once per CTA, so that fetching a tile's pieces
// divides nothing and multiplies little.
// (The bound from the limits themselves: a thread's pieces, at most kRowsWideChunks of 32 values, hold a row of
// at most kThreads kRowsWideChunks / 2 values, in groups of at least 16.)
static_assert(kTile * (kThreads * kRowsWideChunks / 2 / 16) < (1 << 15),
              "piece_map's 15-bit scale offsets: a tile's rows hold too many int4 groups");
__device__ __forceinline__ uint32_t piece_map(const MlaDecodeParams& p, const Geom& g, int c) {
  const int per_c = p.r_kv / 32, per_r = g.rope_ext ? 0 : g.hr / 32;  // (external RoPE scores: the latent alone)
  const int nc = kTile * per_c, nr = kTile * per_r;
  auto pack = [](int t, bool rope, int col32, int group, int groups) {
    return uint32_t(t) | (rope ? 128u : 0u) | (uint32_t(col32) << 8) | (group == 16 ? 1u << 16 : 0u) |
           (uint32_t(t * groups + col32 * 32 / group) << 17);
  };
  if (c < nc) {
    const int t = c / per_c;
    return pack(t, false, c - t * per_c, p.group_c, g.q_groups_c);
  }
  if (c < nc + nr) {
    c -= nc;
    const int t = c / per_r;
    return pack(t, true, c - t * per_r, p.group_r, g.q_groups_r);
  }
  return 127u;
}

__device__ __forceinline__ uint32_t load_u16(const uint16_t* ptr) {
  return static_cast<uint32_t>(__ldg(reinterpret_cast<const unsigned short*>(ptr)));
}
__device__ __forceinline__ uint32_t load_u32(const uint16_t* ptr) {
  return __ldg(reinterpret_cast<const unsigned int*>(ptr));
}

// One int4 array's rows (the latent's or the RoPE key's) from a tile's first token: codes, scales and minima.
struct Int4Rows {
  const uint8_t* codes;
  const uint16_t *sc, *lo;
};
__device__ __forceinline__ Int4Rows int4_rows(const MlaDecodeParams& p, const Geom& g, bool latent, int b,
                                              int tok0) {
  const int64_t row = int64_t(b) * p.t_cap + tok0;
  if (latent) {
    const int64_t gi = row * g.q_groups_c;
    return {p.latent_q + row * (p.r_kv / 2), p.latent_scale + gi, p.latent_lo + gi};
  }
  const int64_t gi = row * g.q_groups_r;
  return {p.k_rope_q + row * (g.hr / 2), p.k_rope_scale + gi, p.k_rope_lo + gi};
}

// A piece's scales and minima, sc and lo at its group (groups of 16, two: the second 16 values are the next group,
// and both halves' come in one 4-byte load each; the group index even there and the arrays 4-byte aligned,
// rows_geometry).
__device__ __forceinline__ void load_piece_scales(const uint16_t* sc, const uint16_t* lo, bool two, Int4Scales& x) {
  if (two) {
    x.sc = load_u32(sc);
    x.lo = load_u32(lo);
  } else {
    x.sc = load_u16(sc);
    x.lo = load_u16(lo);
  }
}

// Starts the copy of piece pm (piece_map) of the tile at tok0 (lat, rope: its rows) into the thread's slot and
// loads its scales and minima (tokens outside [vlo, vhi): zero codes, scales and minima, so zeros). RKV, HR > 0:
// r_kv and h_kv * d_rope as compile-time constants, else the runtime values.
template <int RKV = 0, int HR = 0>
__device__ __forceinline__ void fetch_piece(const MlaDecodeParams& p, const Geom& g, uint32_t pm, const Int4Rows& lat,
                                            const Int4Rows& rope, int tok0, int vlo, int vhi, uint32_t slot,
                                            Int4Scales& x) {
  x.sc = x.lo = 0u;
  const int t = pm & 127u;
  if (t == 127) return;
  const bool latent = !(pm & 128u);
  const int j = tok0 + t;
  const bool valid = j >= vlo && j < vhi;
  const int row_bytes = latent ? (RKV > 0 ? RKV : p.r_kv) / 2 : (HR > 0 ? HR : g.hr) / 2;
  const uint8_t* codes = (latent ? lat.codes : rope.codes) + t * row_bytes + ((pm >> 8) & 255u) * 16;
  cp_async(slot, valid ? codes : lat.codes, 16, valid);
  if (!valid) return;
  const uint32_t gi = pm >> 17;
  load_piece_scales((latent ? lat.sc : rope.sc) + gi, (latent ? lat.lo : rope.lo) + gi, pm & (1u << 16), x);
}

// (x & 0x000F000F) | 0x43004300 in one LOP3: the nibbles i and i + 4 of a code word (x shifted by 4 i) as
// the bf16 pair 128 + q, exactly (bf16 steps are 1 between 128 and 256).
__device__ __forceinline__ uint32_t nibble_pair_bf16(uint32_t x) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(x), "n"(0x000F000F), "n"(0x43004300));
  return r;
}

// The 8 codes of a 32-bit word as bf16 x = code * sc + lo in pair order: word i of the result holds elements i
// (low half) and i + 4 (high half). A code pair becomes 128 + q (nibble_pair_bf16), minus 128 (exact), then one
// bf16 FMA with the scale and minimum (sc, lo: the same value in both halves). k128: 128 in both halves, made by
// the caller once for all its words (the conversion is inline assembly, which the compiler does not merge).
__device__ __forceinline__ uint4 dequant_word_pairs_bf16(uint32_t q, __nv_bfloat162 sc, __nv_bfloat162 lo,
                                                         __nv_bfloat162 k128) {
  uint32_t r[4];  // r[i] = (x_i, x_{i+4})
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t bits = nibble_pair_bf16(q >> (4 * i));
    const __nv_bfloat162 v = __hfma2(__hsub2(*reinterpret_cast<const __nv_bfloat162*>(&bits), k128), sc, lo);
    r[i] = *reinterpret_cast<const uint32_t*>(&v);
  }
  return make_uint4(r[0], r[1], r[2], r[3]);
}
// The same in element order (byte permutes put the pairs in place).
__device__ __forceinline__ uint4 dequant_word_bf16(uint32_t q, __nv_bfloat162 sc, __nv_bfloat162 lo,
                                                   __nv_bfloat162 k128) {
  const uint4 r = dequant_word_pairs_bf16(q, sc, lo, k128);
  return make_uint4(__byte_perm(r.x, r.y, 0x5410), __byte_perm(r.z, r.w, 0x5410), __byte_perm(r.x, r.y, 0x7632),
                    __byte_perm(r.z, r.w, 0x7632));
}

// x = code * scale + lo from the thread's slot into the bf16 tile, two values per bf16 instruction: a code
// pair (elements i and i + 4 of a 32-bit word) becomes 128 + q (nibble_pair_bf16), minus 128 (exact), then
// one bf16 FMA with the scale and minimum rounded to bf16. The pairs stay in pair order (dequant_word_pairs_bf16:
// each 8 channels stored as 0 4 1 5 2 6 3 7), the CTA staging its queries' channels in the same order
// (stage_queries' `pairs`), which leaves the scores as they are, and putting O's columns back once, where its
// partials are written: no byte permutes per tile (session 18: 4 of a word's 19 instructions). An 8-channel block
// never spans two heads' RoPE dims: rows_geometry takes d_rope % 8 == 0 only.
// Against dequant_rows' fp32 FMA of the float16 scale and minimum, rounded once to bf16, the scale's and
// minimum's roundings add at most 2^-9 (|q sc| + |lo|): a few hundredths of a quantization step, well inside
// the quantization's own error (half a step). Four bf16 instructions per two values, where float16 FMAs and
// conversions through float32 took seven (Nsight Compute's source counters, 2026-11-29).
// (the piece's 32 values at dst in the tile; two: groups of 16, x holding both halves' scales and minima)
__device__ __forceinline__ void store_piece_at(unsigned char* dst, const unsigned char* slot, const Int4Scales& x,
                                               bool two) {
  const uint4 q4 = *reinterpret_cast<const uint4*>(slot);
  const uint32_t words[4] = {q4.x, q4.y, q4.z, q4.w};
  // the two 16-value halves' scales and minima (float16 pairs; one group's value doubled) as bf16 pairs
  const uint32_t sc_h = two ? x.sc : __byte_perm(x.sc, 0u, 0x1010);
  const uint32_t lo_h = two ? x.lo : __byte_perm(x.lo, 0u, 0x1010);
  const __nv_bfloat162 sc2 = __float22bfloat162_rn(__half22float2(*reinterpret_cast<const __half2*>(&sc_h)));
  const __nv_bfloat162 lo2 = __float22bfloat162_rn(__half22float2(*reinterpret_cast<const __half2*>(&lo_h)));
  const __nv_bfloat162 k128 = __float2bfloat162_rn(128.f);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const __nv_bfloat162 sc = half ? __high2bfloat162(sc2) : __low2bfloat162(sc2);
    const __nv_bfloat162 lo = half ? __high2bfloat162(lo2) : __low2bfloat162(lo2);
#pragma unroll
    for (int w2 = 0; w2 < 2; ++w2)
      *reinterpret_cast<uint4*>(dst + (half * 2 + w2) * 16) =
          dequant_word_pairs_bf16(words[half * 2 + w2], sc, lo, k128);
  }
}
__device__ __forceinline__ void store_piece(const Geom& g, uint32_t pm, const unsigned char* slot,
                                            const Int4Scales& x, unsigned char* ctile, unsigned char* ktile) {
  const int t = pm & 127u;
  if (t == 127) return;
  const int col32 = (pm >> 8) & 255u;
  unsigned char* dst = (pm & 128u) ? ktile + t * g.k_stride + col32 * 64 : ctile + t * g.c_stride + col32 * 64;
  store_piece_at(dst, slot, x, pm & (1u << 16));
}

// The online softmax's running max of a thread's two rows (gid, gid + 8), after a tile whose scores reached mx
// in the thread's columns (reduced here over the quad, which holds a row's tokens): alpha, the factor the row's
// sums and O take, and m_use, the max the tile's weights 2^(s - m_use) are taken against (0 while none is
// finite). The running max moves only when a score passes it by more than kMaxSlack (log2 domain); until then the
// tile's weights 2^(s - m_run) stay below 2^kMaxSlack, which the float32 sums and the bf16 P hold as well
// as weights below 1, and O is not rescaled. With random scores a row's max rises a little in most tiles
// (Nsight Compute: O's 64 multiplies a thread ran in ~90% of them); by kMaxSlack, a few times a row.
__device__ __forceinline__ void running_max_step(float (&mx)[2], float (&m_run)[2], float (&alpha)[2],
                                                 float (&m_use)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    alpha[h] = 1.f;
    if (mx[h] > m_run[h] + kMaxSlack) {  // the first finite max always (-inf + slack is -inf)
      alpha[h] = fast_exp2(m_run[h] - mx[h]);
      m_run[h] = mx[h];
    }
    m_use[h] = m_run[h] == -INFINITY ? 0.f : m_run[h];
  }
}

// One warp's share of one tile: scores of its 16 rows against its TW tokens, online softmax, O += P C.
// mods: the tile's 64 modality bytes in shared memory (two modalities), my_mod the warp's rows' modality.
// RKV, HR, DR > 0: r_kv, h_kv * d_rope and d_rope as compile-time constants (the instances built for those
// sizes: loop bounds, strides and shared-memory offsets fold into the instructions), else the runtime values.
// GP 8: grouped rows (row_to_head), the m-tile's rows 0-7 one kv group and 8-15 the next, so the RoPE product
// takes those two with fixed masks. Those instances also take full tiles unmasked (FT): with `full` (the tile's
// tokens all valid and all of the warp's rows' modality, which the caller knows at the tile's barrier) no score
// is masked, so the per-token checks and the masking selects are skipped; the scores, and so the results, are
// bit for bit the masked path's.
// CS > 1: column splits (wide latents, r_kv > 256, where 16 rows x r_kv of O do not fit a warp's registers):
// the CS warps of a (m-tile, token part) group each hold O's columns [cs kc, (cs + 1) kc), kc = r_kv / CS, and
// compute the scores' products over that slice of the latent (and every CS-th 16-wide k-step of the RoPE dims);
// they add their partial scores through shared memory (xch, float4 [CS][NS][32] for the group, behind a named
// barrier `bar` of the group's 32 CS threads) in warp order, so each holds the same scores, maxima and P, and
// no product is computed twice. xch is written once per tile: the tile's __syncthreads orders a tile's reads
// before the next tile's writes.
// EXT (external RoPE scores, g.rope_ext): rsc holds the tile's q_r . k_r per token and head, [64][h_q] floats
// from the tile's first token, and the first warp of a column-split group adds them where the RoPE product
// would be (instances of their own: the others keep their registers, these have no RoPE product).
template <int NMOD, int NS, int NO, int RKV = 0, int HR = 0, int DR = 0, int GP = 0, int CS = 1, bool EXT = false>
__device__ __forceinline__ void rows_tile(const MlaDecodeParams& p, const Geom& g, uint32_t sbase, uint32_t ctile,
                                          uint32_t ktile, const uint8_t* mods, int tok0, int vlo, int vhi, int mt,
                                          int c0, int my_mod, const RowInfo& ri, float scale_log2,
                                          float (&o)[NO][4], float (&m_run)[2], float (&l)[2], bool full = false,
                                          int cs = 0, float4* xch = nullptr, int bar = 0,
                                          const float* rsc = nullptr) {
  static_assert(GP == 0 || GP == 8, "grouped rows: two kv groups per 16-row m-tile");
  static_assert(CS == 1 || (RKV == 0 && GP == 0), "column splits: the generic instances only");
  static_assert(!EXT || (RKV == 0 && GP == 0 && NO == 32),
                "external RoPE scores: the generic r_kv > 128 instances");
  constexpr bool FT = GP > 0;  // full tiles unmasked
  const int lane = threadIdx.x & 31, tig = lane & 3;
  // the geometry's formulas (mla_decode.cu, tile_strides_and_queries) on the constants where there are some;
  // read where used, as the generic instance always read them
  auto r_kv = [&] { return RKV > 0 ? RKV : p.r_kv; };
  auto d_rope = [&] { return DR > 0 ? DR : p.d_rope; };
  auto rope_pad = [&] { return DR > 0 ? (DR + 15) / 16 * 16 : g.rope_pad; };
  auto c_stride = [&] { return RKV > 0 ? (RKV + 8) * 2 : g.c_stride; };
  auto ql_stride = [&] { return RKV > 0 ? (RKV + 8) * 2 : g.ql_stride; };
  auto k_stride = [&] { return HR > 0 ? (HR + 8) * 2 : g.k_stride; };
  auto qr_stride = [&] { return DR > 0 ? ((DR + 15) / 16 * 16 + 8) * 2 : g.qr_stride; };
  const int kc = r_kv() / CS;  // O's columns (and the latent's k range) of this warp: [cs kc, (cs + 1) kc)
  // the thread's score columns: n-tile n, e = 0, 1 -> token c0 + 8 n + 2 tig + e of the tile
  const bool masked = !(FT && full);  // warp-uniform (CTA-uniform per modality)
  bool keep[NS][2];
  if (masked) {
    bool any = false;
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = c0 + 8 * n + 2 * tig + e, j = tok0 + c;
        bool k = j >= vlo && j < vhi;
        if (NMOD == 2) k = k && ((mods[c] != 0) == (my_mod == 1));
        keep[n][e] = k;
        any = any || k;
      }
    }
    if (!__any_sync(0xffffffffu, any)) return;  // none of the warp's tokens is of its rows' modality
  }

  float s[NS][4];
#pragma unroll
  for (int n = 0; n < NS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  if constexpr (EXT) {  // external RoPE scores
    if (cs == 0) {
#pragma unroll
      for (int n = 0; n < NS; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float* r = rsc + (c0 + 8 * n + 2 * tig + e) * p.h_q;
#pragma unroll
          for (int h = 0; h < 2; ++h)
            if (ri.head[h] >= 0) s[n][2 * h + e] += r[ri.head[h]];
        }
      }
    }
  } else {  // RoPE: the block-diagonal query (rows of other groups masked) against each spanned group's keys
    const uint32_t a_addr = sbase + g.off_qrope + (mt * 16 + (lane & 15)) * qr_stride() + (lane >> 4) * 16;
    const uint32_t b_addr = ktile + (c0 + (lane & 7) + (lane >> 4) * 8) * k_stride() + ((lane >> 3) & 1) * 16;
    for (int kr = 16 * cs; kr < rope_pad(); kr += 16 * CS) {
      uint32_t a0, a1, a2, a3;
      ldsm_x4(a_addr + kr * 2, a0, a1, a2, a3);
      auto group = [&](int gq, uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3) {
#pragma unroll
        for (int n = 0; n < NS; n += 2) {
          uint32_t b0, b1, b2, b3;
          ldsm_x4(b_addr + n * 8 * k_stride() + (gq * d_rope() + kr) * 2, b0, b1, b2, b3);
          mma_bf16(s[n], x0, x1, x2, x3, b0, b1);
          mma_bf16(s[n + 1], x0, x1, x2, x3, b2, b3);
        }
      };
      if constexpr (GP > 0) {  // grouped rows: rows 0-7 (a0, a2) are group g_lo, rows 8-15 (a1, a3) the next
        group(ri.g_lo, a0, 0u, a2, 0u);
        group(ri.g_lo + 1, 0u, a1, 0u, a3);
      } else {
        for (int gq = ri.g_lo; gq <= ri.g_hi; ++gq) {
          const bool m0 = ri.grp[0] == gq, m1 = ri.grp[1] == gq;
          group(gq, m0 ? a0 : 0u, m1 ? a1 : 0u, m0 ? a2 : 0u, m1 ? a3 : 0u);
        }
      }
    }
  }
  {  // latent
    const uint32_t a_addr = sbase + g.off_qlat + (mt * 16 + (lane & 15)) * ql_stride() + (lane >> 4) * 16;
    const uint32_t b_addr = ctile + (c0 + (lane & 7) + (lane >> 4) * 8) * c_stride() + ((lane >> 3) & 1) * 16;
#pragma unroll 2
    for (int k = cs * kc; k < cs * kc + kc; k += 16) {
      uint32_t a0, a1, a2, a3;
      ldsm_x4(a_addr + k * 2, a0, a1, a2, a3);
#pragma unroll
      for (int n = 0; n < NS; n += 2) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4(b_addr + n * 8 * c_stride() + k * 2, b0, b1, b2, b3);
        mma_bf16(s[n], a0, a1, a2, a3, b0, b1);
        mma_bf16(s[n + 1], a0, a1, a2, a3, b2, b3);
      }
    }
  }
  if constexpr (CS > 1) {  // the group's partial scores, added in warp order (the same sums in every warp)
#pragma unroll
    for (int n = 0; n < NS; ++n) xch[(cs * NS + n) * 32 + lane] = make_float4(s[n][0], s[n][1], s[n][2], s[n][3]);
    named_barrier(bar, 32 * CS);
    float t[NS][4];
#pragma unroll
    for (int n = 0; n < NS; ++n) t[n][0] = t[n][1] = t[n][2] = t[n][3] = 0.f;
#pragma unroll
    for (int q = 0; q < CS; ++q) {
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        const float4 v = q == cs ? make_float4(s[n][0], s[n][1], s[n][2], s[n][3]) : xch[(q * NS + n) * 32 + lane];
        t[n][0] += v.x;
        t[n][1] += v.y;
        t[n][2] += v.z;
        t[n][3] += v.w;
      }
    }
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = t[n][e];
    }
  }
  // scores in the log2 domain, masked (a full tile, FT: the same scores without the masks); the new running
  // max of the thread's rows gid, gid + 8
  float mx[2] = {-INFINITY, -INFINITY};
  auto scores = [&](auto masked_c) {
    constexpr bool kMasked = decltype(masked_c)::value;
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float x = (s[n][2 * h + e] + ri.bias[h]) * scale_log2;
          const float v = !kMasked || keep[n][e] ? x : -INFINITY;
          s[n][2 * h + e] = v;
          mx[h] = fmaxf(mx[h], v);
        }
      }
    }
  };
  if (masked) {
    scores(std::true_type{});
  } else {
    scores(std::false_type{});
  }
  float m_use[2], alpha[2];
  running_max_step(mx, m_run, alpha, m_use);
#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] *= alpha[h];
  // rescale O only when a row's max moved (a warp-uniform skip)
  if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f)) {
#pragma unroll
    for (int i = 0; i < NO; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        o[i][2 * h] *= alpha[h];
        o[i][2 * h + 1] *= alpha[h];
      }
    }
  }
#pragma unroll
  for (int n = 0; n < NS; ++n) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float e0 = fast_exp2(s[n][2 * h] - m_use[h]), e1 = fast_exp2(s[n][2 * h + 1] - m_use[h]);
      s[n][2 * h] = e0;
      s[n][2 * h + 1] = e1;
      l[h] += e0 + e1;
    }
  }
  // O += P C: P's A fragment of 16 tokens is the score accumulators of two n-tiles, rounded to bf16
#pragma unroll
  for (int kk = 0; kk < NS / 2; ++kk) {
    const uint32_t a0 = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), a1 = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
    const uint32_t a2 = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    const uint32_t a3 = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    const uint32_t b_addr = ctile + (c0 + kk * 16 + (lane & 15)) * c_stride() + (lane >> 4) * 16 + cs * kc * 2;
#pragma unroll
    for (int i = 0; i < NO; i += 2) {
      if (i * 8 < kc) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_trans(b_addr + i * 16, b0, b1, b2, b3);
        mma_bf16(o[i], a0, a1, a2, a3, b0, b1);
        mma_bf16(o[i + 1], a0, a1, a2, a3, b2, b3);
      }
    }
  }
}

// The modality bytes v of positions [j0, j0 + 16) (one 16-byte piece): whether those within [j_lo, j_hi) include a
// key of modality `want` (ORed into hit) and one of the other (ORed into other).
__device__ __forceinline__ void piece_modalities(const uint4& v, int j0, int j_lo, int j_hi, bool want, bool& hit,
                                                 bool& other) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int e = 0; e < 16; ++e) {
    const int j = j0 + e;
    const bool in = j >= j_lo && j < j_hi;
    const bool img = ((words[e / 4] >> (8 * (e % 4))) & 0xffu) != 0;
    hit = hit || (in && img == want);
    other = other || (in && img != want);
  }
}

// MODCTA (modality CTAs, two-set models): NMOD == 1's layout, the rows being the heads of one modality, cta_mod
// (blockIdx.x % 2, split blockIdx.x / 2; or, g.image_first, the image where blockIdx.z < b, split blockIdx.x:
// the kernel says which, and the sequence b). The CTA attends the tokens of its modality only and skips the
// tiles that hold none without loading them: all eight warps work on every tile it loads, where the joint
// layout (NMOD == 2) idles the warps of the modality a tile lacks. Its partials are split 2 split + cta_mod's, with
// the other modality's mass 0 (the combine then skips that accumulator, which the CTA does not write).
// GP > 0: grouped rows (row_to_head), GP rows per kv group; and full tiles unmasked (FT): tiles whose tokens
// are all valid and of the warp's rows' modality skip the masks (rows_tile); with two modalities' bytes the
// tile's barrier counts its image tokens (__syncthreads_count) to tell.
// CS > 1: column splits (rows_tile): warp w is m-tile w % MT, column slice (w / MT) % CS, token part w / (MT CS);
// generic sizes. int4: kRowsWideChunks pieces a thread, and one bf16 stage (two do not fit beside the raw slots
// at r_kv 512): a barrier before a tile is dequantized (or, over the ring, loaded) into it.
// PURE_ONLY (modality CTAs, p.pure_splits, g.pure_launch): the instance of the pure splits' launch. Its CTAs
// leave every split but a pure one (whose partials the other instance's CTAs then leave, each launch finding the
// same splits pure), and it compiles the pure walk alone: none of the scan's state, no tile modality bytes, the
// one-set kernel's tile. One kernel holding both walks keeps the registers of the larger: over int4 its pure
// walk ran ~26% slower than the one-set kernel over the same keys (b = 32 x 32k, text; Nsight Compute: 15% more
// instructions, 9 spill loads a warp and tile, parameters and thread indices loaded again each tile).
template <int NMOD, int MT, int NO, bool INT4, bool MODCTA, int RKV, int HR, int DR, int GP, int CS, bool EXT,
          bool PURE_ONLY>
__device__ __forceinline__ void rows_kernel_body(const MlaDecodeParams& p, const Geom& g, const int cta_mod,
                                                 const int split, const int b) {
  static_assert(CS == 1 || (RKV == 0 && GP == 0), "column splits: generic sizes");
  static_assert(!PURE_ONLY || (MODCTA && CS == 1 && !EXT), "the pure splits' instance: modality CTAs, one column");
  constexpr bool kOneStage = CS > 1 && INT4;  // one bf16 tile buffer
  constexpr int TP = kWarps / (MT * CS);  // token parts
  constexpr int TW = kTile / TP;   // tokens per warp per tile
  constexpr int NS = TW / 8;       // score n-tiles per warp
  constexpr int MH = NMOD == 1 ? MT : MT / 2;
  constexpr int kRows = MT * 16;
  constexpr int CH = CS > 1 ? kRowsWideChunks : NO / 8;  // int4 pieces per thread per tile
  constexpr bool kMods = NMOD == 2 || MODCTA;  // tokens are kept or dropped by their modality
  static_assert(NS % 2 == 0 && NO % 2 == 0 && (CH <= kRowsMaxChunks || CS > 1), "rows kernel sizes");
  static_assert(NMOD == 1 || MT % 2 == 0, "two modalities need an even number of m-tiles");
  static_assert(!MODCTA || NMOD == 1, "modality CTAs hold one modality's rows");
  constexpr bool FT = GP > 0;  // full tiles unmasked (rows_tile)
  extern __shared__ __align__(16) unsigned char smem[];
  if constexpr (RKV > 0) {  // built for these sizes: the host takes it for them only (rows_kernel_for)
    if (p.r_kv != RKV || g.hr != HR || p.d_rope != DR) __trap();
  }
  if (EXT != (g.rope_ext != 0)) __trap();  // the instances with the external RoPE scores take exactly those plans
  if (PURE_ONLY && !(p.pure_splits && g.pure_launch)) __trap();  // launched by a plan with the pure launch only
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tig = lane & 3;
  const int mt = warp % MT, cs = (warp / MT) % CS, part = warp / (MT * CS), c0 = part * TW;
  // column splits: the group's partial scores (float4 [CS][NS][32]) and its named barrier
  float4* const xch =
      CS > 1 ? reinterpret_cast<float4*>(smem + g.off_xch) + (mt + MT * part) * CS * NS * 32 : nullptr;
  const int xbar = 1 + mt + MT * part;
  const int my_mod = MODCTA ? cta_mod : (NMOD == 2 && mt >= MH) ? 1 : 0;
  const int head0 = blockIdx.y * (GP > 0 ? MT * (16 / NMOD) / GP * (GP - 1) : MT * (16 / NMOD));
  const uint32_t sbase = smem_addr(smem);

  const SeqRange sr = seq_range(p, b);
  // the cache's image bound (params.h's image_end; the pure test below), loaded beside the sequence's range: the two
  // loads in one round trip, where the test's load waited for the range's and the split's arithmetic
  const int image_end_b = (MODCTA && p.pure_splits && p.image_end) ? p.image_end[b] : 0;
  // the interior tiles' copy with the sizes as constants (bf16 stores, the RoPE key in the tiles; else unused)
  constexpr bool kLeanCopy = RKV > 0 && HR > 0 && !EXT && !INT4;
  const auto lean_copy = [&] {
    if constexpr (kLeanCopy) {
      return InteriorTileCopy<RKV, HR>(p, b);
    } else {
      return 0;
    }
  }();

  const bool ring = INT4 && split >= g.splits;
  const bool quant = INT4 && !ring;
  // int4 tiles in pair order (store_piece): the queries' channels staged in that order, O's columns put back where
  // the partials are written (the ring's bf16 tiles in element order)
  const bool pairs = quant;
  int vlo, vhi, t_first, t_end;
  if (!ring) {  // keys of the main store: the bf16 cache, or the quantized positions [lo, qlen)
    vlo = sr.lo;
    vhi = INT4 ? min(sr.hi, sr.qlen) : sr.hi;
    if (MODCTA && g.bound_segments > 0) {  // the sequence's segments (params.h's split_bounds)
      segment_split_tiles(vlo, vhi, split, g.splits, g.tiles_per_split,
                          p.split_bounds + int64_t(b) * (g.bound_segments + 1), g.bound_segments, t_first, t_end);
    } else {
      split_tiles(vlo, vhi, split, g.splits, g.tiles_per_split, t_first, t_end);
    }
  } else {  // int4: the bf16 ring holds positions [qlen, hi), one split
    vlo = max(sr.lo, sr.qlen);
    vhi = sr.hi;
    split_tiles(vlo, vhi, 0, 1, 1, t_first, t_end);
  }
  // the modality bytes of a tile, fetched one tile ahead by threads 0..63 (two modalities)
  uint8_t* mods_sm = smem + g.off_mods;  // [2][64]
  const uint8_t* mod_row = kMods ? p.modality + int64_t(b) * p.t_cap : nullptr;
  auto fetch_mod = [&](int t) -> uint8_t {
    const int j = t * kTile + tid;
    return (kMods && tid < kTile && j >= vlo && j < vhi) ? mod_row[j] : uint8_t(0);
  };
  // The tiles to attend, in order: every tile of the split, or (MODCTA) those holding a token of the CTA's
  // modality, found kThreads tiles at a time: the CTA reads the window's modality bytes together (16-byte
  // pieces where the rows allow, else one byte per thread in 64 rounds) and a thread that finds one sets its
  // tile's flag; the flags become the bits of tmask. An empty CTA (most of one modality's, in a context
  // mostly of the other) costs the scan and its partials' header alone. Every thread calls next_tile at the
  // same points with the same argument (the scan has barriers).
  // Pure runs (kPureLoop, p.pure_splits): the scan also flags the tiles holding a key of the other modality,
  // and marks in tlong the tiles of the window that lie in runs of at least kPureRunTiles consecutive tiles
  // holding keys of the CTA's modality only: the bf16 walk takes those runs in its pure loop (below).
  constexpr bool kPureLoop = MODCTA && !INT4 && NO <= 16;
  const bool runs_on = kPureLoop && p.pure_splits;
  // rows of whole 16-byte pieces: no piece crosses a row's end, nor the array's
  const bool mod_pieces = (reinterpret_cast<uintptr_t>(p.modality) & 15u) == 0 && (p.t_cap & 15) == 0;
  uint32_t* tmask = reinterpret_cast<uint32_t*>(smem + g.off_tmask);  // [kWarps]: tiles [win, win + kThreads)
  uint32_t* tlong = tmask + kWarps;                                    // [kWarps]: the window's long pure runs
  uint8_t* tflag = smem + g.off_tmask + 2 * kWarps * 4;                // [kThreads]: a key of the CTA's modality
  uint8_t* toth = tflag + kThreads;                                    // [kThreads]: a key of the other one
  uint8_t* tstart = toth + kThreads;                                   // [kThreads]: a long pure run starts here
  int win = -(1 << 30);
  auto next_tile = [&](int from) -> int {
    if constexpr (!MODCTA) {
      return from;
    } else {
      while (from < t_end) {
        if (from < win || from >= win + kThreads) {
          __syncthreads();  // every thread is done reading the previous bits
          tflag[tid] = 0;
          toth[tid] = 0;
          __syncthreads();
          const int j_lo = max(vlo, from * kTile), j_hi = min(vhi, t_end * kTile);
          const bool want = cta_mod == 1;
          if (mod_pieces) {
            // rows of whole 16-byte pieces (no piece crosses a row's end, nor the array's): thread tid reads
            // quarter-tiles tid + 256 k, all four loads at once
            uint4 v[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const int j0 = from * kTile + (k * kThreads + tid) * 16;
              v[k] = (j0 < j_hi && j0 + 16 > j_lo) ? *reinterpret_cast<const uint4*>(mod_row + j0)
                                                    : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              bool hit = false, oth = false;
              piece_modalities(v[k], from * kTile + (k * kThreads + tid) * 16, j_lo, j_hi, want, hit, oth);
              if (hit) tflag[(k * kThreads + tid) / 4] = 1;
              if (runs_on && oth) toth[(k * kThreads + tid) / 4] = 1;
            }
          } else {  // one byte per thread and round: round r, warp w reads tile 4 r + w / 2
#pragma unroll 16
            for (int r = 0; r < kTile; ++r) {
              const int j = from * kTile + r * kThreads + tid;
              const bool in = j >= j_lo && j < j_hi;
              const bool img = in && mod_row[j] != 0;
              const bool hit = in && img == want, oth = in && img != want;
              if (__any_sync(0xffffffffu, hit) && lane == 0) tflag[r * (kThreads / kTile) + warp / 2] = 1;
              if (__any_sync(0xffffffffu, runs_on && oth) && lane == 0) toth[r * (kThreads / kTile) + warp / 2] = 1;
            }
          }
          __syncthreads();  // every thread's flags are written
          const uint32_t bits = __ballot_sync(0xffffffffu, tflag[tid] != 0);
          if (lane == 0) tmask[warp] = bits;
          if (runs_on) {  // tile tid starts kPureRunTiles pure tiles; tile tid lies in such a run
            bool start = tid + kPureRunTiles <= kThreads;
            for (int q = 0; q < kPureRunTiles && start; ++q) start = tflag[tid + q] != 0 && toth[tid + q] == 0;
            tstart[tid] = start;
            __syncthreads();
            bool in_run = false;
            for (int q = 0; q < kPureRunTiles && q <= tid; ++q) in_run = in_run || tstart[tid - q] != 0;
            const uint32_t lbits = __ballot_sync(0xffffffffu, in_run);
            if (lane == 0) tlong[warp] = lbits;
          }
          __syncthreads();
          win = from;
        }
        const int k = from - win;
        for (int w = k >> 5; w < kWarps; ++w) {
          uint32_t bits = tmask[w];
          if (w == (k >> 5)) bits &= ~0u << (k & 31);
          if (bits) return win + w * 32 + __ffs(int(bits)) - 1;
        }
        from = win + kThreads;
      }
      return t_end;
    }
  };
  // Pure runs: whether tile x (of the current window) lies in a long pure run, and the end of the run at x
  // (its first tile past the run, at most the window's end and t_end). CTA-uniform (shared memory).
  auto in_long = [&](int x) -> bool {
    const int k = x - win;
    return k >= 0 && k < kThreads && ((tlong[k >> 5] >> (k & 31)) & 1u);
  };
  auto run_end = [&](int x) -> int {
    const int k = x - win;
    for (int w = k >> 5; w < kWarps; ++w) {
      uint32_t gaps = ~tlong[w];
      if (w == (k >> 5)) gaps &= ~0u << (k & 31);
      if (gaps) return min(t_end, win + w * 32 + __ffs(int(gaps)) - 1);
    }
    return min(t_end, win + kThreads);
  };
  const Partials w = partials(p, g.total_splits);
  const int ps = MODCTA ? 2 * split + cta_mod : split;  // the partials' split (MODCTA: split and modality)
  // A row's partials header: its mass and (once per head) the max; a modality CTA also zeroes the other
  // modality's mass, whose accumulator it does not write (the combine skips it).
  auto write_header = [&](int row, float m, float mass) {
    int mod, head;
    row_to_head<NMOD, MT, GP>(row, head0, mod, head, cta_mod);
    if (head < p.h_q) {
      w.mass_at(p, ps, mod, b, head) = mass;
      if (MODCTA) w.mass_at(p, ps, 1 - mod, b, head) = 0.f;
      if (MODCTA || mod == 0) w.m_at(p, ps, b, head) = m;
    }
  };
  // pure (modality CTAs, p.pure_splits): the split's keys are all of the CTA's modality, so every tile of the
  // split is attended (each overlaps the key range, so holds a key of the CTA's modality: next_tile would
  // return t + 1) and every valid key is of the CTA's modality. One pass over the split's modality bytes tells
  // (and whether it holds a key of the CTA's modality at all: else the CTA exits before any window's scan).
  // bf16 walks a pure split in a loop of its own, as the one-set kernel walks its tiles, with its tile (no
  // modality bytes: rows_tile<1>, which masks by validity alone and so keeps the same scores), no per-tile fetch
  // nor count, none of the scan's state live in it (tile_loop's PURE; measured: 11% faster than the one loop's
  // runtime skips, docs/KERNELS.md). int4 keeps the one loop with the skips at run time (PURE false, rpure):
  // its two loops spilled hundreds of bytes at the 128-register cap, and ran 1.3-1.5x slower.
  // With the cache's image bound (params.h's image_end) the keys from it on are text: the pass reads the split's
  // modality bytes below it only, and a split wholly above it (every split of a text-only context) none.
  bool pure = false;
  if constexpr (MODCTA) {
    if (p.pure_splits) {
      const int j_lo = max(vlo, t_first * kTile), j_end = min(vhi, t_end * kTile);
      const int j_hi = p.image_end ? min(j_end, max(j_lo, image_end_b)) : j_end;
      const bool want = cta_mod == 1;
      const bool text_above = j_end > j_hi;  // keys of the split at or above the bound: text
      bool mine = text_above && !want, other = text_above && want;
      if (mod_pieces) {  // four 16-byte pieces in flight per thread and round
        for (int j0 = (j_lo & ~15) + tid * 16; j0 < j_hi; j0 += 4 * kThreads * 16) {
          uint4 v[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const int jk = j0 + k * kThreads * 16;
            v[k] = jk < j_hi ? *reinterpret_cast<const uint4*>(mod_row + jk) : make_uint4(0, 0, 0, 0);
          }
#pragma unroll
          for (int k = 0; k < 4; ++k) piece_modalities(v[k], j0 + k * kThreads * 16, j_lo, j_hi, want, mine, other);
        }
      } else {
#pragma unroll 4
        for (int j = j_lo + tid; j < j_hi; j += kThreads) {
          const bool img = mod_row[j] != 0;
          mine = mine || img == want;
          other = other || img != want;
        }
      }
      if (!__syncthreads_or(mine)) {  // no key of the CTA's modality: empty partials (the scanning launch's)
        if (!PURE_ONLY && tid < kRows) write_header(tid, -INFINITY, 0.f);
        return;
      }
      pure = !__syncthreads_or(other);
      // with the pure splits' launch, each launch leaves the splits of the other
      if (PURE_ONLY ? !pure : pure && g.pure_launch) return;
    }
  }
  int t = t_first;
  if constexpr (!PURE_ONLY) {
    if (!pure) t = next_tile(t_first);
  }
  if (MODCTA && t >= t_end) {  // no token of the CTA's modality: empty partials, nothing else
    if (tid < kRows) write_header(tid, -INFINITY, 0.f);
    return;
  }
  auto tile_c = [&](int i) { return sbase + g.off_tiles + (kOneStage ? 0 : (i & 1)) * g.tile_bytes; };
  // tile tt's bf16 latent and RoPE key into the buffer at tb (the RoPE key kTile latent rows further); the
  // instances built for the 7B sizes copy interior tiles by InteriorTileCopy (its twin: the generic instance's
  // copy, SpecializedInstancesEqualTheGenericOnes)
  auto copy_tile = [&](uint32_t tb, int tt) {
    if constexpr (kLeanCopy) {
      const uint32_t kt = tb + kTile * InteriorTileCopy<RKV, HR>::kCStride;
      if (!ring && tt * kTile >= vlo && tt * kTile + kTile <= vhi) {
        lean_copy(tb, kt, tt * kTile);
      } else {
        load_bf16_tile(p, g, b, tb, kt, tt * kTile, vlo, vhi, ring);
      }
    } else {
      load_bf16_tile(p, g, b, tb, tb + kTile * g.c_stride, tt * kTile, vlo, vhi, ring);
    }
  };
  // bf16 tiles: the first walk starts with tile t in buffer 0 (every walk copies its first tile there first), so
  // that copy is issued here, before the queries are staged, and the two round trips overlap (a CTA's prologue at
  // b = 1 is a chain of them); the first walk then skips it (its commit takes it into the walk's first group). The
  // same tile into the same buffer: the same bits.
  bool first_issued = false;
  if constexpr (!INT4) {
    if (t < t_end) {
      copy_tile(tile_c(0), t);
      first_issued = true;
    }
  }
  // int4 tiles: the thread's pieces of a tile (pm: where each lies, the same for every tile; codes by cp.async into
  // its raw slots, scales and minima into x). The first walk's first fetch is issued here too, before the queries are
  // staged, as bf16's first copy is; the walk dequantizes it as its first tile (the same pieces: the same bits).
  uint32_t pm[CH] = {};  // (set below, before the first fetch)
  Int4Scales x[CH];
  const uint32_t slot0 = sbase + g.off_raw + tid * 16;  // the thread's pieces: slot0 + k * kThreads * 16
  // The instances built for r_kv 128 and h_kv * d_rope 128 (one column split, the RoPE key in the tiles): a thread's
  // two pieces are the latent's and the RoPE key's 32 values at one place of one token (piece_map of tid and tid +
  // kThreads: token tid / 4, values 32 (tid % 4) on), so both codes lie at one offset from their arrays' starts, and
  // each tile's at 64 rows past the tile before: a tile's fetch is a row, an offset and two group indices (pm's
  // tile-relative ones), where the generic path decodes pm and builds each array's pointers for every piece. The same
  // pieces, scales and zeros (tokens outside [vlo, vhi)): the same bits (SpecializedInstancesEqualTheGenericOnes).
  constexpr bool kFixedPieces = INT4 && RKV == 128 && HR == 128 && !EXT && CS == 1 && CH == 2;
  constexpr int kFpRowBytes = RKV / 2;  // (kFixedPieces) a token's codes in either array: 128 values, 64 bytes
  [[maybe_unused]] const int fp_t = tid >> 2;  // (kFixedPieces) the thread's token
  [[maybe_unused]] const int64_t fp_off0 = (int64_t(b) * p.t_cap + fp_t) * kFpRowBytes + (tid & 3) * 16;  // its codes
  auto fetch = [&](int tt) {
    if constexpr (kFixedPieces) {
      const int j = tt * kTile + fp_t;
      const bool valid = j >= vlo && j < vhi;
      const int64_t off = fp_off0 + int64_t(tt) * (kTile * kFpRowBytes);
      cp_async(slot0, valid ? p.latent_q + off : p.latent_q, 16, valid);
      cp_async(slot0 + kThreads * 16, valid ? p.k_rope_q + off : p.k_rope_q, 16, valid);
      x[0].sc = x[0].lo = x[1].sc = x[1].lo = 0u;
      if (valid) {
        const int64_t rb = int64_t(b) * p.t_cap + tt * kTile;  // the tile's first row
        const int64_t gc = rb * g.q_groups_c + (pm[0] >> 17), gr = rb * g.q_groups_r + (pm[1] >> 17);
        load_piece_scales(p.latent_scale + gc, p.latent_lo + gc, pm[0] & (1u << 16), x[0]);
        load_piece_scales(p.k_rope_scale + gr, p.k_rope_lo + gr, pm[1] & (1u << 16), x[1]);
      }
    } else {
      const Int4Rows lat = int4_rows(p, g, true, b, tt * kTile), rope = int4_rows(p, g, false, b, tt * kTile);
#pragma unroll
      for (int k = 0; k < CH; ++k)
        fetch_piece<RKV, HR>(p, g, pm[k], lat, rope, tt * kTile, vlo, vhi, slot0 + k * kThreads * 16, x[k]);
    }
    cp_async_commit();
  };
  if constexpr (INT4) {
    if (quant) {
#pragma unroll
      for (int k = 0; k < CH; ++k) pm[k] = piece_map(p, g, tid + k * kThreads);
      if (t < t_end) {
        fetch(t);
        first_issued = true;
      }
    }
  }

  // The walks and the merge; SPLIT_PURE: the whole split is pure (a copy of their own: measured, the pure
  // split's walk ran 4-14% slower where its accumulators were shared with the segment walks' loops)
  auto body = [&](auto split_pure_c) {
    constexpr bool SPLIT_PURE = decltype(split_pure_c)::value;
    stage_queries<NMOD, MT, GP>(p, g, smem, b, head0, kOneStage ? 1 : 2, cta_mod, pairs);
    const RowInfo ri = row_info<NMOD, MT, GP>(p, b, head0, p.h_q / p.h_kv, mt, gid, cta_mod);
    float o[NO][4];
#pragma unroll
    for (int i = 0; i < NO; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    const float scale_log2 = p.scale * kLog2e;
    // external RoPE scores (g.rope_ext): tile t's, [64][h_q] from the sequence's first tile (the ring's tiles
    // too: positions, not ring rows); only the instances with that path (rows_tile) read them
    auto rope_scores = [&](int t) -> const float* {
      if constexpr (EXT) {
        const int64_t tok = int64_t(b) * g.rope_ws_tokens + t * kTile - (sr.lo & ~(kTile - 1));
        return p.workspace + g.off_rope_ws + tok * p.h_q;
      } else {
        return nullptr;
      }
    };

    // One walk over tiles from t, in order: PURE, tiles t, t + 1, ... before t_stop (all of the CTA's modality
    // only: the one-set kernel's tile); else the tiles next_tile gives up to t_end, stopping before a tile of a
    // long pure run (runs_on), which the next walk takes. t is left at the first tile not walked. A walk starts
    // with a barrier: the previous one's warps may still read the tile buffers it reuses.
    auto walk = [&](auto pure_c, int t_stop) {
      constexpr bool PURE = decltype(pure_c)::value;
      // between walks: the previous one's warps may still read the buffers this one fills (one walk alone: none)
      if constexpr (kPureLoop) __syncthreads();
      constexpr bool kTileMods = kMods && !PURE;  // the tile's keys are kept or dropped by their modality
      // a pure split walked in the one loop (int4): the same tiles with the skips taken at run time
      const bool rpure = !kPureLoop && pure;
      if constexpr (kTileMods) {
        if (rpure) {  // both buffers, once: the masked path reads a valid key's byte only, which is cta_mod's
          if (tid < 2 * kTile) mods_sm[tid] = uint8_t(cta_mod);
        } else if (tid < kTile && t < t_end) {
          mods_sm[tid] = fetch_mod(t);
        }
      }
      // The tile's barrier; with FT, whether tile tt (its modality bytes in buffer i % 2, each written by the
      // thread that reads it here) is full for this warp: every token valid and of the warp's rows' modality.
      auto tile_barrier = [&](int i, int tt) -> bool {
        if constexpr (FT) {
          const bool in_range = tt * kTile >= vlo && tt * kTile + kTile <= vhi;
          if constexpr (kTileMods) {
            if (rpure) {
              __syncthreads();
              return in_range;
            }
            const int n_img = __syncthreads_count(tid < kTile && mods_sm[(i & 1) * kTile + tid] != 0);
            return in_range && n_img == (my_mod == 1 ? kTile : 0);
          } else {  // one set, or a pure split: every key in range is of the rows' modality
            __syncthreads();
            return in_range;
          }
        } else {
          __syncthreads();
          return false;
        }
      };
      auto next = [&](int from) { return PURE || rpure ? from : next_tile(from); };
      // whether the walk goes on to tile tn (else it leaves t at tn)
      auto goes_on = [&](int tn) { return PURE ? tn < t_stop : tn < t_end && !(runs_on && in_long(tn)); };

      if (!quant) {
        // (kPureLoop: the driver calls a walk with a tile to attend; the loop ends at `more`)
        if ((kPureLoop || t < t_end) && !first_issued) copy_tile(tile_c(0), t);
        first_issued = false;  // (the next walks copy their own first tile)
        cp_async_commit();
        for (int i = 0; kPureLoop || t < t_end; ++i) {
          const int tn = next(t + 1);
          const bool more = goes_on(tn);
          const uint8_t mod_next = (kTileMods && !rpure && more) ? fetch_mod(tn) : uint8_t(0);
          cp_async_wait<0>();
          const bool full = tile_barrier(i, t);  // tile t landed; every warp is done with the previous one
          if (more && !kOneStage) copy_tile(tile_c(i + 1), tn);
          cp_async_commit();
          const uint32_t tb = tile_c(i);
          const float* rsc = rope_scores(t);
          rows_tile<kTileMods ? 2 : 1, NS, NO, RKV, HR, DR, GP, CS, EXT>(
              p, g, sbase, tb, tb + kTile * g.c_stride, mods_sm + (i & 1) * kTile, t * kTile, vlo, vhi, mt, c0,
              my_mod, ri, scale_log2, o, m_run, l, full, cs, xch, xbar, rsc);
          if constexpr (kOneStage) {  // the next tile into the one buffer once every warp is done with it
            if (more) {
              __syncthreads();
              copy_tile(tile_c(0), tn);
              cp_async_commit();
            }
          }
          if (kTileMods && !rpure && tid < kTile && more) mods_sm[((i + 1) & 1) * kTile + tid] = mod_next;
          t = tn;
          if (!more) break;  // a pure run's end, or (kPureLoop) a long pure run next: the next walk's
        }
      } else {
        auto dequant = [&](int i) {  // the thread's pieces into bf16 buffer i % 2 (kOneStage: the one)
          cp_async_wait<0>();
          unsigned char* ct = smem + g.off_tiles + (kOneStage ? 0 : (i & 1)) * g.tile_bytes;
          if constexpr (kFixedPieces) {  // token fp_t's values 32 (tid % 4) on, in the latent's tile and the key's
            const int at = fp_t * g.c_stride + (tid & 3) * 64;
            store_piece_at(ct + at, smem + g.off_raw + tid * 16, x[0], pm[0] & (1u << 16));
            store_piece_at(ct + kTile * g.c_stride + fp_t * g.k_stride + (tid & 3) * 64,
                           smem + g.off_raw + (kThreads + tid) * 16, x[1], pm[1] & (1u << 16));
          } else {
#pragma unroll
            for (int k = 0; k < CH; ++k)
              store_piece(g, pm[k], smem + g.off_raw + (k * kThreads + tid) * 16, x[k], ct, ct + kTile * g.c_stride);
          }
        };
        if (t < t_end) {
          if (!first_issued) fetch(t);
          first_issued = false;
          dequant(0);
        }
        for (int i = 0; t < t_end; ++i) {
          const int tn = next(t + 1);
          const uint8_t mod_next = (kTileMods && !rpure && tn < t_end) ? fetch_mod(tn) : uint8_t(0);
          if (tn < t_end) fetch(tn);  // the thread's own slots: it read them in dequant(i) already
          const bool full = tile_barrier(i, t);  // tile t dequantized; the previous tile's buffer is free
          const uint32_t tb = tile_c(i);
          rows_tile<kTileMods ? 2 : 1, NS, NO, RKV, HR, DR, GP, CS, EXT>(
              p, g, sbase, tb, tb + kTile * g.c_stride, mods_sm + (i & 1) * kTile, t * kTile, vlo, vhi, mt, c0,
              my_mod, ri, scale_log2, o, m_run, l, full, cs, xch, xbar, rope_scores(t));
          if (tn < t_end) {
            if constexpr (kOneStage) __syncthreads();  // every warp is done with the one buffer
            dequant(i + 1);
            if (kTileMods && !rpure && tid < kTile) mods_sm[((i + 1) & 1) * kTile + tid] = mod_next;
          }
          t = tn;
        }
      }
      cp_async_wait<0>();
    };
    // A pure split (bf16): one pure walk (a body of its own: SPLIT_PURE). Else (runs_on) scanned walks and pure
    // ones over the long pure runs in turn, or one scanned walk. Every walk attends its tiles in the scanned
    // walk's order with the same scores, so the results are the scanned walk's bit for bit.
    if constexpr (SPLIT_PURE) {
      walk(std::true_type{}, t_end);
    } else if constexpr (kPureLoop) {
      while (t < t_end) {
        if (runs_on && in_long(t)) {
          walk(std::true_type{}, run_end(t));
          t = next_tile(t);
        } else {
          walk(std::false_type{}, t_end);
        }
      }
    } else {
      walk(std::false_type{}, t_end);
    }

    // ---- merge the token parts and, per head, the two modalities' running maxima; write the partials
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }
    __syncthreads();  // every warp is done with the tiles: the region holds the merge buffers now
    float* red_m = reinterpret_cast<float*>(smem + g.off_tiles);  // [TP][kRows]
    float* red_l = red_m + TP * kRows;                             // [kRows]
    float* acc = red_l + kRows;                                    // [kRows][r_kv + 4]
    const int acc_stride = p.r_kv + 4;
    if (tig == 0 && cs == 0) {  // (a group's column-split warps hold the same maxima and sums)
#pragma unroll
      for (int h = 0; h < 2; ++h) red_m[part * kRows + mt * 16 + gid + 8 * h] = m_run[h];
    }
    __syncthreads();
    // the head's max over the parts and both modalities' rows
    auto head_max = [&](int row) {
      const int other = NMOD == 2 ? (row + MH * 16) % kRows : row;
      float mh = -INFINITY;
#pragma unroll
      for (int q = 0; q < TP; ++q) mh = fmaxf(mh, fmaxf(red_m[q * kRows + row], red_m[q * kRows + other]));
      return mh;
    };
    float f[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float mh = head_max(mt * 16 + gid + 8 * h);
      f[h] = m_run[h] == -INFINITY ? 0.f : exp2f(m_run[h] - mh);
    }
    // the parts' sums, added in part order (deterministic: no atomics)
#pragma unroll
    for (int q = 0; q < TP; ++q) {
      if (part == q) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = mt * 16 + gid + 8 * h;
          if (tig == 0 && cs == 0) red_l[row] = (q == 0 ? 0.f : red_l[row]) + l[h] * f[h];
          float* arow = acc + row * acc_stride + cs * (p.r_kv / CS) + 2 * tig;
#pragma unroll
          for (int i = 0; i < NO; ++i) {
            if (i * 8 < p.r_kv / CS) {
              const float2 prev = q == 0 ? make_float2(0.f, 0.f) : *reinterpret_cast<const float2*>(arow + i * 8);
              *reinterpret_cast<float2*>(arow + i * 8) =
                  make_float2(prev.x + o[i][2 * h] * f[h], prev.y + o[i][2 * h + 1] * f[h]);
            }
          }
        }
      }
      __syncthreads();
    }
    if (tid < kRows) write_header(tid, head_max(tid), red_l[tid]);
    const int q4 = p.r_kv / 4;
    for (int idx = tid; idx < kRows * q4; idx += kThreads) {
      const int row = idx / q4, c4 = idx - row * q4;
      int mod, head;
      row_to_head<NMOD, MT, GP>(row, head0, mod, head, cta_mod);
      if (head >= p.h_q) continue;
      float* out = w.acc_at(p, ps, mod, b, head);
      if (pairs) {  // acc's columns in pair order: channel c at 8 (c / 8) + 2 (c % 4) + (c % 8) / 4
        const float* src = acc + row * acc_stride + (c4 >> 1) * 8 + (c4 & 1);
        *reinterpret_cast<float4*>(out + c4 * 4) = make_float4(src[0], src[2], src[4], src[6]);
      } else {
        const float* src = acc + row * acc_stride + c4 * 4;
        *reinterpret_cast<float4*>(out + c4 * 4) = make_float4(src[0], src[1], src[2], src[3]);
      }
    }
  };
  if constexpr (PURE_ONLY) {
    body(std::true_type{});
  } else if constexpr (kPureLoop) {
    if (pure) {
      body(std::true_type{});
    } else {
      body(std::false_type{});
    }
  } else {
    body(std::false_type{});
  }
}

// (grid_launch_dependents, grid_dependency_wait: pdl.cuh)

// The warp-rows kernel (rows_kernel_body). With the pure splits' launch (g.pure_launch), its two launches overlap:
// the pure splits' instance lets the main one start as soon as its own CTAs have all started (launch_mla_decode
// launches the main one with programmatic stream serialization), and the main one's CTAs wait for it to end before
// they end, so that the combine, which waits for the main one, reads the partials of both. The CTAs that leave a
// split to the other launch (in a context of long image runs most of the pure instance's, in a text-only one all
// of the main one's) cost no more than their scan then, beside the other launch's work.
template <int NMOD, int MT, int NO, bool INT4, bool MODCTA = false, int RKV = 0, int HR = 0, int DR = 0, int GP = 0,
          int CS = 1, bool EXT = false, bool PURE_ONLY = false>
__global__ void __launch_bounds__(kThreads, NO <= 16 ? 2 : 1)
    mla_decode_rows_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  if constexpr (PURE_ONLY) grid_launch_dependents();
  // blockIdx.x: 2 split + modality (MODCTA), or the split; blockIdx.z the sequence. g.image_first (MODCTA):
  // blockIdx.x the split, blockIdx.z the image CTAs' sequences, then the text CTAs'
  const bool image_first = MODCTA && g.image_first;
  const bool image_z = image_first && int(blockIdx.z) < p.b;
  rows_kernel_body<NMOD, MT, NO, INT4, MODCTA, RKV, HR, DR, GP, CS, EXT, PURE_ONLY>(
      p, g, !MODCTA ? 0 : image_first ? (image_z ? 1 : 0) : int(blockIdx.x & 1u),
      image_first || !MODCTA ? int(blockIdx.x) : int(blockIdx.x >> 1),
      image_first && !image_z ? int(blockIdx.z) - p.b : int(blockIdx.z));
  if constexpr (MODCTA && !PURE_ONLY) {
    if (g.pure_launch) grid_dependency_wait();
  }
}

// ---- the kernels, as function pointers from the translation units that instantiate them -------------------
using KernelFn = void (*)(MlaDecodeParams, Geom);

// The split-keys tensor-core kernel for n_mod modality sets, mt m-tiles and ntw n-tiles per warp (nullptr for
// a combination it has no instance of): bf16 stores (mla_decode_tc_bf16.cu), int4 stores dequantized to bf16
// tiles (mla_decode_tc_int4.cu), int4 products on the codes (mla_decode_tc_codes.cu).
KernelFn tc_kernel_bf16(int n_mod, int mt, int ntw);
KernelFn tc_kernel_int4(int n_mod, int mt, int ntw);
KernelFn tc_kernel_codes(int n_mod, int mt, int ntw);
// The warp-rows kernel for n_mod sets (modality_ctas: one modality's rows per CTA), mt m-tiles and no output
// n-tiles per warp: bf16 stores (mla_decode_rows_bf16.cu), int4 stores (mla_decode_rows_int4.cu).
// specialized (params.h): 1 the instances built for r_kv 128, h_kv * d_rope 128, d_rope 32, 2 their
// grouped-rows twins (nullptr where there is none).
// cs: column splits (generic instances: 2 m-tiles, 32 output n-tiles per warp); ext: the external RoPE scores.
// pure_only: the modality CTAs' pure splits' instance (PURE_ONLY; one column split, no external RoPE scores).
KernelFn rows_kernel_bf16(int n_mod, int mt, int no, bool modality_ctas, int specialized, int cs = 1,
                          bool ext = false, bool pure_only = false);
KernelFn rows_kernel_int4(int n_mod, int mt, int no, bool modality_ctas, int specialized, int cs = 1,
                          bool ext = false, bool pure_only = false);
// The scores-first kernels for wide latents (mla_decode_wide.cu; MlaDecodePlan::wide): their dynamic shared
// memory, query rows per scores CTA, heads and columns per values CTA, and the kernels.
int wide_scores_smem_bytes();
int wide_values_smem_bytes();
int wide_rows_per_block();
int wide_value_heads();
int wide_value_cols();
KernelFn wide_scores_kernel(bool ksplit);  // ksplit: the instance in clusters over the latent's columns
int wide_score_chunk_cols();  // the scores pass's latent columns a chunk (a split's smallest share)
KernelFn wide_values_kernel(int n_mod, bool int4, int warps);  // warps: 8 or 16 a CTA (MlaDecodePlan::wide_warps)
// The warpgroup-MMA kernel over int4 stores (mla_decode_wgmma.cu, built for sm_90a; MlaDecodePlan::wgmma): one
// producer warpgroup with 2 or 3 consumers, 2 producers with 2 consumers (a pair each), or no producers with 2
// consumers (each dequantizing its own tiles into the MMAs' A registers); 128 (producers +
// consumers) threads a CTA; nullptr for another count. Its dynamic shared memory, and the sizes it is built for.
constexpr int kWgmmaRkv = 128, kWgmmaHkv = 4, kWgmmaDrope = 32, kWgmmaHq = 28;
// (the defaults since session 39: no producers and two consumers, 256 threads, 0.88-0.94x the time of two producers
// and two consumers from 8 sequences on the H200, docs/KERNELS.md; at one sequence the plan takes two producers)
constexpr int kWgmmaDefaultConsumers = 2, kWgmmaDefaultProducers = 0;
KernelFn wgmma_kernel_int4(int consumers, int producers);
int wgmma_smem_bytes(int consumers, int producers);
// Their one-pass twin (kWideCluster): the values kernel with the scores computed in clusters of column blocks.
int wide_cluster_smem_bytes(int n_mod);
KernelFn wide_cluster_kernel(int n_mod, bool int4);

template <int NMOD, bool INT4, bool CODES>
KernelFn tc_kernel_for(int mt, int ntw) {
  if (mt == 2) {
    switch (ntw) {
      case 1: return mla_decode_tc_kernel<NMOD, 2, 1, INT4, CODES>;
      case 2: return mla_decode_tc_kernel<NMOD, 2, 2, INT4, CODES>;
      case 4: return mla_decode_tc_kernel<NMOD, 2, 4, INT4, CODES>;
      case 8: return mla_decode_tc_kernel<NMOD, 2, 8, INT4, CODES>;
    }
  } else if (mt == 4) {
    switch (ntw) {
      case 1: return mla_decode_tc_kernel<NMOD, 4, 1, INT4, CODES>;
      case 2: return mla_decode_tc_kernel<NMOD, 4, 2, INT4, CODES>;
      case 4: return mla_decode_tc_kernel<NMOD, 4, 4, INT4, CODES>;
    }
  }
  return nullptr;
}

// specialized: the instance built for kSpecRkv, kSpecHr and kSpecDrope in the layouts kAuto takes for those
// sizes (one set or modality CTAs: 2 m-tiles; joint: 4, int4 only), or nullptr where there is none; the
// caller checks the sizes. No bf16 joint instance: it spills more than its generic twin and measured slower
// (H200, 2026-11-29: b = 32, 32k, 269 -> 289 us over random modalities), where every other one is faster.
// specialized 2, one set or modality CTAs: the grouped-rows twin (GP 8: 7 heads per kv group, kSpecGroupRows;
// full tiles unmasked, FT), 4-12% faster than level 1 at b >= 8 over bf16 (H200, 2026-11-29), 3-8% over int4
// since its pieces' addresses come from per-tile row bases (session 18; 1-6% slower before); the unmasked ones
// without grouped rows measured no faster: not built. (The int4 joint layout has none: rows_kernel takes level 1.)
// cs 2: column splits, the generic instance with 2 m-tiles and 32 n-tiles of O per warp (r_kv up to 512).
// ext: the external RoPE scores (Geom::rope_ext), one set or modality CTAs, 2 m-tiles and 32 n-tiles of O per
// warp, with or without column splits (rows_geometry takes no other).
template <int NMOD, bool INT4, bool MODCTA = false, bool PURE = false>
KernelFn rows_kernel_for(int mt, int no, int specialized = 0, int cs = 1, bool ext = false) {
  static_assert(!PURE || (NMOD == 1 && MODCTA), "the pure splits' instances: modality CTAs");
  if (ext) {
    if constexpr (NMOD == 1 && !PURE) {
      if (mt == 2 && no == 32 && !specialized) {
        if (cs == 1) return mla_decode_rows_kernel<1, 2, 32, INT4, MODCTA, 0, 0, 0, 0, 1, true>;
        if (cs == 2) return mla_decode_rows_kernel<1, 2, 32, INT4, MODCTA, 0, 0, 0, 0, 2, true>;
      }
    }
    return nullptr;
  }
  if (cs != 1) {
    if constexpr (!PURE) {
      if (cs == 2 && mt == 2 && no == 32 && !specialized)
        return mla_decode_rows_kernel<NMOD, 2, 32, INT4, MODCTA, 0, 0, 0, 0, 2>;
    }
    return nullptr;
  }
  if (specialized) {
    constexpr int GP = kSpecGroupRows;
    if constexpr (NMOD == 1) {
      if (mt == 2 && no == 16) {
        if (specialized == 2)
          return mla_decode_rows_kernel<1, 2, 16, INT4, MODCTA, kSpecRkv, kSpecHr, kSpecDrope, GP, 1, false, PURE>;
        if (specialized == 1)
          return mla_decode_rows_kernel<1, 2, 16, INT4, MODCTA, kSpecRkv, kSpecHr, kSpecDrope, 0, 1, false, PURE>;
      }
    } else if constexpr (!MODCTA && INT4) {
      if (mt == 4 && no == 16) {
        if (specialized == 1) return mla_decode_rows_kernel<2, 4, 16, INT4, false, kSpecRkv, kSpecHr, kSpecDrope>;
      }
    }
    return nullptr;
  }
  if (mt == 2) {
    return no == 16 ? mla_decode_rows_kernel<NMOD, 2, 16, INT4, MODCTA, 0, 0, 0, 0, 1, false, PURE>
                    : mla_decode_rows_kernel<NMOD, 2, 32, INT4, MODCTA, 0, 0, 0, 0, 1, false, PURE>;
  }
  if (mt == 4) {
    return no == 16 ? mla_decode_rows_kernel<NMOD, 4, 16, INT4, MODCTA, 0, 0, 0, 0, 1, false, PURE>
                    : mla_decode_rows_kernel<NMOD, 4, 32, INT4, MODCTA, 0, 0, 0, 0, 1, false, PURE>;
  }
  return nullptr;
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
