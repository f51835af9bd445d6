// The `mla` block of a converted model's config.json (METHOD.md sections 3-4): which RoPE pairs each
// (layer, kv head) keeps, and how K and V are projected (full, or through a low-rank latent, one or
// two projection sets per layer).
//
//   "mla": {
//     "format_version": 1,
//     "qk_rope_head_dim": R,                      // rope dims kept per head (2 x kept pairs)
//     "kept_pairs": [[[k, ...] per kv head] per layer],   // ascending pair indices, R/2 each
//     "rope_strategy": "mkl",                     // informational (how the pairs were chosen)
//     "svd": "none" | "joint" | "split" | "whitened" | "md",
//     "kv_lora_rank": [r_kv per layer],           // absent for "none"
//     "modality_split": false | true,             // true for md: text and image projection sets
//     "visual_token_ids": [ids]                   // tokens that use the image set (md)
//   }
//
// Tensors of a converted layer (under the checkpoint's decoder prefix, "layers.N.self_attn."):
//   q_proj        [h_q*d_h, d] (+bias): each head's rows reordered to [kept dims | other dims], the kept
//                 dims being pair k's first halves then second halves (a rotate_half layout of R dims)
//   k_rope_proj   [h_kv*R, d] (+bias): the kept rows of k_proj, same order
//   svd none:     k_nope_proj [h_kv*(d_h-R), d] (+bias), v_proj [h_kv*d_h, d] (+bias)
//   low rank:     kv_a_proj [r_kv, d] (no bias) and kv_b_proj [h_kv*(d_h-R) + h_kv*d_h, r_kv] (+bias:
//                 the nope part of b_k, then b_v); rows of kv_b_proj: all heads' k-nope rows (head
//                 major), then all heads' v rows. md: kv_a_proj_text, kv_b_proj_text, kv_a_proj_image,
//                 kv_b_proj_image. split SVD is stored in this form (kv_b_proj block-diagonal).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace vlm2mla {

enum class SvdMethod { kNone, kJoint, kSplit, kWhitened, kMd };
const char* svd_method_name(SvdMethod method);
// ArgumentError naming `what` and the valid names for an unknown one.
SvdMethod svd_method_from_name(const std::string& name, const std::string& what);

struct MlaConfig {
  int64_t qk_rope_head_dim = 0;  // R
  // [layer][kv head] -> ascending kept pair indices (R/2 of them)
  std::vector<std::vector<std::vector<int64_t>>> kept_pairs;
  std::string rope_strategy;
  SvdMethod svd = SvdMethod::kNone;
  std::vector<int64_t> kv_lora_rank;  // per layer; empty for kNone
  bool modality_split = false;        // two projection sets (text, image) per layer
  std::vector<int64_t> visual_token_ids;

  bool low_rank() const { return svd != SvdMethod::kNone; }
  int64_t kv_sets() const { return modality_split ? 2 : 1; }  // index 0 text, 1 image
  int64_t qk_nope_head_dim(int64_t head_dim) const { return head_dim - qk_rope_head_dim; }
};

// Parses and checks the block against the model's dimensions; FormatError naming `origin` and the key.
MlaConfig parse_mla_config(const nlohmann::json& block, const std::string& origin, int64_t layers,
                           int64_t n_kv, int64_t head_dim, int64_t hidden_size);
nlohmann::json mla_config_to_json(const MlaConfig& mla);

// Cached values per token, summed over layers: original (mla null) 2*h_kv*d_h per layer; converted
// low rank r_kv + h_kv*R per layer (the latent and the RoPE key); converted without low rank, the
// full K and V again. The modality bit of md is not counted here.
int64_t kv_values_per_token(const MlaConfig* mla, int64_t layers, int64_t n_kv, int64_t head_dim);

}  // namespace vlm2mla
