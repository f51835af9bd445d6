// Plain parameter structs of the kernels (FlashMLA style): raw pointers and sizes, one shape comment
// per field, no libtorch types, so the .cu files compile with plain nvcc. ops.cpp fills them from
// validated at::Tensors; the CUDA code trusts them.
//
// Glossary (docs/GLOSSARY.md): b sequences, h_q query heads, h_kv kv groups (head h reads the RoPE key of
// group h / (h_q / h_kv)), r_kv latent width, R = qk_rope_head_dim (rotated RoPE key width per group),
// t_cap cache capacity in tokens, n_mod modalities (1: text only; 2: text 0 and image 1, METHOD.md §5).
#pragma once

#include <cstdint>

namespace vlm2mla {

// How the latent cache is stored (METHOD.md §7). Closed list: switch without default.
enum class MlaCacheFormat {
  kBf16,  // latent and RoPE key in bf16
  kInt4,  // group-wise asymmetric int4 (kvcache/quant.h) for positions < length - window, plus a bf16
          // ring of the last `window` positions
};

// Which decode kernel runs on CUDA tensors. Closed list.
// kAuto: the warpgroup-MMA kernel (kWgmma) where it takes the call (int4 stores at its sizes on sm_90a, since
// session 37), else the warp-rows tensor-core kernel where the sizes allow it, else the split-keys tensor-core
// kernel, else the generic one (any r_kv % 8 == 0, any even d_rope; slower).
// kTensorCoreWarpRows (since 2026-11-29): each warp owns 16 (modality, head) rows and a share of every
// 64-token tile, P stays in registers, one barrier per tile; int4 keys are dequantized from register
// prefetches (docs/KERNELS.md). Needs r_kv % 16 == 0, r_kv <= 256, d_rope % 8 == 0, h_q * n_mod > 16,
// aligned arrays; int4 also r_kv and h_kv * d_rope multiples of 32 and groups of 16 or multiples of 32.
// With two modalities and h_q > 16 it runs as modality CTAs (each CTA one modality's heads; a CTA skips the
// tiles without a token of its modality unread), else in the joint layout (each CTA both modalities' rows);
// kAuto takes the modality CTAs wherever they take the sizes (from one (sequence, head block) pair since
// 2026-11-30: 7% shorter 7B steps at 32k x 8 than the joint layout; 16 pairs before), else the joint layout.
// kTensorCoreWarpRowsJoint: the warp-rows kernel in the joint layout always (h_q * n_mod > 16): the twin of
// the modality CTAs, and the better one where the modality changes within most tiles.
// kTensorCore: the split-keys kernel (each warp scores 8 tokens of a tile for every row; row maxima and P
// through shared memory, three barriers per tile): r_kv % 16 == 0, r_kv <= 512, d_rope % 8 == 0, aligned
// arrays, tiles that fit in shared memory. The twin of the warp-rows kernel and the one for r_kv > 256.
// kTensorCoreCodes (int4 only): the split-keys kernel with its products on the int4 codes, the affine map
// code * scale + lo applied to the fp32 accumulators (docs/KERNELS.md), no dequantization pass; needs
// groups % 16 == 0, d_rope % 16 == 0 and r_kv / group_c <= 8. Measured 1.75x slower than dequantizing on
// the H200 (2026-11-29), so kAuto never picks it.
// kWide (session 14): the scores-first kernels (mla_decode_wide.cu: the scores of every key into the workspace,
// then O per 256-column block over them, both on the tensor cores) for latents the other tensor-core kernels do
// not take (r_kv > 512: LLaVA-1.5's d_kv 32 and 64); kAuto's choice before the generic kernel. Needs r_kv % 64
// == 0, d_rope % 8 == 0, aligned arrays; int4 also groups that are multiples of 8.
// kWideCluster (session 15): their one-pass twin: no scores pass, the values kernel's column blocks of one
// (split, head block, sequence) in a thread-block cluster that computes the scores itself, summing each block's
// partial scores through distributed shared memory (the latent read once). The same sizes with r_kv <= 2,048 (at
// most 8 blocks a cluster) on compute capability >= 9.0. Correct on the H200 but slower beyond one sequence
// (docs/KERNELS.md, session 16): kAuto never picks it.
// kWgmma (session 36): Hopper's warpgroup MMAs over an int4 store (mla_decode_wgmma.cu, built for sm_90a): consumer
// warpgroups score and accumulate tiles with wgmma, dequantized by producer warpgroups into shared memory or (by
// default from two sequences, session 39) by the consumers themselves into the MMAs' A registers
// (wgmma_producers / wgmma_consumers below), a CTA a (split, modality, sequence). Built for the sizes of
// Qwen2.5-VL-7B converted with D = 32 (r_kv 128, h_kv 4, d_rope 32, h_q 28) and groups of 32, 64 or 128 on compute
// capability 9.0 alone. kAuto's first choice since session 37 (fp16 operands and
// a lazy max: 0.77-0.87x the warp-rows kernel's time; docs/KERNELS.md says what it measured); the warp-rows kernel
// (kTensorCoreWarpRows) is its twin.
enum class MlaDecodeVariant {
  kAuto,
  kTensorCore,
  kGeneric,
  kTensorCoreCodes,
  kTensorCoreWarpRows,
  kTensorCoreWarpRowsJoint,
  kWide,
  kWideCluster,
  kWgmma
};

// How the split-KV partials are merged (the combine kernel, after every decode kernel): kBlock, one CTA of 256
// threads a (sequence, head), its splits and columns spread over the CTA; kColumns, kBlock's CTAs a (sequence,
// head) and chunk of 256 latent columns (r_kv >= 512), the splits spread over each CTA's threads; kWarp, one warp a
// (sequence, head), no barriers; kAuto, kWarp from half a wave of kBlock's CTAs on (b >= 19 at 28 heads on an
// H200), else kBlock in as many column chunks (up to r_kv / 256) as fill that wave.
enum class MlaDecodeCombine { kAuto, kBlock, kWarp, kColumns };

// The most segments a sequence the modality CTAs' splits follow (MlaDecodeParams::split_bounds).
constexpr int kMaxSplitSegments = 16;

// Absorbed MLA decode over a latent cache: one query token per sequence. For sequence b and query head h
// (group g = h / (h_q / h_kv)), over the keys j in [start[b], length[b]):
//   s_j = scale * ( qr[b,h] . k_rope_j[g] + qa[m_j,b,h] . c_j + qb[m_j,b,h] ),   p = softmax_j(s)
//   acc[m,b,h,:] = sum_{j: m_j = m} p_j c_j,   mass[m,b,h] = sum_{j: m_j = m} p_j
// (an empty key range gives acc = 0 and mass = 0). bf16 values are passed as their raw 16-bit patterns
// (uint16_t), float16 likewise. All arrays are dense, row-major, 16-byte aligned where ops.cpp allows.
struct MlaDecodeParams {
  MlaCacheFormat format = MlaCacheFormat::kBf16;

  int b = 0;        // sequences
  int h_q = 0;      // query heads
  int h_kv = 0;     // RoPE key groups; h_q % h_kv == 0
  int r_kv = 0;     // latent width; multiple of 8
  int d_rope = 0;   // R, RoPE key width per group; even
  int n_mod = 1;    // 1 or 2 modalities
  int t_cap = 0;    // cache capacity (tokens) of every per-token array below
  int max_length = 0;  // an upper bound on length[i] - start[i] over the batch (sizes the split-KV grid)
  int min_tiles_per_split = 0;  // tensor-core kernels: fewest 64-token tiles per split CTA; 0: the plan's own
  int max_tiles_per_split = 0;  // tensor-core kernels: most 64-token tiles per split CTA (wins over the fewest);
                                // 0: the plan's own (kMaxTilesPerSplitImage for modality CTAs with holds_image
                                // where the plan does not take image_first)
  int holds_image = 0;  // two sets: 1 where some sequence's keys hold an image (a hint for the plan, not results)
  int image_first = 0;  // with holds_image, warp-rows kernel's modality CTAs: 1 dispatches every image CTA
                        // before the text ones, in the plan's own splits, where those fit the text CTAs in one
                        // wave (MlaDecodeInputs::image_first)
  // two sets, optional: each sequence's segments of keys of one kind (text tiles, image tiles, tiles of both; the
  // latent cache's modality_segments), int32 [b, bound_segments + 1] tile indices (position / 64), segment k of
  // sequence i covering tiles [split_bounds[i][k], split_bounds[i][k + 1]) (the first from the keys' first tile,
  // the last to their end). Where the plan takes the modality CTAs, their splits follow them (split_map.h's
  // segment_split_tiles), so that an image leaves no split mixed but the tiles on its edges; else ignored. A hint
  // for the plan: any content gives the same keys (balance, not results).
  const int32_t* split_bounds = nullptr;
  int bound_segments = 0;  // 1..kMaxSplitSegments (0: no split_bounds)
  // two sets, optional: per sequence, a position from which every key is text (int32 [b]; the latent cache's
  // image_end, one past its last image position, 0 for none). Where the modality CTAs find their splits' pure
  // ones (pure_splits), they read the modality bytes below it only: a split wholly above it is pure text without
  // a read. A claim the results depend on: a key at or above it recorded as an image would be taken for text.
  const int32_t* image_end = nullptr;
  int specialized = 0;  // warp-rows kernel: 1 takes the instance built for r_kv 128, h_kv * d_rope 128, d_rope 32
                        // (their loop bounds and strides compile-time constants) where the sizes are those; 2
                        // bf16 caches: its grouped-rows twin (7 heads per kv group in 8 rows, full tiles
                        // unmasked) where h_q == 7 h_kv, else 1
  int pure_splits = 0;  // warp-rows kernel, modality CTAs: a CTA whose split's keys are all of its modality (a
                        // pass over the split's modality bytes tells) walks its tiles without the per-tile
                        // modality bookkeeping; 2: in a launch of its own where the layout has that instance
  MlaDecodeCombine combine = MlaDecodeCombine::kAuto;  // the combine kernel's layout (above)
  float scale = 1.f;   // softmax scale (1/sqrt(d_h) in METHOD.md §5)

  // Queries, float32 or bf16 (q_bf16) alike, at any element strides (the model passes views of one
  // product: no copies); the last dim of qa and qr is contiguous.
  const void* qa = nullptr;        // [n_mod, b, h_q, r_kv] absorbed queries (q_nope W_uk^(m)) per modality
  const void* qr = nullptr;        // [b, h_q, d_rope] rotated RoPE queries
  const void* qb = nullptr;        // [n_mod, b, h_q] k-bias terms (q_nope . b_k^(m)); null = 0
  int q_bf16 = 0;                  // 1: qa, qr and qb hold bf16 values, 0: float32
  int64_t qa_stride[3] = {0, 0, 0};  // elements between consecutive mod, b, h of qa
  int64_t qr_stride[2] = {0, 0};     // b, h of qr
  int64_t qb_stride[3] = {0, 0, 0};  // mod, b, h of qb
  const int32_t* start = nullptr;  // [b] first key position (0 <= start <= length)
  const int32_t* length = nullptr; // [b] one past the last key position (length <= t_cap)
  const uint8_t* modality = nullptr;  // [b, t_cap] 0 text, nonzero image; null when n_mod == 1

  // format == kBf16
  const uint16_t* latent = nullptr;  // [b, t_cap, r_kv] bf16
  const uint16_t* k_rope = nullptr;  // [b, t_cap, h_kv * d_rope] bf16, already rotated

  // format == kInt4: positions j < qlen = max(0, length - window) come from the quantized store,
  // positions j >= qlen from the bf16 ring (row j % window). Codes: element 2i in the low nibble of
  // byte i; x = code * scale + lo per group of `group_*` consecutive values of one token.
  int group_c = 0;                          // quantization group of the latent; divides r_kv
  int group_r = 0;                          // quantization group of the RoPE key; divides h_kv * d_rope
  int window = 0;                           // ring rows (0: everything is quantized)
  const uint8_t* latent_q = nullptr;        // [b, t_cap, r_kv / 2] int4 codes
  const uint16_t* latent_scale = nullptr;   // [b, t_cap, r_kv / group_c] float16
  const uint16_t* latent_lo = nullptr;      // [b, t_cap, r_kv / group_c] float16
  const uint8_t* k_rope_q = nullptr;        // [b, t_cap, h_kv * d_rope / 2] int4 codes
  const uint16_t* k_rope_scale = nullptr;   // [b, t_cap, h_kv * d_rope / group_r] float16
  const uint16_t* k_rope_lo = nullptr;      // [b, t_cap, h_kv * d_rope / group_r] float16
  const uint16_t* latent_win = nullptr;     // [b, window, r_kv] bf16 ring
  const uint16_t* k_rope_win = nullptr;     // [b, window, h_kv * d_rope] bf16 ring

  // outputs, float32 or bf16 (out_bf16), at any element strides (last dim of acc contiguous)
  void* acc = nullptr;   // [n_mod, b, h_q, r_kv]
  void* mass = nullptr;  // [n_mod, b, h_q]
  int out_bf16 = 0;
  int64_t acc_stride[3] = {0, 0, 0};   // mod, b, h
  int64_t mass_stride[3] = {0, 0, 0};  // mod, b, h

  // optional, the heads' outputs by the combine (MlaDecodePlan::combine_out): o [b, h_q, d_h] bf16, contiguous,
  // = [acc_0 | .. | acc_{n_mod-1} | mass_0 .. mass_{n_mod-1}] . w_out[kv head] with the accumulators and masses
  // normalized and rounded as acc/mass would hold them; w_out bf16 [h_kv, w_out_rows, d_h] contiguous, its first
  // n_mod * r_kv + n_mod rows used (each set's W_uv, then the sets' v-bias rows). Where the plan takes it, acc and
  // mass are left unwritten.
  const void* w_out = nullptr;
  void* o_out = nullptr;
  int d_h = 0;
  int w_out_rows = 0;

  // scratch for the split-KV partials (and the RoPE scores where the warp-rows kernel computes them apart:
  // MlaDecodePlan::rope_scores): at least mla_decode_workspace_floats(params) floats, 16-byte aligned
  float* workspace = nullptr;
  int64_t workspace_floats = 0;

  // the scores-first kernels: 1 lets the scores pass split the latent's columns over thread-block clusters where
  // its grid is under a wave (MlaDecodePlan::score_ks); 0 keeps one CTA a (token group, head block)
  int score_clusters = 1;
  // the scores-first kernels' values pass: warps a CTA, 8 (2 m-tiles x 4 parts of 64 columns; 0 takes it) or 16
  // (2 x 8 parts of 32: twice the warps, at most 128 registers a thread)
  int wide_warps = 0;
  // the warpgroup-MMA kernel (MlaDecodeVariant::kWgmma): consumer warpgroups a CTA, 2 or 3 (0: the plan's)
  int wgmma_consumers = 0;
  // ... and producer warpgroups, 1 or 2 (one a consumer), or -1: none (the consumers dequantize
  // their own tiles into the MMAs' A registers); 0: the plan's
  int wgmma_producers = 0;
};

}  // namespace vlm2mla
