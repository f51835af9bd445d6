// Weight surgery for partial RoPE (METHOD.md section 3, "Weight surgery"): from an original layer to
// the stage-1 converted layer (svd none), and the stacked [W_kc; W_v] the low-rank step factorises.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "convert/rope_ranks.h"
#include "models/text_config.h"
#include "models/weights.h"

namespace vlm2mla::convert {

// [layer][kv head] -> the ascending pair indices kept (rank < r).
std::vector<std::vector<std::vector<int64_t>>> kept_pair_lists(const RopeRanks& ranks, int64_t r);

// int64 [d_h]: a kv head's dims in converted order: the kept dims in rotate_half order (first halves
// of the kept pairs, then their second halves), then the other dims ascending.
at::Tensor head_permutation(const std::vector<int64_t>& kept_pairs, int64_t head_dim);

// The stage-1 layer: q_proj rows reordered per head (query heads take their group's order),
// k_rope_proj = the kept rows of k_proj, k_nope_proj = the others, v_proj unchanged; biases follow
// their rows. `config` is the original model's; `kept` [kv head] -> pairs.
DecoderLayerWeights partial_rope_layer(const TextConfig& config, const DecoderLayerWeights& w,
                                       const std::vector<std::vector<int64_t>>& kept);

// [W_kc; W_v] of a stage-1 layer: [h_kv*(d_h-R) + h_kv*d_h, d], and its bias (undefined without).
at::Tensor stacked_kv_weight(const DecoderLayerWeights& stage1);
at::Tensor stacked_kv_bias(const DecoderLayerWeights& stage1);

}  // namespace vlm2mla::convert
