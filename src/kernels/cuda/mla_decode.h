// The CUDA absorbed-MLA decode kernel (params.h says what it computes). No libtorch here: ops.cpp
// validates tensors and fills MlaDecodeParams; this layer validates the plain sizes again (ArgumentError)
// and checks every CUDA call and launch (Error naming the call).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "kernels/params.h"

namespace vlm2mla {

// How a call is split; exposed for tests and the benchmark.
struct MlaDecodePlan {
  bool tensor_core = false;   // false: the generic kernel
  bool warp_rows = false;     // tensor core: the warp-rows kernel (else the split-keys one, or the wide ones)
  bool wide = false;          // tensor core: the scores-first kernels for wide latents (params.h, kWide): RoPE
                              // scores, scores, then values per column block (rope_scores is set too)
  bool wide_cluster = false;  // wide: their one-pass twin (kWideCluster): RoPE scores, then the values kernel in
                              // clusters of the column blocks, which compute the scores themselves
  int wgmma_consumers = 0;     // wgmma: its consumer warpgroups (2 or 3)
  int wgmma_producers = 0;     // wgmma: its producer warpgroups (1, or 2: one a consumer; 0: none, register A)
  bool wgmma = false;          // tensor core: the warpgroup-MMA kernel over int4 stores (MlaDecodeVariant::kWgmma), a
                              // CTA a (split, modality, sequence) as the modality CTAs (modality_ctas set for two sets)
  bool modality_ctas = false;  // warp rows, two sets: each CTA holds one modality's rows (the partials' splits
                               // are (split, modality) pairs)
  bool pure_launch = false;    // modality CTAs: the pure splits (keys of the CTA's modality only) attended by an
                               // instance of their own in a launch before the main kernel's (params.h's
                               // pure_splits 2), whose CTAs then leave them
  bool image_first = false;    // modality CTAs over keys holding an image (params.h's image_first), the text
                               // CTAs in one wave: the grid (split, head block, 2 b), every image CTA before the
                               // text ones, no split cap
  int specialized = 0;         // warp rows: which instance built for these sizes was taken (params.h's
                               // `specialized`: 1, 2 its grouped-rows twin), 0 the generic one
  std::string why_generic;    // when !tensor_core: the first condition that failed
  int m_tiles = 0;            // tensor core: 16-row MMA tiles per CTA (heads per CTA = m_tiles * 16 / n_mod)
  int n_tiles_per_warp = 0;   // tensor core: 8-column output tiles per warp (warp rows: O's n-tiles per warp)
  int column_splits = 1;      // warp rows: warps sharing a row block's O columns (2 for r_kv > 256, which add
                              // their partial scores), each holding r_kv / column_splits of them
  bool rope_scores = false;   // warp rows (bf16 and int4): the RoPE scores computed by a kernel of their own (a
                              // RoPE key too wide for the tiles, as MHA models'), the tiles holding the latent alone
  int head_blocks = 0;        // CTAs across the heads of one sequence
  int splits = 0;             // split-KV CTAs over the main store (bf16 cache / int4 store)
  int ring_splits = 0;        // int4: CTAs over the bf16 ring (0 or 1)
  int tiles_per_split = 0;    // 64-token tiles per split (the last split takes what is left)
  int bound_segments = 0;     // modality CTAs: > 0 where the splits follow that many segments a sequence
                              // (params.h's split_bounds), chunks of at most tiles_per_split tiles
  int64_t smem_bytes = 0;     // dynamic shared memory per CTA
  int ctas_per_sm = 0;        // occupancy of the main kernel
  int64_t workspace_floats = 0;
  bool warp_combine = false;  // the combine kernel takes one warp a (sequence, head) (params.h, MlaDecodeCombine)
  int combine_chunks = 1;      // the block combine's CTAs a (sequence, head): column chunks (small batches, wide r_kv)
  bool combine_out = false;    // the block combine also takes the output product (params.o_out given, one chunk a
                               // pair, w_out's rows in shared memory): o written, acc and mass not
  std::string why_not_combine_out;  // params.o_out given and !combine_out: why not
  int score_ks = 1;            // the scores-first kernels' scores pass: CTAs a cluster over the latent's columns
  int wide_warps = 0;          // the scores-first kernels' values pass: warps a CTA (8 or 16)
};

MlaDecodePlan plan_mla_decode(const MlaDecodeParams& params, MlaDecodeVariant variant = MlaDecodeVariant::kAuto);
int64_t mla_decode_workspace_floats(const MlaDecodeParams& params,
                                    MlaDecodeVariant variant = MlaDecodeVariant::kAuto);

// Enqueues the decode on `stream`: the split kernel(s), then the combine kernel. params.workspace must
// hold mla_decode_workspace_floats(params, variant) floats. Throws ArgumentError for invalid sizes and
// Error when a CUDA call or launch fails.
void launch_mla_decode(const MlaDecodeParams& params, cudaStream_t stream,
                       MlaDecodeVariant variant = MlaDecodeVariant::kAuto);

}  // namespace vlm2mla
