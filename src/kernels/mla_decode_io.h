// The tensors of an absorbed-MLA decode call (params.h says what it computes), shared by the CPU
// reference (ref/mla_decode_ref.h) and the dispatcher (ops.h), and their host-side validation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "kernels/params.h"
#include "kvcache/quant.h"

namespace vlm2mla {

struct MlaDecodeInputs {
  MlaCacheFormat format = MlaCacheFormat::kBf16;
  // Queries, any float dtype and strides. The CUDA kernel reads them in place when qa, qr (and qb) are all
  // float32 or all bf16 and qa's and qr's last dims are contiguous (views of one product: no copies), else
  // from float32 copies; its products use them rounded to bf16 (qb stays float32).
  at::Tensor qa;        // [n_mod, b, h_q, r_kv] absorbed queries
  at::Tensor qr;        // [b, h_q, d_rope] rotated RoPE queries
  at::Tensor qb;        // [n_mod, b, h_q] k-bias terms, or undefined for none
  at::Tensor start;     // int32/int64 [b] first key position, or undefined for 0
  at::Tensor length;    // int32/int64 [b] one past the last key position (<= t_cap)
  at::Tensor modality;  // uint8/bool [b, t_cap] (0 text, else image); needed when n_mod == 2, ignored otherwise
  double scale = 1.0;   // softmax scale

  // format kBf16 (contiguous; not copied)
  at::Tensor latent;  // bf16 [b, t_cap, r_kv]
  at::Tensor k_rope;  // bf16 [b, t_cap, h_kv * d_rope]

  // format kInt4 (kvcache/quant.h, 4 bits; contiguous): positions < length - window quantized, the rest
  // in the bf16 ring (row = position % window)
  QuantizedRows latent_q;  // data uint8 [b, t_cap, r_kv / 2], scale/lo float16 [b, t_cap, r_kv / group_c]
  QuantizedRows k_rope_q;  // data uint8 [b, t_cap, h_kv * d_rope / 2], scale/lo float16 [.., / group_r]
  int64_t window = 0;      // ring rows
  at::Tensor latent_win;   // bf16 [b, window, r_kv]
  at::Tensor k_rope_win;   // bf16 [b, window, h_kv * d_rope]

  // CUDA only: an upper bound on length - start (sizes the split-KV grid; keys beyond it are still
  // read, only the balance suffers). -1: copy start/length to the host once (a sync) and check them.
  int64_t max_length = -1;
  MlaDecodeVariant variant = MlaDecodeVariant::kAuto;  // CUDA only: which kernel
  // CUDA only, tensor-core kernels: the fewest 64-token tiles a split CTA takes (fewer splits: fewer
  // partials to write and combine, less parallelism); 0: the plan's default (kMinTilesPerSplit).
  int64_t min_tiles_per_split = 0;
  // CUDA only, tensor-core kernels: the most 64-token tiles a split CTA takes (more splits than the card's CTA
  // slots ask for); wins over min_tiles_per_split; 0: the plan's own (below).
  int64_t max_tiles_per_split = 0;
  // CUDA only, two sets: whether some sequence's keys hold an image (a hint: the results do not depend on it).
  // Where the plan takes the warp-rows kernel's modality CTAs: the image CTAs first (image_first, below), or else
  // splits of at most kMaxTilesPerSplitImage tiles unless max_tiles_per_split says otherwise: at large batches one
  // split a sequence is otherwise the whole context, and a sequence's two CTAs, one short (its image), one long
  // (its text), interleaved, no longer fit one wave (docs/KERNELS.md, "Shorter splits where a context holds an
  // image"). Model steps: the latent cache's holds_image().
  bool holds_image = false;
  // CUDA only, with holds_image, the modality CTAs, where the plan's own splits put every text CTA in one wave of
  // the card's CTA slots, or where the splits follow split_bounds (no text split mixed, whatever the waves; session
  // 22: int4 b = 768 133.7 -> 126.2 ms a step with an image): every sequence's image CTAs dispatched before any
  // text CTA (the grid's z: the image CTAs' sequences, then the text CTAs'), in those splits (no cap): the short image CTAs pass through the slots first,
  // then the text CTAs take them as in a text-only context. More CTAs than a wave (int4 at b = 768) keep the two
  // side by side, capped (measured: image first 18% slower there). The same partials for the same splits, so the
  // same results bit for bit (test: ImageFirstEqualsTheInterleaved). false: side by side and capped wherever
  // (model steps: VLM2MLA_DECODE_IMAGE_FIRST=0, model_decode_image_first()).
  bool image_first = true;
  // CUDA only, two sets, optional: each sequence's segments of keys of one kind, int32 [b, K + 1] on the inputs'
  // device, 1 <= K <= 16 (the latent cache's modality_segments, kvcache/modality_segments.h): where the plan takes
  // the modality CTAs their splits follow them, so that an image leaves only the tiles on its edges in mixed
  // splits; else ignored (and holds_image's cap taken). Any content gives the same keys: a hint for the plan.
  at::Tensor split_bounds;
  // CUDA only, two sets, optional: per sequence, a position from which every key is text, int32 [b] on the inputs'
  // device (the latent cache's image_end: one past its last image position, 0 for none). The modality CTAs then
  // read the modality bytes below it only, to find which splits are pure (a text-only context: none). Unlike the
  // hints above, the results depend on it: it must bound the image positions (model steps:
  // VLM2MLA_DECODE_IMAGE_END=0 leaves it out, model_decode_image_end()).
  at::Tensor image_end;
  // CUDA only, warp-rows kernel: take the instance built for r_kv 128, h_kv * d_rope 128 and d_rope 32 where
  // the sizes are those and there is one (params.h); the same arithmetic as the generic instance, bit for bit,
  // 6-15% faster (docs/KERNELS.md). false: the generic instance (model steps: VLM2MLA_DECODE_SPECIALIZED=0,
  // model_decode_specialized()).
  bool specialized = true;
  // CUDA only, with `specialized` taken and 7 query heads per kv group (Qwen2.5-VL-7B): its grouped-rows twin
  // (bf16 and int4 caches; not the int4 joint layout, which keeps its masked instance): each kv group's heads in
  // 8 rows (one padding row), so that an m-tile's 16 rows are two whole groups and its RoPE product spans two
  // groups, not three; and tiles whose 64 tokens are all valid and of the CTA's (or warp's) modality skip the
  // per-token masks. Bit for bit the same results (test: GroupedRowsEqualTheMasked), 4-12% faster at b >= 8 over
  // bf16, 3-8% over int4 (docs/KERNELS.md). false: the masked instance (model steps:
  // VLM2MLA_DECODE_GROUPED_ROWS=0, model_decode_grouped_rows()).
  bool grouped_rows = true;
  // CUDA only, the warp-rows kernel's modality CTAs (two-set models): a CTA whose split holds keys of its own
  // modality only (one pass over the split's modality bytes tells, however long the split) walks every tile in
  // order without the per-tile modality bookkeeping (finding the next tile of its modality, fetching and
  // counting each tile's modality bytes); over bf16 in a loop of its own with the one-set kernel's tile. The
  // same tiles and scores, so the same results bit for bit (test: PureSplitsEqualTheScanned). Measured on the
  // H200 (docs/KERNELS.md, "Pure splits in a loop of their own"). false: every CTA keeps the bookkeeping (model
  // steps: VLM2MLA_DECODE_PURE_SPLITS=0, model_decode_pure_splits()).
  bool pure_splits = true;
  // CUDA only, with pure_splits: the pure splits attended by an instance of their own (the pure walk alone, in the
  // registers of the one-set kernel), launched before the main kernel, whose CTAs then leave them; where such an
  // instance exists (the warp-rows layouts without column splits or external RoPE scores). Same tiles and scores:
  // the same results bit for bit (test: PureSplitsEqualTheScanned). false: one launch (model steps:
  // VLM2MLA_DECODE_PURE_LAUNCH=0, model_decode_pure_launch()).
  bool pure_launch = true;
  // CUDA only: the combine kernel's layout (params.h's MlaDecodeCombine; the same sums per split, in another
  // order, so results within rounding of each other: test WarpCombineMatchesBlockCombine). Model steps:
  // VLM2MLA_DECODE_COMBINE=auto|block|columns|warp (model_decode_combine()).
  MlaDecodeCombine combine = MlaDecodeCombine::kAuto;
  // CUDA only, the scores-first kernels (r_kv > 512): where the scores pass's grid is under a wave (one sequence of
  // a few thousand keys), split the latent's columns over clusters of 2-8 CTAs whose products are summed through
  // distributed shared memory (sm_90; test WideMatchesTheReference). false: one CTA a token group (model steps:
  // VLM2MLA_DECODE_SCORE_CLUSTERS=0, model_decode_score_clusters()).
  bool score_clusters = true;
  // CUDA only, the scores-first kernels: the values pass's warps a CTA, 0 (the plan's: 8), 8 or 16 (twice the warps
  // to hide latency, each on 32 columns; test WideMatchesTheReference). Model steps: VLM2MLA_DECODE_WIDE_WARPS
  // (model_decode_wide_warps()).
  int64_t wide_warps = 0;
  // CUDA only, the warpgroup-MMA kernel (variant kWgmma): its consumer warpgroups, 0 (the plan's), 2 or 3 (test
  // WgmmaMatchesTheReference). Model steps: VLM2MLA_DECODE_WGMMA_CONSUMERS (model_decode_wgmma_consumers()).
  int64_t wgmma_consumers = 0;
  // ... and its producer warpgroups, 0 (the plan's), 1 (the consumers take its tiles in turn), 2 (one a consumer,
  // with 2 consumers) or -1: none (2 consumers that dequantize their own tiles into the MMAs' A registers). Model
  // steps: VLM2MLA_DECODE_WGMMA_PRODUCERS (model_decode_wgmma_producers(); "none" for -1).
  int64_t wgmma_producers = 0;

  // Optional destinations (both or neither): float32 or bf16 (one dtype), any strides with acc_out's last
  // dim contiguous, e.g. views of the buffer the output projection reads. mla_decode writes the results
  // there (rounded to bf16 once, from float32) and returns them; undefined: new float32 tensors.
  at::Tensor acc_out;   // [n_mod, b, h_q, r_kv]
  at::Tensor mass_out;  // [n_mod, b, h_q]

  // Optional, CUDA (both or neither): the heads' outputs o = [acc_0 | .. | mass_0 ..] . w_out[kv head], the output
  // product a model takes after the decode (mla_attention's kv_head_product over the buffer acc_out and mass_out
  // view, its twin), computed by the combine kernel where its plan allows (small batches: MlaDecodePlan::
  // combine_out; one launch fewer). The accumulators and masses enter the product normalized and rounded as
  // acc_out/mass_out would hold them; float32 sums, rounded to bf16 once. w_out: bf16 [h_kv, n, d_h] contiguous,
  // n >= n_mod * r_kv + n_mod (each set's W_uv [r_kv, d_h], then the sets' v-bias rows; rows past them unread);
  // o_out: bf16 [b, h_q, d_h] contiguous. Where the combine writes o, MlaDecodeOutput::o is o_out and acc_out and
  // mass_out are left unwritten; elsewhere (CPU, large batches, wide latents) o is undefined and the caller takes
  // the product from acc and mass.
  at::Tensor w_out;
  at::Tensor o_out;
};

struct MlaDecodeOutput {
  at::Tensor acc;   // [n_mod, b, h_q, r_kv]: sum_{j: m_j = m} p_j c_j (float32, or acc_out)
  at::Tensor mass;  // [n_mod, b, h_q]: sum_{j: m_j = m} p_j (float32, or mass_out)
  at::Tensor o;     // o_out where the combine wrote the heads' outputs (MlaDecodeInputs::w_out), else undefined
};

// Sizes read off the tensors.
struct MlaDecodeShape {
  int64_t n_mod = 0, b = 0, h_q = 0, h_kv = 0, r_kv = 0, d_rope = 0, t_cap = 0;
  int64_t group_c = 0, group_r = 0;  // int4 only
  at::Device device = at::kCPU;
};

// Every shape, dtype, device and contiguity, with an ArgumentError naming the tensor, the expected and
// the actual shape. Does not look at the values of start/length (see check_mla_decode_ranges).
MlaDecodeShape check_mla_decode_inputs(const MlaDecodeInputs& in);

// 0 <= start <= length <= t_cap for every sequence (reads the values: a device sync for CUDA tensors);
// returns max(length - start).
int64_t check_mla_decode_ranges(const MlaDecodeInputs& in, const MlaDecodeShape& shape);

}  // namespace vlm2mla
