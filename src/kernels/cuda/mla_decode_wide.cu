// The scores-first decode for latents too wide for the warp-rows kernel (MlaDecodePlan::wide; LLaVA-1.5's
// d_kv 32 and 64: r_kv 1,024 and 2,048, whose tiles and O accumulators do not fit one CTA): three passes over
// the keys instead of one, each on the tensor cores, so that no CTA ever holds a whole latent row's O.
//   1. mla_rope_scores_kernel (mla_decode.cu): q_r . k_r of every (key, head) into the scores region S of the
//      workspace ([b][rope_ws_tokens][h_q] floats, Geom::off_rope_ws).
//   2. mla_wide_scores_kernel: s = (qa[m_j] . c_j + S + qb[m_j]) * scale * log2(e), in place in S (-inf outside
//      the key range). A CTA takes 128 tokens and 64 query rows (the heads of a block times the modalities:
//      both absorbed queries, the key's modality picks one), streaming the latent and the queries in 64-column
//      chunks through shared memory (register double-buffering: the next chunk's loads in flight during the
//      current chunk's MMAs); 8 warps of 16 rows x 64 tokens.
//   3. mla_wide_values_kernel: per (split, head block of 32, column block of 256, sequence), O_m += P_m C over
//      its columns with the online softmax over S (the warp-rows kernel's, its max slack included), P_m the
//      weights of modality m's keys; it writes the split-KV partials (Partials) that the combine kernel merges.
//      8 warps: 2 m-tiles x 4 quarters of 64 columns.
// The latent is read twice (passes 2 and 3) and S once per column block: about 2 r_kv + 2 h_kv R + 4 h_q
// (r_kv / 256 + 2) bytes a key, against the cache's 2 (r_kv + h_kv R). int4 stores are dequantized as the
// keys are staged (code * scale + minimum in float32, rounded to bf16: dequant_rows' arithmetic), positions
// of the window from the bf16 ring.
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
constexpr int kWSStride = kWHeads + 1;  // floats per token of a values-kernel scores tile (bank-conflict free)

// One 8-value unit of a latent row as fetched: bf16 values (the store, the ring, or zeros), or int4 codes with
// their group's float16 scale and minimum, dequantized when stored (unit_bf16). Raw loads only, so that the
// loads of the next chunk stay in flight during the current chunk's MMAs.
struct LatentUnit {
  uint4 v;     // bf16: the 8 values; int4: v.x the 8 codes, v.y scale | minimum << 16
  bool codes;  // int4 codes
};

__device__ __forceinline__ LatentUnit fetch_unit(const MlaDecodeParams& p, int b, int j, int lo, int hi, int qlen,
                                                 int col) {
  LatentUnit u;
  u.v = make_uint4(0u, 0u, 0u, 0u);
  u.codes = false;
  if (j < lo || j >= hi) return u;
  if (p.format == MlaCacheFormat::kBf16) {
    u.v = __ldg(reinterpret_cast<const uint4*>(p.latent + (int64_t(b) * p.t_cap + j) * p.r_kv + col));
  } else if (j >= qlen) {
    u.v = __ldg(reinterpret_cast<const uint4*>(p.latent_win + (int64_t(b) * p.window + j % p.window) * p.r_kv + col));
  } else {
    const int64_t row = int64_t(b) * p.t_cap + j;
    u.v.x = __ldg(reinterpret_cast<const unsigned int*>(p.latent_q + row * (p.r_kv / 2) + col / 2));
    const int64_t gi = row * (p.r_kv / p.group_c) + col / p.group_c;
    u.v.y = uint32_t(__ldg(reinterpret_cast<const unsigned short*>(p.latent_scale + gi))) |
            (uint32_t(__ldg(reinterpret_cast<const unsigned short*>(p.latent_lo + gi))) << 16);
    u.codes = true;
  }
  return u;
}

__device__ __forceinline__ uint4 unit_bf16(const LatentUnit& u) {
  if (!u.codes) return u.v;
  const float sc = half_bits_to_float(uint16_t(u.v.y & 0xffffu)), lo = half_bits_to_float(uint16_t(u.v.y >> 16));
  float x[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) x[e] = fmaf(__uint_as_float(((u.v.x >> (4 * e)) & 15u) | 0x4B000000u) - 8388608.f, sc, lo);
  return make_uint4(pack_bf16x2(x[0], x[1]), pack_bf16x2(x[2], x[3]), pack_bf16x2(x[4], x[5]),
                    pack_bf16x2(x[6], x[7]));
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
__global__ void __launch_bounds__(kThreads)
    mla_wide_scores_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kStage = (kWRows + kWTok) * kWStride * 2;  // bytes: queries, then keys
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  const int b = blockIdx.z, hb = g.wide_hb, head0 = blockIdx.y * hb;
  const int mt = warp & 3, c0 = (warp >> 2) * 64;  // the warp's 16 rows and 64 tokens
  const SeqRange sr = seq_range(p, b);
  if (sr.hi <= sr.lo) return;
  const int base = sr.lo & ~(kTile - 1);
  const int groups = (sr.hi - base + kWTok - 1) / kWTok;
  float* S = p.workspace + g.off_rope_ws + int64_t(b) * g.rope_ws_tokens * p.h_q;
  const float scale_log2 = p.scale * kLog2e;
  const int chunks = p.r_kv / kWK;
  const uint32_t sbase = smem_addr(smem);

  for (int grp = blockIdx.x; grp < groups; grp += gridDim.x) {
    const int tok0 = base + grp * kWTok;
    // the thread's units of a chunk: queries 64 rows x 8 units (2 a thread), keys 128 tokens x 8 (4 a thread)
    float qv[2][8];
    LatentUnit kv[4];
    auto fetch = [&](int ch) {
      const int col0 = ch * kWK;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int u = tid + i * kThreads, r = u >> 3, c = col0 + (u & 7) * 8;
        int mod, head;
        const bool ok = query_row(p, r, hb, head0, mod, head);
        const int64_t off = ok ? qa_offset(p, mod, b, head) + c : 0;
#pragma unroll
        for (int e = 0; e < 8; ++e) qv[i][e] = ok ? load_q(p.qa, p.q_bf16, off + e) : 0.f;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int u = tid + i * kThreads, t = u >> 3;
        kv[i] = fetch_unit(p, b, tok0 + t, sr.lo, sr.hi, sr.qlen, col0 + (u & 7) * 8);
      }
    };
    auto store = [&](int stage) {
      unsigned char* st = smem + stage * kStage;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int u = tid + i * kThreads, r = u >> 3;
        *reinterpret_cast<uint4*>(st + (r * kWStride + (u & 7) * 8) * 2) =
            make_uint4(pack_bf16x2(qv[i][0], qv[i][1]), pack_bf16x2(qv[i][2], qv[i][3]),
                       pack_bf16x2(qv[i][4], qv[i][5]), pack_bf16x2(qv[i][6], qv[i][7]));
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int u = tid + i * kThreads, t = u >> 3;
        *reinterpret_cast<uint4*>(st + ((kWRows + t) * kWStride + (u & 7) * 8) * 2) = unit_bf16(kv[i]);
      }
    };
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    __syncthreads();  // the previous group's epilogue is done with the stages
    fetch(0);
    store(0);
    __syncthreads();
    for (int ch = 0; ch < chunks; ++ch) {
      if (ch + 1 < chunks) fetch(ch + 1);
      const uint32_t st = sbase + (ch & 1) * kStage;
      const uint32_t a_addr = st + ((mt * 16 + (lane & 15)) * kWStride + (lane >> 4) * 8) * 2;
      const uint32_t b_addr = st + ((kWRows + c0 + (lane & 7) + (lane >> 4) * 8) * kWStride + ((lane >> 3) & 1) * 8) * 2;
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
      if (ch + 1 < chunks) store((ch + 1) & 1);  // the other stage: every warp left it at the last barrier
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
    const int hn = min(hb, p.h_q - head0);
    for (int idx = tid; idx < kWTok * hn; idx += kThreads) {
      const int t = idx / hn, h = idx - t * hn, j = tok0 + t;
      if (j >= sr.lo && j < sr.hi) {  // (the values kernel reads the key range only)
        float* out = S + int64_t(j - base) * p.h_q + head0 + h;
        const int m = p.n_mod == 2 && p.modality[int64_t(b) * p.t_cap + j] != 0 ? 1 : 0;
        *out = (prod[(m * hb + h) * kPS + t] + *out + load_qb(p, m, b, head0 + h)) * scale_log2;
      }
    }
  }
}

// ---- pass 3: the values -------------------------------------------------------------------------------
// Grid (splits, head blocks x column blocks, b); g.wide_col_blocks column blocks of kWCols.
template <int NMOD>
__global__ void __launch_bounds__(kThreads)
    mla_wide_values_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int kTileBytes = kTile * kWCStride * 2;
  constexpr int kScoreBytes = kTile * kWSStride * 4;
  constexpr int kStage = kTileBytes + kScoreBytes + kTile;  // keys, scores, modality bytes
  constexpr int NS = 8;                                     // 64 tokens = 8 n-tiles of scores
  constexpr int NO = 8;                                     // 64 columns = 8 n-tiles of O
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  const int split = blockIdx.x, b = blockIdx.z;
  const int hblk = blockIdx.y / g.wide_col_blocks, cb = blockIdx.y - hblk * g.wide_col_blocks;
  const int head0 = hblk * kWHeads, col_base = cb * kWCols;
  const int mt = warp & 1, quarter = warp >> 1;
  const int qcol = col_base + quarter * 64;            // the warp's first column
  const bool cols_ok = qcol < p.r_kv;                  // (r_kv % 64 == 0: whole quarters)
  const int ncols = min(kWCols, p.r_kv - col_base);   // the block's columns (a multiple of 64)
  const SeqRange sr = seq_range(p, b);
  int t_first, t_end;
  split_tiles(sr.lo, sr.hi, split, g.splits, g.tiles_per_split, t_first, t_end);
  const int base = sr.lo & ~(kTile - 1);
  const float* S = p.workspace + g.off_rope_ws + int64_t(b) * g.rope_ws_tokens * p.h_q;
  const uint32_t sbase = smem_addr(smem);
  const int hn = min(kWHeads, p.h_q - head0);
  const int units = kTile * (ncols / 8);  // latent units a tile (at most 2,048: 8 a thread)

  LatentUnit kv[8];
  float sv[8];
  uint8_t mv = 0;
  auto fetch = [&](int t) {
    const int tok0 = t * kTile;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int u = tid + i * kThreads, tt = u / (ncols / 8), c = col_base + (u - tt * (ncols / 8)) * 8;
      kv[i] = u < units ? fetch_unit(p, b, tok0 + tt, sr.lo, sr.hi, sr.qlen, c) : LatentUnit{make_uint4(0, 0, 0, 0), false};
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {  // scores [64 tokens][32 heads]
      const int u = tid + i * kThreads, tt = u >> 5, h = u & 31, j = tok0 + tt;
      sv[i] = (h < hn && j >= sr.lo && j < sr.hi) ? S[int64_t(j - base) * p.h_q + head0 + h] : -INFINITY;
    }
    if (NMOD == 2 && tid < kTile) {
      const int j = tok0 + tid;
      mv = (j >= sr.lo && j < sr.hi) ? p.modality[int64_t(b) * p.t_cap + j] : uint8_t(0);
    }
  };
  auto store = [&](int stage) {
    unsigned char* st = smem + stage * kStage;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int u = tid + i * kThreads, tt = u / (ncols / 8), c8 = u - tt * (ncols / 8);
      if (u < units) *reinterpret_cast<uint4*>(st + (tt * kWCStride + c8 * 8) * 2) = unit_bf16(kv[i]);
    }
    float* ss = reinterpret_cast<float*>(st + kTileBytes);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int u = tid + i * kThreads;
      ss[(u >> 5) * kWSStride + (u & 31)] = sv[i];
    }
    if (NMOD == 2 && tid < kTile) st[kTileBytes + kScoreBytes + tid] = mv;
  };

  float o[NMOD][NO][4];
#pragma unroll
  for (int m = 0; m < NMOD; ++m)
#pragma unroll
    for (int i = 0; i < NO; ++i) o[m][i][0] = o[m][i][1] = o[m][i][2] = o[m][i][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l[NMOD][2];
#pragma unroll
  for (int m = 0; m < NMOD; ++m) l[m][0] = l[m][1] = 0.f;

  if (t_first < t_end) {
    fetch(t_first);
    store(0);
  }
  __syncthreads();
  for (int t = t_first; t < t_end; ++t) {
    const int stage = (t - t_first) & 1;
    if (t + 1 < t_end) fetch(t + 1);
    const unsigned char* st = smem + stage * kStage;
    const float* ss = reinterpret_cast<const float*>(st + kTileBytes);
    const uint8_t* mods = st + kTileBytes + kScoreBytes;
    // the thread's scores, in the score accumulators' layout (rows gid, gid + 8; tokens 8 n + 2 tig + e)
    float s[NS][4];
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int tt = 8 * n + 2 * tig + e;
        s[n][e] = ss[tt * kWSStride + mt * 16 + gid];
        s[n][2 + e] = ss[tt * kWSStride + mt * 16 + gid + 8];
        mx[0] = fmaxf(mx[0], s[n][e]);
        mx[1] = fmaxf(mx[1], s[n][2 + e]);
      }
    }
    // the online softmax of the warp-rows kernel (rows_tile), its max slack included
    float m_use[2], alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      alpha[h] = 1.f;
      if (mx[h] > m_run[h] + kMaxSlack) {
        alpha[h] = exp2f(m_run[h] - mx[h]);
        m_run[h] = mx[h];
      }
      m_use[h] = m_run[h] == -INFINITY ? 0.f : m_run[h];
#pragma unroll
      for (int m = 0; m < NMOD; ++m) l[m][h] *= alpha[h];
    }
    if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f)) {
#pragma unroll
      for (int m = 0; m < NMOD; ++m)
#pragma unroll
        for (int i = 0; i < NO; ++i)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            o[m][i][2 * h] *= alpha[h];
            o[m][i][2 * h + 1] *= alpha[h];
          }
    }
    // the weights, in place of the scores; img bit 2 n + e: the thread's token 8 n + 2 tig + e is an image key
    uint32_t img = 0u;
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool im = NMOD == 2 && mods[8 * n + 2 * tig + e] != 0;
        if (im) img |= 1u << (2 * n + e);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float pe = exp2f(s[n][2 * h + e] - m_use[h]);
          s[n][2 * h + e] = pe;
          l[im ? NMOD - 1 : 0][h] += pe;
        }
      }
    }
    if (cols_ok) {
#pragma unroll
      for (int m = 0; m < NMOD; ++m) {
        // a modality without a key among the warp's 64 tokens adds nothing (warp-uniform skip); P_m: the
        // weights of modality m's keys, zeros elsewhere
        if (NMOD == 2 && !__any_sync(0xffffffffu, m == 1 ? img != 0u : img != 0xffffu)) continue;
        auto wm = [&](int n, int i) {
          const bool im = (img >> (2 * n + (i & 1))) & 1u;
          return NMOD == 1 || im == (m == 1) ? s[n][i] : 0.f;
        };
#pragma unroll
        for (int kk = 0; kk < NS / 2; ++kk) {
          const uint32_t a0 = pack_bf16x2(wm(2 * kk, 0), wm(2 * kk, 1));
          const uint32_t a1 = pack_bf16x2(wm(2 * kk, 2), wm(2 * kk, 3));
          const uint32_t a2 = pack_bf16x2(wm(2 * kk + 1, 0), wm(2 * kk + 1, 1));
          const uint32_t a3 = pack_bf16x2(wm(2 * kk + 1, 2), wm(2 * kk + 1, 3));
          const uint32_t b_addr =
              sbase + stage * kStage + ((kk * 16 + (lane & 15)) * kWCStride + quarter * 64 + (lane >> 4) * 8) * 2;
#pragma unroll
          for (int i = 0; i < NO; i += 2) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4_trans(b_addr + i * 16, b0, b1, b2, b3);
            mma_bf16(o[m][i], a0, a1, a2, a3, b0, b1);
            mma_bf16(o[m][i + 1], a0, a1, a2, a3, b2, b3);
          }
        }
      }
    }
    if (t + 1 < t_end) store(stage ^ 1);  // every warp left that stage at the last barrier
    __syncthreads();
  }

  // the partials: the split's max and masses (the first quarter's warps; all quarters hold the same), O's columns
  const Partials wp = partials(p, g.total_splits);
#pragma unroll
  for (int m = 0; m < NMOD; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[m][h] += __shfl_xor_sync(0xffffffffu, l[m][h], 1);
      l[m][h] += __shfl_xor_sync(0xffffffffu, l[m][h], 2);
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int hl = mt * 16 + gid + 8 * h, head = head0 + hl;
    if (hl >= hn) continue;
    if (cb == 0 && quarter == 0 && tig == 0) {
      wp.m_at(p, split, b, head) = m_run[h];
#pragma unroll
      for (int m = 0; m < NMOD; ++m) wp.mass_at(p, split, m, b, head) = l[m][h];
    }
    if (!cols_ok) continue;
#pragma unroll
    for (int m = 0; m < NMOD; ++m) {
      float* out = wp.acc_at(p, split, m, b, head) + qcol + 2 * tig;
#pragma unroll
      for (int i = 0; i < NO; ++i)
        *reinterpret_cast<float2*>(out + i * 8) = make_float2(o[m][i][2 * h], o[m][i][2 * h + 1]);
    }
  }
}

int wide_scores_smem_bytes() {
  const int stages = 2 * (kWRows + kWTok) * kWStride * 2;
  const int prod = kWRows * (kWTok + 4) * 4;
  return stages > prod ? stages : prod;
}
int wide_values_smem_bytes() { return 2 * (kTile * kWCStride * 2 + kTile * kWSStride * 4 + kTile); }
int wide_rows_per_block() { return kWRows; }
int wide_value_heads() { return kWHeads; }
int wide_value_cols() { return kWCols; }
KernelFn wide_scores_kernel() { return mla_wide_scores_kernel; }
KernelFn wide_values_kernel(int n_mod) {
  return n_mod == 2 ? mla_wide_values_kernel<2> : mla_wide_values_kernel<1>;
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
