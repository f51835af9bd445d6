// The query, key and value heads of a converted (MLA) layer, expanded: partial RoPE on the kept
// dims, the NoPE key and the value rebuilt from the latent (or projected directly for svd none).
// This is the reference form of MLA attention (the absorbed form must equal it); see
// models/mla_config.h for the tensors and METHOD.md sections 3-5 for the method.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "models/text_config.h"
#include "models/weights.h"
#include "nn/rope.h"

namespace vlm2mla {

// int64 [h_kv * R]: per kv head, the head_dim indices of its kept pairs in the rotate_half order of
// an R-dim vector (first halves k_1..k_r, then second halves k_1 + d_h/2 .. k_r + d_h/2).
at::Tensor mla_rope_dims(const std::vector<std::vector<int64_t>>& kept_pairs, int64_t head_dim);

struct QkvHeads {
  at::Tensor q_pre;  // [b, h_q, s, d_h] before RoPE (converted layout: [rope R | nope])
  at::Tensor k_pre;  // [b, h_kv, s, d_h]
  at::Tensor q;      // [b, h_q, s, d_h] after RoPE
  at::Tensor k;      // [b, h_kv, s, d_h]
  at::Tensor v;      // [b, h_kv, s, d_h]
};

// h [b, s, d] (the input_layernorm output); cs the full-width cos/sin [b, s, d_h]; rope_dims from
// mla_rope_dims for this layer; image [b, s] bool selects the image projection set of an md layer
// (ignored otherwise; undefined = all text).
QkvHeads mla_qkv_expanded(const TextConfig& config, const DecoderLayerWeights& w,
                          const at::Tensor& rope_dims, const at::Tensor& h, const RopeCosSin& cs,
                          const at::Tensor& image);

// The latent c of each token, [b, s, r_kv]: kv_a_proj of its modality's set.
at::Tensor mla_latent(const MlaConfig& mla, const DecoderLayerWeights& w, const at::Tensor& h,
                      const at::Tensor& image);

// Bool [b, s]: input_ids among the visual token ids (the md image set); all false without ids.
at::Tensor visual_token_mask(const std::vector<int64_t>& visual_token_ids, const at::Tensor& input_ids);

}  // namespace vlm2mla
