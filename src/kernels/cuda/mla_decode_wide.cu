// The scores-first decode for latents too wide for the warp-rows kernel (MlaDecodePlan::wide; LLaVA-1.5's
// d_kv 32 and 64: r_kv 1,024 and 2,048, whose tiles and O accumulators do not fit one CTA): three passes over
// the keys instead of one, each on the tensor cores, so that no CTA ever holds a whole latent row's O.
//   1. mla_rope_scores_kernel (mla_decode.cu): q_r . k_r of every (key, head) into the scores region S of the
//      workspace ([b][rope_ws_tokens][h_q] floats, Geom::off_rope_ws).
//   2. mla_wide_scores_kernel: s = (qa[m_j] . c_j + S + qb[m_j]) * scale * log2(e), in place in S (the key
//      range's entries only: the values kernel masks the rest). A CTA takes 128 tokens and 64 query rows (the
//      heads of a block times the modalities: both absorbed queries, the key's modality picks one), streaming
//      the latent and the queries in 64-column chunks through shared memory (register double-buffering: the
//      next chunk's loads in flight during the current chunk's MMAs); 8 warps of 16 rows x 64 tokens.
//   3. mla_wide_values_kernel: per (split, head block of 32, column block of 256, sequence), O_m += P_m C over
//      its columns with the online softmax over S (the warp-rows kernel's, its max slack included), P_m the
//      weights of modality m's keys; it writes the split-KV partials (Partials) that the combine kernel merges.
//      8 warps: 2 m-tiles x 4 parts of 64 columns (WARPS = 16: 2 m-tiles x 8 parts of 32). The parts of an
//      m-tile share the tile's softmax: each takes the weights of its share of the tokens, and the row maxima
//      and P (bf16) pass between them through shared memory behind two barriers of their warps.
// The latent is read twice (passes 2 and 3) and S once per column block: over bf16 about 4 r_kv + 2 h_kv R + 4 h_q
// (r_kv / 256 + 3) bytes a key, against the cache's 2 (r_kv + h_kv R). int4 stores are dequantized as the
// keys are staged (code * scale + minimum in bf16 pairs, as the warp-rows kernel's), positions of the window
// from the bf16 ring.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/mla_decode_kernels.cuh"

namespace vlm2mla {
namespace mla_decode_detail {

namespace {

constexpr int kWK = 64;              // scores kernel: latent columns per chunk
constexpr int kWTok = 128;           // scores kernel: tokens per CTA pass
constexpr int kWRows = 64;           // scores kernel: query rows per CTA (4 m-tiles)
constexpr int kWCols = 256;          // values kernel: latent columns per CTA
constexpr int kWHeads = 32;          // values kernel: heads per CTA (2 m-tiles)
constexpr int kWStride = kWK + 8;    // bf16 elements per row of a scores-kernel chunk (16-byte padded)
constexpr int kWCStride = kWCols + 8;  // bf16 elements per row of a values-kernel tile
constexpr int kWSStride = kWHeads + 4;  // floats per token of a values-kernel scores tile (16-byte rows; the
                                        // threads' reads, tokens 8 n + 2 tig + e and rows gid, on distinct banks)

// One 32-value unit of an int4 latent row as fetched: its 16 bytes of codes in one load and each 8 values' group
// float16 scale and minimum (scale | minimum << 16; one load each where one group spans the unit, two for groups
// of 16, one per 8 values otherwise), dequantized when stored (store_code_unit). Positions of the window are read
// from the bf16 ring when stored (the last few tiles of a range only). Columns start on multiples of 32 (16-byte
// aligned codes: r_kv % 64 == 0 and the codes' base checked by wide_geometry).
struct CodeUnit {
  uint4 q;         // kCodes: the 32 codes; kRing: q.x the ring row (b window + j % window)
  uint32_t sl[4];  // kCodes: values 8 k .. 8 k + 7's scale | minimum << 16
  int kind;        // 0 zeros (outside the key range), kCodes, kRing
};
constexpr int kCodes = 1, kRing = 2;

__device__ __forceinline__ CodeUnit fetch_code_unit(const MlaDecodeParams& p, int b, int j, int lo, int hi, int qlen,
                                                    int col) {
  CodeUnit u;
  u.q = make_uint4(0u, 0u, 0u, 0u);
  u.sl[0] = u.sl[1] = u.sl[2] = u.sl[3] = 0u;
  u.kind = 0;
  if (j < lo || j >= hi) return u;
  if (j >= qlen) {
    u.kind = kRing;
    u.q.x = uint32_t(int64_t(b) * p.window + j % p.window);
    return u;
  }
  u.kind = kCodes;
  const int64_t row = int64_t(b) * p.t_cap + j;
  u.q = __ldg(reinterpret_cast<const uint4*>(p.latent_q + row * (p.r_kv / 2) + col / 2));
  const int64_t g0 = row * (p.r_kv / p.group_c);
  auto sl_at = [&](int64_t gi) {
    return uint32_t(__ldg(reinterpret_cast<const unsigned short*>(p.latent_scale + gi))) |
           (uint32_t(__ldg(reinterpret_cast<const unsigned short*>(p.latent_lo + gi))) << 16);
  };
  if (p.group_c % 32 == 0) {
    u.sl[0] = u.sl[1] = u.sl[2] = u.sl[3] = sl_at(g0 + col / p.group_c);
  } else if (p.group_c == 16) {  // (not other multiples of 16: a group of 48 spans a unit's halves unevenly)
    u.sl[0] = u.sl[1] = sl_at(g0 + col / 16);
    u.sl[2] = u.sl[3] = sl_at(g0 + col / 16 + 1);
  } else {  // groups of 8, 24, 40, 48, ...: each 8 values' own group
#pragma unroll
    for (int k = 0; k < 4; ++k) u.sl[k] = sl_at(g0 + (col + 8 * k) / p.group_c);
  }
  return u;
}

// 8 codes (a 32-bit word) with their scale | minimum << 16 as bf16 values, two a bf16 instruction as the
// warp-rows kernel's store_piece (dequant_word_bf16, the scale and minimum rounded to bf16). Against dequant_rows'
// float32 FMA rounded once, the scale's and minimum's roundings add at most 2^-9 (|q sc| + |lo|), a few hundredths
// of a quantization step (until session 17: float32 FMAs, ~2x the instructions).
__device__ __forceinline__ uint4 dequant8_bf16(uint32_t codes, uint32_t sl) {
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&sl));  // (scale, minimum)
  return dequant_word_bf16(codes, __float2bfloat162_rn(f.x), __float2bfloat162_rn(f.y), __float2bfloat162_rn(128.f));
}

// The unit's 32 bf16 values (64 bytes) to dst, 16-byte aligned; col: its first column.
__device__ __forceinline__ void store_code_unit(const MlaDecodeParams& p, const CodeUnit& u, int col,
                                                unsigned char* dst) {
  uint4* d = reinterpret_cast<uint4*>(dst);
  if (u.kind == kCodes) {
    const uint32_t w[4] = {u.q.x, u.q.y, u.q.z, u.q.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) d[k] = dequant8_bf16(w[k], u.sl[k]);
  } else if (u.kind == kRing) {
    const uint4* src = reinterpret_cast<const uint4*>(p.latent_win + int64_t(u.q.x) * p.r_kv + col);
#pragma unroll
    for (int k = 0; k < 4; ++k) d[k] = __ldg(src + k);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) d[k] = make_uint4(0u, 0u, 0u, 0u);
  }
}

// 8 bf16 values of the absorbed queries from element off of qa on (load_q8_span): one 16-byte load over bf16
// queries (two over float32) where the rows allow it (Geom::wide_qvec), four 4-byte loads of bf16 pairs where they
// lie on 4-byte bounds (Geom::wide_qpair: the model's views), else element by element.
__device__ __forceinline__ uint4 load_q8_at(const MlaDecodeParams& p, const Geom& g, int64_t off) {
  return load_q8_span(p.qa, p.q_bf16, off, g.wide_qvec, g.wide_qpair);
}
// Columns col .. col + 7 of modality mod's absorbed query of (sequence b, head).
__device__ __forceinline__ uint4 load_q8(const MlaDecodeParams& p, const Geom& g, int mod, int b, int head, int col) {
  return load_q8_at(p, g, qa_offset(p, mod, b, head) + col);
}

__device__ __forceinline__ float add_values(float a, float b) { return a + b; }
__device__ __forceinline__ float4 add_values(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// The sum over a thread-block cluster's first `ranks` CTAs (at most 8) of the value of type T (float or float4) at
// element off of each one's buffer `buf` (distributed shared memory), in rank order, so that every CTA summing the
// same element gets the same bits; every rank's load is issued before the sums (not a chain of dependent remote
// loads).
template <class T>
__device__ __forceinline__ T cluster_sum(const cooperative_groups::cluster_group& cluster, float* buf, int off,
                                         int ranks) {
  T x[8];
#pragma unroll
  for (int r = 0; r < 8; ++r)
    if (r < ranks) x[r] = *reinterpret_cast<const T*>(cluster.map_shared_rank(buf, r) + off);
  T v = x[0];
#pragma unroll
  for (int r = 1; r < 8; ++r)
    if (r < ranks) v = add_values(v, x[r]);
  return v;
}

// Query row r of a scores CTA: modality r / hb, head head0 + r % hb (valid: r < n_mod hb and head < h_q).
__device__ __forceinline__ bool query_row(const MlaDecodeParams& p, int r, int hb, int head0, int& mod, int& head) {
  mod = r / hb;
  head = head0 + (r - mod * hb);
  return mod < p.n_mod && head < p.h_q;
}

}  // namespace

// ---- pass 2: the scores --------------------------------------------------------------------------------
// Grid (token groups, head blocks, b); g.wide_hb heads a block (kWRows / n_mod, at most h_q).
// KSPLIT (grids under a wave: one sequence of a few thousand keys): grid (token groups, head blocks x KS, b) in
// clusters (1, KS, 1); rank r of a cluster takes chunks [r chunks / KS, (r + 1) chunks / KS) of the latent's
// columns, and the ranks' products are summed through distributed shared memory in rank order (every CTA the
// same order: the sums are deterministic), rank r storing tokens [r 128 / KS, (r + 1) 128 / KS) of the group.
template <bool KSPLIT>
__global__ void __launch_bounds__(kThreads)
    mla_wide_scores_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  namespace cg = cooperative_groups;
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kStage = (kWRows + kWTok) * kWStride * 2;  // bytes: queries, then keys
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  int ks = 1, rank = 0;  // KSPLIT: the cluster's CTAs (KS) and this CTA's rank
  if constexpr (KSPLIT) {
    ks = int(cg::this_cluster().dim_blocks().y);
    rank = int(cg::this_cluster().block_rank());
  }
  const int b = blockIdx.z, hb = g.wide_hb, head0 = (KSPLIT ? blockIdx.y / ks : blockIdx.y) * hb;
  const int mt = warp & 3, c0 = (warp >> 2) * 64;  // the warp's 16 rows and 64 tokens
  const SeqRange sr = seq_range(p, b);
  if (sr.hi <= sr.lo) return;  // (KSPLIT: the whole cluster, one sequence)
  const int base = sr.lo & ~(kTile - 1);
  const int groups = (sr.hi - base + kWTok - 1) / kWTok;
  float* S = p.workspace + g.off_rope_ws + int64_t(b) * g.rope_ws_tokens * p.h_q;
  const float scale_log2 = p.scale * kLog2e;
  const int chunks = p.r_kv / kWK;
  // this CTA's chunks (KSPLIT: at least one a rank, wide_geometry's KS <= chunks)
  const int ch0 = KSPLIT ? rank * chunks / ks : 0, ch1 = KSPLIT ? (rank + 1) * chunks / ks : chunks;
  const uint32_t sbase = smem_addr(smem);

  // The thread's units of a chunk, the same in every chunk and group, so their addresses are worked out once:
  // queries 64 rows x 8 units of 8 (2 a thread: rows tid / 8 and 32 more, columns 8 (tid % 8) on); bf16 keys
  // 128 tokens x 8 units (4 a thread: tokens tid / 8 + 32 i, the same columns); int4 keys 128 tokens x 2 units
  // of 32 codes (1 a thread: token tid / 2, columns 32 (tid % 2) on).
  static_assert(kWK == 64 && kWTok * 2 == kThreads, "int4 key units: two of 32 codes a token, one a thread");
  const bool int4 = p.format == MlaCacheFormat::kInt4;
  int64_t q_off[2];  // the query unit's offset into qa at column 0 of the latent (-1: no such row)
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    int mod, head;
    const bool row = query_row(p, (tid >> 3) + 32 * i, hb, head0, mod, head);
    q_off[i] = row ? qa_offset(p, mod, b, head) + (tid & 7) * 8 : -1;
  }
  constexpr int kUnitRows = kThreads / 8;  // rows (tokens) between a thread's units: 32
  const uint32_t q_st = ((tid >> 3) * kWStride + (tid & 7) * 8) * 2;           // + i kUnitRows rows
  const uint32_t k_st = ((kWRows + (tid >> 3)) * kWStride + (tid & 7) * 8) * 2;  // + i kUnitRows rows
  const int64_t k_step = int64_t(kUnitRows) * p.r_kv;                            // elements between its key units
  // The group's scores, each thread one head of the block and every (kThreads / hn)-th token (kEpi at a time,
  // their loads issued together); the block's k-bias terms of that head once.
  const int hn = min(hb, p.h_q - head0);  // (<= kWRows)
  const int tstep = kThreads / hn, eh = tid % hn;
  const bool epi = tid < tstep * hn;
  const float qb0 = epi ? load_qb(p, 0, b, head0 + eh) : 0.f;
  const float qb1 = epi && p.n_mod == 2 ? load_qb(p, 1, b, head0 + eh) : 0.f;

  for (int grp = blockIdx.x; grp < groups; grp += gridDim.x) {
    const int tok0 = base + grp * kWTok;
    uint4 qv[2];
    uint4 kv[4];   // bf16
    CodeUnit cu;   // int4
    // bf16: the key units' row (column 0) and which lie in the key range
    const uint16_t* krow = p.latent + (int64_t(b) * p.t_cap + tok0 + (tid >> 3)) * p.r_kv + (tid & 7) * 8;
    uint32_t kin = 0u;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int j = tok0 + (tid >> 3) + kUnitRows * i;
      if (j >= sr.lo && j < sr.hi) kin |= 1u << i;
    }
    auto fetch = [&](int ch) {
      const int col0 = ch * kWK;
#pragma unroll
      for (int i = 0; i < 2; ++i)
        qv[i] = q_off[i] >= 0 ? load_q8_at(p, g, q_off[i] + col0) : make_uint4(0u, 0u, 0u, 0u);
      if (int4) {
        cu = fetch_code_unit(p, b, tok0 + (tid >> 1), sr.lo, sr.hi, sr.qlen, col0 + (tid & 1) * 32);
        return;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
        kv[i] = (kin >> i) & 1u ? __ldg(reinterpret_cast<const uint4*>(krow + i * k_step + col0))
                                : make_uint4(0u, 0u, 0u, 0u);
    };
    auto store = [&](int stage, int ch) {  // chunk ch's units into stage
      unsigned char* st = smem + stage * kStage;
#pragma unroll
      for (int i = 0; i < 2; ++i) *reinterpret_cast<uint4*>(st + q_st + i * kUnitRows * kWStride * 2) = qv[i];
      if (int4) {
        store_code_unit(p, cu, ch * kWK + (tid & 1) * 32, st + ((kWRows + (tid >> 1)) * kWStride + (tid & 1) * 32) * 2);
        return;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) *reinterpret_cast<uint4*>(st + k_st + i * kUnitRows * kWStride * 2) = kv[i];
    };
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    __syncthreads();  // the previous group's epilogue is done with the stages
    fetch(ch0);
    store(0, ch0);
    __syncthreads();
    for (int ch = ch0; ch < ch1; ++ch) {
      if (ch + 1 < ch1) fetch(ch + 1);
      const uint32_t st = sbase + ((ch - ch0) & 1) * kStage;
      const uint32_t a_addr = st + ((mt * 16 + (lane & 15)) * kWStride + (lane >> 4) * 8) * 2;
      const uint32_t b_addr =
          st + ((kWRows + c0 + (lane & 7) + (lane >> 4) * 8) * kWStride + ((lane >> 3) & 1) * 8) * 2;
#pragma unroll
      for (int k = 0; k < kWK; k += 16) {
        uint32_t a0, a1, a2, a3;
        ldsm_x4(a_addr + k * 2, a0, a1, a2, a3);
#pragma unroll
        for (int n = 0; n < 8; n += 2) {
          uint32_t b0, b1, b2, b3;
          ldsm_x4(b_addr + n * 8 * kWStride * 2 + k * 2, b0, b1, b2, b3);
          mma_bf16(s[n], a0, a1, a2, a3, b0, b1);
          mma_bf16(s[n + 1], a0, a1, a2, a3, b2, b3);
        }
      }
      if (ch + 1 < ch1) store((ch + 1 - ch0) & 1, ch + 1);  // the other stage: every warp left it at the last barrier
      __syncthreads();
    }
    // the products into shared memory [64 rows][128 tokens] (the stages are free after the last barrier)
    float* prod = reinterpret_cast<float*>(smem);
    constexpr int kPS = kWTok + 4;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int t = c0 + 8 * n + 2 * tig, r = mt * 16 + gid;
      prod[r * kPS + t] = s[n][0];
      prod[r * kPS + t + 1] = s[n][1];
      prod[(r + 8) * kPS + t] = s[n][2];
      prod[(r + 8) * kPS + t + 1] = s[n][3];
    }
    __syncthreads();
    // the tokens whose scores this CTA stores: the group's (KSPLIT: this rank's share, its products summed with
    // every rank's through distributed shared memory in rank order)
    const int t_lo = KSPLIT ? rank * (kWTok / ks) : 0, t_hi = KSPLIT ? t_lo + kWTok / ks : kWTok;
    if constexpr (KSPLIT) cg::this_cluster().sync();  // every rank's products written
    if (epi) {
      constexpr int kEpi = 8;
      for (int tb = t_lo + tid / hn; tb < t_hi; tb += kEpi * tstep) {
        float rope[kEpi];
        int mod[kEpi];
        // (loads from within the key range only: a token outside it reads the range's nearest and is not stored)
#pragma unroll
        for (int k = 0; k < kEpi; ++k) {
          const int j = min(max(tok0 + tb + k * tstep, sr.lo), sr.hi - 1);
          rope[k] = S[int64_t(j - base) * p.h_q + head0 + eh];
          mod[k] = p.n_mod == 2 && p.modality[int64_t(b) * p.t_cap + j] != 0 ? 1 : 0;
        }
#pragma unroll
        for (int k = 0; k < kEpi; ++k) {
          const int t = tb + k * tstep, j = tok0 + t;
          if (t >= t_hi || j < sr.lo || j >= sr.hi) continue;  // (the values kernel reads the key range only)
          const int off = (mod[k] * hb + eh) * kPS + t;
          const float v = KSPLIT ? cluster_sum<float>(cg::this_cluster(), prod, off, ks) : prod[off];
          S[int64_t(j - base) * p.h_q + head0 + eh] = (v + rope[k] + (mod[k] ? qb1 : qb0)) * scale_log2;
        }
      }
    }
    // (KSPLIT: no CTA refills its stages, its products, while another still reads them)
    if constexpr (KSPLIT) cg::this_cluster().sync();
  }
}

// ---- pass 3: the values -------------------------------------------------------------------------------
// Grid (splits, head blocks x column blocks, b); g.wide_col_blocks column blocks of kWCols. Three stages of
// (latent tile [64][kWCols], scores [64][kWSStride], modality bytes [64]): the scores by cp.async, and the
// latent too over a bf16 store (int4: units of 32 codes fetched into registers a tile ahead, dequantized into its
// stage after the current tile's products); two tiles in flight while one is attended, one barrier a tile.
constexpr int kWVStages = 3;
constexpr int kWTileBytes = kTile * kWCStride * 2;
constexpr int kWScoreBytes = kTile * kWSStride * 4;
constexpr int kWVStage = kWTileBytes + kWScoreBytes + kTile;  // latent, scores, modality bytes

// CLUSTER (MlaDecodeVariant::kWideCluster, the one-pass twin): no scores pass. The column blocks of one (split,
// head block, sequence) form a thread-block cluster (sm_90), one CTA per 256 columns; each computes the partial
// scores of its columns for every query row (both modalities' absorbed queries, held in shared memory) and the
// tile's 64 tokens on the tensor cores, adds the RoPE scores of its share of the heads (staged from the RoPE pass's
// region as the scores are otherwise), and the cluster sums the partials through distributed shared memory (one
// cluster barrier a tile, the partials double-buffered), every CTA in the same order, so that all hold the same
// scores bit for bit; the rest is this kernel's. The latent is read once, the scores region once.
// cluster: query rows (modality, head); floats per token of the partials
__host__ __device__ constexpr int kWQRows(int nmod) { return nmod * kWHeads; }
__host__ __device__ constexpr int kWSpStride(int nmod) { return nmod * kWHeads + 4; }
__host__ __device__ constexpr int kWClusterQBytes(int nmod) { return kWQRows(nmod) * kWCStride * 2; }
__host__ __device__ constexpr int kWClusterSpBytes(int nmod) { return kTile * kWSpStride(nmod) * 4; }
__host__ __device__ constexpr int kWClusterBytes(int nmod) {  // stages, queries, two partial buffers, the summed scores
  return kWVStages * kWVStage + kWClusterQBytes(nmod) + 2 * kWClusterSpBytes(nmod) + kWScoreBytes;
}
// after those (or the stages), the shared softmax's buffers: P_m [2 m-tiles][n_mod][16 rows][kWPStride] bf16 and the
// parts' row maxima [2][up to 8 parts][16] floats (after the tiles: the parts' row sums)
constexpr int kWPStride = kTile + 8;  // bf16 elements per row of P (16-byte rows on distinct banks)
__host__ __device__ constexpr int kWPBytes(int nmod) { return 2 * nmod * 16 * kWPStride * 2; }
__host__ __device__ constexpr int kWShareBytes(int nmod) { return kWPBytes(nmod) + 2 * 8 * 16 * 4; }

template <int NMOD, bool INT4, bool CLUSTER, int WARPS = 8>
__global__ void __launch_bounds__(WARPS * 32)
    mla_wide_values_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  static_assert(WARPS == 8 || WARPS == 16, "2 m-tiles x 4 or 8 column parts");
  static_assert(!CLUSTER || WARPS == 8, "the cluster's partial scores are laid out over 8 warps");
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kT = WARPS * 32;              // threads
  constexpr int kPartCols = kWCols * 2 / WARPS;  // a warp's columns: 64 or 32
  constexpr int NS = 8;                       // 64 tokens = 8 n-tiles of scores
  constexpr int NO = kPartCols / 8;           // n-tiles of O a warp
  constexpr int kUnits = kTile * kWCols / 8 / kT;  // bf16 latent units of 8 a thread a tile (8 or 4)
  constexpr int kCodeUnits = kUnits / 4;           // int4 units of 32 a thread a tile (2 or 1)
  constexpr int NP = WARPS / 2;                    // column parts: the warps of an m-tile
  constexpr int NT = NS / NP;                      // n-tiles of a tile's tokens whose softmax a warp takes (2 or 1)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  const int split = blockIdx.x, b = blockIdx.z;
  const int hblk = blockIdx.y / g.wide_col_blocks, cb = blockIdx.y - hblk * g.wide_col_blocks;
  const int head0 = hblk * kWHeads, col_base = cb * kWCols;
  const int mt = warp & 1, part = warp >> 1;
  const int qcol = col_base + part * kPartCols;       // the warp's first column
  const bool cols_ok = qcol < p.r_kv;                 // (r_kv % 64 == 0: whole parts)
  const int cpt = min(kWCols, p.r_kv - col_base) / 8;  // latent units a token in this block
  const SeqRange sr = seq_range(p, b);
  int t_first, t_end;
  split_tiles(sr.lo, sr.hi, split, g.splits, g.tiles_per_split, t_first, t_end);
  const int base = sr.lo & ~(kTile - 1);
  const float* S = p.workspace + g.off_rope_ws + int64_t(b) * g.rope_ws_tokens * p.h_q;
  const uint32_t sbase = smem_addr(smem);
  const int hn = min(kWHeads, p.h_q - head0);  // a multiple of 4 (wide_geometry: h_q % 4 == 0)
  // the heads whose scores this CTA stages: all of the block's, or (CLUSTER) its share of their RoPE scores,
  // in pieces of 4 heads
  const int ncb = g.wide_col_blocks;
  const int share = CLUSTER ? (hn + 4 * ncb - 1) / (4 * ncb) * 4 : hn;
  const int sc0 = CLUSTER ? min(hn, cb * share) : 0;
  const int scn = CLUSTER ? min(hn - sc0, share) : hn;
  // the thread's latent units (token row, 8-column unit): each one's offset into a tile's rows of the latent
  // (from row 0, column col_base) and into a stage (-1: none, past the tile's rows), worked out once; and its
  // pieces of 4 heads' scores (tokens tid / 8 + i kT / 8, heads 4 (tid % 8) on; 4 (tid % 8) < scn: in the block)
  int u_src[kUnits], u_dst[kUnits];
#pragma unroll
  for (int i = 0; i < kUnits; ++i) {
    const int u = tid + i * kT, t = u / cpt, c = u - t * cpt;
    u_src[i] = t * p.r_kv + col_base + c * 8;
    u_dst[i] = t < kTile ? (t * kWCStride + c * 8) * 2 : -1;
  }
  const bool sc_in = 4 * (tid & 7) < scn;
  const float* const s_src = S + head0 + sc0 + 4 * (tid & 7);  // + (token - base) h_q
  const uint32_t s_dst = kWTileBytes + ((tid >> 3) * kWSStride + 4 * (tid & 7)) * 4;  // + stage
  auto stage_at = [&](int i) { return i % kWVStages; };
  // the cp.async part of tile t into stage st: the scores (and, bf16, the latent)
  auto issue = [&](int t, int st) {
    const int tok0 = t * kTile;
    const uint32_t sa = sbase + st * kWVStage;
    const bool full = tok0 >= sr.lo && tok0 + kTile <= sr.hi;
    if constexpr (!INT4) {
      const uint16_t* lat = p.latent + (int64_t(b) * p.t_cap + tok0) * p.r_kv;
      if (full && cpt == kWCols / 8) {  // (CTA-uniform) every unit in the tile's rows and the key range: no predicates
#pragma unroll
        for (int i = 0; i < kUnits; ++i) cp_async(sa + u_dst[i], lat + u_src[i], 16, true);
      } else {
#pragma unroll
        for (int i = 0; i < kUnits; ++i) {
          const int j = tok0 + (tid + i * kT) / cpt;
          const bool ok = full || (j >= sr.lo && j < sr.hi);
          if (u_dst[i] >= 0) cp_async(sa + u_dst[i], ok ? lat + u_src[i] : p.latent, 16, ok);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kTile * 8 / kT; ++i) {  // scores: 64 tokens x 8 pieces of 4 heads
      const int tt = (tid >> 3) + i * (kT / 8), j = tok0 + tt;
      const bool ok = sc_in && (full || (j >= sr.lo && j < sr.hi));
      cp_async(sa + s_dst + i * (kT / 8) * kWSStride * 4, ok ? s_src + int64_t(j - base) * p.h_q : S, 16, ok);
    }
  };
  // int4: the latent of tile t into registers, units of 32 codes (token ct, columns 32 cc on), then
  // (store_latent) dequantized into a stage
  int ct[INT4 ? kCodeUnits : 1], cc[INT4 ? kCodeUnits : 1];
  CodeUnit kv[INT4 ? kCodeUnits : 1];
  if constexpr (INT4) {
#pragma unroll
    for (int i = 0; i < kCodeUnits; ++i) {
      const int u = tid + i * kT;
      ct[i] = u / (cpt / 4);  // (cpt: whole parts of 64 columns, so whole units of 32)
      cc[i] = u - ct[i] * (cpt / 4);
    }
  }
  auto fetch_latent = [&](int t) {
    if constexpr (INT4) {
#pragma unroll
      for (int i = 0; i < kCodeUnits; ++i)
        kv[i] = fetch_code_unit(p, b, ct[i] < kTile ? t * kTile + ct[i] : -1, sr.lo, sr.hi, sr.qlen,
                                col_base + cc[i] * 32);
    }
  };
  auto store_latent = [&](int st) {
    if constexpr (INT4) {
      unsigned char* sp = smem + st * kWVStage;
#pragma unroll
      for (int i = 0; i < kCodeUnits; ++i)
        if (ct[i] < kTile) store_code_unit(p, kv[i], col_base + cc[i] * 32, sp + (ct[i] * kWCStride + cc[i] * 32) * 2);
    }
  };
  auto fetch_mod = [&](int t) -> uint8_t {
    const int j = t * kTile + tid;
    return (NMOD == 2 && tid < kTile && t < t_end && j >= sr.lo && j < sr.hi) ? p.modality[int64_t(b) * p.t_cap + j]
                                                                              : uint8_t(0);
  };
  auto store_mod = [&](int st, uint8_t v) {
    if (NMOD == 2 && tid < kTile) smem[st * kWVStage + kWTileBytes + kWScoreBytes + tid] = v;
  };

  float o[NMOD][NO][4];
#pragma unroll
  for (int m = 0; m < NMOD; ++m)
#pragma unroll
    for (int i = 0; i < NO; ++i) o[m][i][0] = o[m][i][1] = o[m][i][2] = o[m][i][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l[NMOD][2];
#pragma unroll
  for (int m = 0; m < NMOD; ++m) l[m][0] = l[m][1] = 0.f;

  // CLUSTER: the block's queries (rows modality x 32 heads, this CTA's columns) into shared memory, once
  unsigned char* const cq = smem + kWVStages * kWVStage;
  float* const csp = reinterpret_cast<float*>(cq + kWClusterQBytes(NMOD));  // [2][kTile][kWSpStride]
  float* const csf = reinterpret_cast<float*>(cq + kWClusterQBytes(NMOD) + 2 * kWClusterSpBytes(NMOD));
  const int cw = cpt * 8;  // this CTA's columns
  unsigned char* const pbuf = smem + (CLUSTER ? kWClusterBytes(NMOD) : kWVStages * kWVStage);
  float* const pmax = reinterpret_cast<float*>(pbuf + kWPBytes(NMOD));
  if constexpr (CLUSTER) {
    for (int u = tid; u < kWQRows(NMOD) * (kWCols / 8); u += kT) {
      const int r = u / (kWCols / 8), c8 = u - r * (kWCols / 8), mod = r / kWHeads, hl = r - mod * kWHeads;
      const uint4 v = hl < hn && 8 * c8 < cw ? load_q8(p, g, mod, b, head0 + hl, col_base + 8 * c8)
                                             : make_uint4(0u, 0u, 0u, 0u);
      *reinterpret_cast<uint4*>(cq + (r * kWCStride + 8 * c8) * 2) = v;
    }
  }
  if (t_first < t_end) {
    issue(t_first, 0);
    cp_async_commit();
    if (t_first + 1 < t_end) issue(t_first + 1, 1);
    cp_async_commit();
    fetch_latent(t_first);
    store_latent(0);
    store_mod(0, fetch_mod(t_first));
  }
  for (int t = t_first, i = 0; t < t_end; ++t, ++i) {
    const int st = stage_at(i);
    if (t + 1 < t_end) fetch_latent(t + 1);
    const uint8_t mod_next = fetch_mod(t + 1);
    cp_async_wait<1>();  // tile t's copies landed (tile t + 1's may be in flight)
    __syncthreads();     // ... every thread's; and every warp is done with the stage tile t + 2 takes
    if (t + 2 < t_end) issue(t + 2, stage_at(i + 2));
    cp_async_commit();
    const unsigned char* sp = smem + st * kWVStage;
    const uint8_t* mods = sp + kWTileBytes + kWScoreBytes;
    const int tok0 = t * kTile;
    if constexpr (CLUSTER) {
      // the partial scores of this CTA's columns: rows (modality, head) x the tile's tokens, on the tensor cores;
      // warp w: m-tile w % MT, n-tiles of 8 tokens from (w / MT) MT on
      constexpr int MT = NMOD * 2;
      const int smt = warp % MT, sn0 = (warp / MT) * MT;
      float acc[MT][4];
#pragma unroll
      for (int n = 0; n < MT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
      const uint32_t a_addr = smem_addr(cq) + ((smt * 16 + (lane & 15)) * kWCStride + (lane >> 4) * 8) * 2;
      const uint32_t b_addr =
          sbase + st * kWVStage + ((sn0 * 8 + (lane & 7) + (lane >> 4) * 8) * kWCStride + ((lane >> 3) & 1) * 8) * 2;
      for (int k = 0; k < cw; k += 16) {
        uint32_t a0, a1, a2, a3;
        ldsm_x4(a_addr + k * 2, a0, a1, a2, a3);
#pragma unroll
        for (int n = 0; n < MT; n += 2) {
          uint32_t b0, b1, b2, b3;
          ldsm_x4(b_addr + n * 8 * kWCStride * 2 + k * 2, b0, b1, b2, b3);
          mma_bf16(acc[n], a0, a1, a2, a3, b0, b1);
          mma_bf16(acc[n + 1], a0, a1, a2, a3, b2, b3);
        }
      }
      // into this CTA's partial buffer i % 2 ([token][row]), with the RoPE scores of its share of the heads
      const float* rope = reinterpret_cast<const float*>(sp + kWTileBytes);  // [token][kWSStride], heads sc0 on
      float* part = csp + (i & 1) * (kTile * kWSpStride(NMOD));
#pragma unroll
      for (int n = 0; n < MT; ++n)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int tt = (sn0 + n) * 8 + 2 * tig + e, r = smt * 16 + gid + 8 * h;
            const int hl = r % kWHeads;
            float v = acc[n][2 * h + e];
            if (hl >= sc0 && hl < sc0 + scn) v += rope[tt * kWSStride + hl - sc0];
            part[tt * kWSpStride(NMOD) + r] = v;
          }
      namespace cg = cooperative_groups;
      cg::cluster_group cluster = cg::this_cluster();
      cluster.sync();  // every CTA's partials of this tile written (and the buffer's previous readers done)
      // the scores: the partials summed over the cluster in rank order (the same sums in every CTA), the key's
      // modality picking the row, the k-bias term and the scale; [token][kWSStride] as the staged scores are
      // (4 heads a thread: one 16-byte load from each rank, all issued before the sums, not a chain of ncb
      // dependent remote loads per head)
      const float scale_log2 = p.scale * kLog2e;
      for (int u = tid; u < kTile * kWHeads / 4; u += kT) {
        const int tt = u / (kWHeads / 4), hl = 4 * (u - tt * (kWHeads / 4));
        const int m = NMOD == 2 && mods[tt] != 0 ? 1 : 0;
        const int off = tt * kWSpStride(NMOD) + m * kWHeads + hl;
        const float4 v = cluster_sum<float4>(cluster, part, off, ncb);
        float4 out = make_float4(0.f, 0.f, 0.f, 0.f);  // (hn: a multiple of 4, so 4 heads all in or all out)
        if (hl < hn) {
          out.x = (v.x + load_qb(p, m, b, head0 + hl)) * scale_log2;
          out.y = (v.y + load_qb(p, m, b, head0 + hl + 1)) * scale_log2;
          out.z = (v.z + load_qb(p, m, b, head0 + hl + 2)) * scale_log2;
          out.w = (v.w + load_qb(p, m, b, head0 + hl + 3)) * scale_log2;
        }
        *reinterpret_cast<float4*>(csf + tt * kWSStride + hl) = out;
      }
      __syncthreads();  // the scores written
    }
    const float* ss = CLUSTER ? csf : reinterpret_cast<const float*>(sp + kWTileBytes);
    const bool full = tok0 >= sr.lo && tok0 + kTile <= sr.hi;  // (else the keys outside the range masked)
    // The softmax of the tile, shared by the m-tile's NP warps (one per column part): each takes NT n-tiles of
    // tokens (8 part NT on), their scores (rows gid, gid + 8; tokens 8 n + 2 tig + e), their max into pmax, and
    // after a barrier of the NP warps the tile's max from all of them (every warp the same, so the running
    // maxima agree); then its tokens' weights, its own share of the row sums, and P_m (the weights of modality
    // m's keys, bf16) into pbuf, which after a second barrier every warp of the m-tile reads as its A fragments.
    const int n0 = part * NT;
    float s[NT][4];
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int tt = 8 * (n0 + n) + 2 * tig + e;
        const bool ok = full || (tok0 + tt >= sr.lo && tok0 + tt < sr.hi);
        const float x0 = ss[tt * kWSStride + mt * 16 + gid], x1 = ss[tt * kWSStride + mt * 16 + gid + 8];
        s[n][e] = ok ? x0 : -INFINITY;  // (loaded either way: a select, not a branch around each load)
        s[n][2 + e] = ok ? x1 : -INFINITY;
        mx[0] = fmaxf(mx[0], s[n][e]);
        mx[1] = fmaxf(mx[1], s[n][2 + e]);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      if (tig == 0) pmax[(mt * NP + part) * 16 + gid + 8 * h] = mx[h];
    }
    named_barrier(1 + mt, NP * 32);  // the m-tile's parts' maxima written (and their last tile's P read)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = pmax[(mt * NP) * 16 + gid + 8 * h];
#pragma unroll
      for (int q = 1; q < NP; ++q) mx[h] = fmaxf(mx[h], pmax[(mt * NP + q) * 16 + gid + 8 * h]);
    }
    // the online softmax of the warp-rows kernel (rows_tile), its max slack included
    float m_use[2], alpha[2];
    running_max_step(mx, m_run, alpha, m_use);
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int m = 0; m < NMOD; ++m) l[m][h] *= alpha[h];
    if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f)) {
#pragma unroll
      for (int m = 0; m < NMOD; ++m)
#pragma unroll
        for (int k = 0; k < NO; ++k)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            o[m][k][2 * h] *= alpha[h];
            o[m][k][2 * h + 1] *= alpha[h];
          }
    }
    // which modalities the tile's keys hold (keys outside the range: text, weight 0); a modality without a key
    // in the tile adds nothing (its P_m is neither written nor multiplied)
    bool has[NMOD];
    has[0] = true;
    if constexpr (NMOD == 2) {
      const bool im_a = mods[lane] != 0, im_b = mods[lane + 32] != 0;
      has[1] = __any_sync(0xffffffffu, im_a || im_b);
      has[0] = __any_sync(0xffffffffu, !im_a || !im_b);
    }
    // the weights, in place of the scores; img bit 2 n + e: the thread's token 8 (n0 + n) + 2 tig + e is an image key
    uint32_t img = 0u;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool im = NMOD == 2 && mods[8 * (n0 + n) + 2 * tig + e] != 0;
        if (im) img |= 1u << (2 * n + e);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float pe = exp2f(s[n][2 * h + e] - m_use[h]);
          s[n][2 * h + e] = pe;
          if (NMOD == 2 && im) {  // (no runtime index into l: it would live in local memory)
            l[NMOD - 1][h] += pe;
          } else {
            l[0][h] += pe;
          }
        }
      }
    }
#pragma unroll
    for (int m = 0; m < NMOD; ++m) {
      if (!has[m]) continue;
      auto wm = [&](int n, int k) {
        const bool im = (img >> (2 * n + (k & 1))) & 1u;
        return NMOD == 1 || im == (m == 1) ? s[n][k] : 0.f;
      };
      unsigned char* pm = pbuf + (mt * NMOD + m) * 16 * kWPStride * 2;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int tt = 8 * (n0 + n) + 2 * tig;
        *reinterpret_cast<uint32_t*>(pm + (gid * kWPStride + tt) * 2) = pack_bf16x2(wm(n, 0), wm(n, 1));
        *reinterpret_cast<uint32_t*>(pm + ((gid + 8) * kWPStride + tt) * 2) = pack_bf16x2(wm(n, 2), wm(n, 3));
      }
    }
    named_barrier(1 + mt, NP * 32);  // the m-tile's P written
    if (cols_ok) {
#pragma unroll
      for (int m = 0; m < NMOD; ++m) {
        if (!has[m]) continue;
        const uint32_t a_addr =
            smem_addr(pbuf) + (((mt * NMOD + m) * 16 + (lane & 15)) * kWPStride + (lane >> 4) * 8) * 2;
#pragma unroll
        for (int kk = 0; kk < NS / 2; ++kk) {
          uint32_t a0, a1, a2, a3;
          ldsm_x4(a_addr + kk * 16 * 2, a0, a1, a2, a3);
          const uint32_t b_addr =
              sbase + st * kWVStage + ((kk * 16 + (lane & 15)) * kWCStride + part * kPartCols + (lane >> 4) * 8) * 2;
#pragma unroll
          for (int k = 0; k < NO; k += 2) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4_trans(b_addr + k * 16, b0, b1, b2, b3);
            mma_bf16(o[m][k], a0, a1, a2, a3, b0, b1);
            mma_bf16(o[m][k + 1], a0, a1, a2, a3, b2, b3);
          }
        }
      }
    }
    // tile t + 1's register-held parts into its stage (attended after the next barrier; no warp reads it now)
    if (t + 1 < t_end) store_latent(stage_at(i + 1));
    store_mod(stage_at(i + 1), mod_next);
  }
  cp_async_wait<0>();
  if constexpr (CLUSTER) {  // no CTA leaves while another may still read its partials
    namespace cg = cooperative_groups;
    cg::this_cluster().sync();
  }

  // the partials: the split's max (every part holds it) and masses (each part's sums over its own tokens, summed
  // by the first part's warps in part order), O's columns
  const Partials wp = partials(p, g.total_splits);
#pragma unroll
  for (int m = 0; m < NMOD; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[m][h] += __shfl_xor_sync(0xffffffffu, l[m][h], 1);
      l[m][h] += __shfl_xor_sync(0xffffffffu, l[m][h], 2);
    }
  float* const lsum = reinterpret_cast<float*>(pbuf);  // [2 m-tiles][n_mod][NP][16]
  __syncthreads();  // every warp is done with the last tile's P
  if (tig == 0) {
#pragma unroll
    for (int m = 0; m < NMOD; ++m)
#pragma unroll
      for (int h = 0; h < 2; ++h) lsum[((mt * NMOD + m) * NP + part) * 16 + gid + 8 * h] = l[m][h];
  }
  __syncthreads();
  if (part == 0) {
#pragma unroll
    for (int m = 0; m < NMOD; ++m)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float* ls = lsum + (mt * NMOD + m) * NP * 16 + gid + 8 * h;
        l[m][h] = ls[0];
#pragma unroll
        for (int q = 1; q < NP; ++q) l[m][h] += ls[q * 16];
      }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int hl = mt * 16 + gid + 8 * h, head = head0 + hl;
    if (hl >= hn) continue;
    if (cb == 0 && part == 0 && tig == 0) {
      wp.m_at(p, split, b, head) = m_run[h];
#pragma unroll
      for (int m = 0; m < NMOD; ++m) wp.mass_at(p, split, m, b, head) = l[m][h];
    }
    if (!cols_ok) continue;
#pragma unroll
    for (int m = 0; m < NMOD; ++m) {
      float* out = wp.acc_at(p, split, m, b, head) + qcol + 2 * tig;
#pragma unroll
      for (int k = 0; k < NO; ++k)
        *reinterpret_cast<float2*>(out + k * 8) = make_float2(o[m][k][2 * h], o[m][k][2 * h + 1]);
    }
  }
}

int wide_scores_smem_bytes() {
  const int stages = 2 * (kWRows + kWTok) * kWStride * 2;
  const int prod = kWRows * (kWTok + 4) * 4;
  return stages > prod ? stages : prod;
}
int wide_values_smem_bytes() { return kWVStages * kWVStage + kWShareBytes(2); }
int wide_rows_per_block() { return kWRows; }
int wide_score_chunk_cols() { return kWK; }
int wide_value_heads() { return kWHeads; }
int wide_value_cols() { return kWCols; }
KernelFn wide_scores_kernel(bool ksplit) {
  return ksplit ? mla_wide_scores_kernel<true> : mla_wide_scores_kernel<false>;
}
KernelFn wide_values_kernel(int n_mod, bool int4, int warps) {
  if (warps == 16) {
    if (int4) {
      return n_mod == 2 ? mla_wide_values_kernel<2, true, false, 16> : mla_wide_values_kernel<1, true, false, 16>;
    }
    return n_mod == 2 ? mla_wide_values_kernel<2, false, false, 16> : mla_wide_values_kernel<1, false, false, 16>;
  }
  if (int4) return n_mod == 2 ? mla_wide_values_kernel<2, true, false> : mla_wide_values_kernel<1, true, false>;
  return n_mod == 2 ? mla_wide_values_kernel<2, false, false> : mla_wide_values_kernel<1, false, false>;
}
int wide_cluster_smem_bytes(int n_mod) {
  return n_mod == 2 ? kWClusterBytes(2) + kWShareBytes(2) : kWClusterBytes(1) + kWShareBytes(1);
}
KernelFn wide_cluster_kernel(int n_mod, bool int4) {
  if (int4) return n_mod == 2 ? mla_wide_values_kernel<2, true, true> : mla_wide_values_kernel<1, true, true>;
  return n_mod == 2 ? mla_wide_values_kernel<2, false, true> : mla_wide_values_kernel<1, false, true>;
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
