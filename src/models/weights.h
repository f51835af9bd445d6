// The weights of a Llama/Qwen2 decoder, their Hugging Face names and shapes, and strict loading.
//
// One walk over the parameters (for_each_param) drives loading, casting, moving and counting: a
// tensor is declared once, with its checkpoint name and expected shape.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "io/tensor_store.h"
#include "models/text_config.h"
#include "nn/layers.h"

namespace vlm2mla {

// A low-rank K/V projection set of a converted layer (models/mla_config.h).
struct KvLatentWeights {
  LinearWeights kv_a_proj;  // [r_kv, d], no bias: x -> latent c
  LinearWeights kv_b_proj;  // [h_kv*(d_h-R) + h_kv*d_h, r_kv] (+bias): c -> [k_nope | v]
};

struct DecoderLayerWeights {
  at::Tensor input_layernorm;  // [d]
  LinearWeights q_proj, k_proj, v_proj, o_proj;  // converted: q_proj reordered, k_proj unused,
                                                 // v_proj only without low rank
  // Converted models only (models/mla_config.h):
  LinearWeights k_rope_proj;  // [h_kv*R, d]
  LinearWeights k_nope_proj;  // [h_kv*(d_h-R), d] (svd none)
  std::vector<KvLatentWeights> kv;  // low rank: one set, or (text, image) with md
  at::Tensor post_attention_layernorm;  // [d]
  LinearWeights gate_proj, up_proj, down_proj;
};

struct DecoderWeights {
  at::Tensor embed_tokens;  // [V, d]
  std::vector<DecoderLayerWeights> layers;
  at::Tensor norm;     // [d]
  at::Tensor lm_head;  // [V, d]; the embed_tokens tensor itself when embeddings are tied
};

// Where the decoder sits in a checkpoint's key space.
struct TextLayout {
  std::string decoder_prefix = "model.";  // + "embed_tokens.weight", "layers.N....", "norm.weight"
  std::string lm_head_prefix = "lm_head.";
};

// Finds the layout whose embed_tokens key the store holds: "model." (published *ForCausalLM),
// "language_model.model." (published LLaVA), "model.language_model." (transformers 5 VLMs).
// Throws FormatError naming the store when none matches.
TextLayout detect_text_layout(const io::TensorStore& store);

struct ParamRef {
  std::string name;            // full checkpoint key
  std::vector<int64_t> shape;  // expected shape
  at::Tensor* slot;
};

// Visits every parameter the config implies. With tied embeddings lm_head is not visited (it aliases
// embed_tokens). `weights.layers` must already have num_hidden_layers entries.
void for_each_param(const TextConfig& config, const TextLayout& layout, DecoderWeights& weights,
                    const std::function<void(const ParamRef&)>& fn);

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::Device(at::kCPU);
  // Keep the decoder layers in host memory; each visits `device` only while it runs (the rest of the
  // model lives on `device`). For converting models larger than device memory.
  bool layers_on_host = false;
  // Inference only (generate, bench, logits): TextDecoder stores each layer's projections of one input
  // as one tensor (fuse_layer_projections), so that they run as one GEMM. Never for conversion or
  // fine-tuning, which read single weights, rewrite them or want their gradients.
  bool fuse_projections = false;
};

// Inference only: the projections a layer runs on one input stored as adjacent row blocks of one
// tensor per group (nn/layers.h fuse_linears; the originals are released, the weights' bytes stay the
// same), so linear_group runs each group as one GEMM: q, k, v; gate, up; converted layers q, k_rope and
// then kv_a_proj of every set (low rank) or k_nope, v (svd none). Where only some members have a bias
// (the latent's kv_a_proj has none, q and k_rope do with qkv_bias) the unbiased ones get a zero bias in
// the group's bias tensor (r_kv elements per set: the only bytes added; exact) and the group stays one
// block. The zero biases are no checkpoint parameters: for_each_param (save, step_weight_bytes) does
// not visit them. Layers without tensors are left alone.
void fuse_layer_projections(DecoderLayerWeights& w);

// A layer's tensors (every defined one) on `device` (the same tensors when already there). Each is
// copied on its own: fused blocks arrive as separate tensors (linear_group runs them separately).
DecoderLayerWeights layer_to(const DecoderLayerWeights& w, at::Device device);

// One parameter, strictly: present, of the expected shape and a floating dtype (FormatError naming
// the key and both shapes otherwise); loaded into *ref.slot in the options' dtype and device, and
// its key added to `consumed`. Every model part (decoder, vision towers, projectors) loads this way.
void check_param(const io::TensorStore& store, const ParamRef& ref);
void load_param(const io::TensorStore& store, const ParamRef& ref, const LoadOptions& options,
                std::set<std::string>* consumed);

// Fills one parameter slot: from a checkpoint (load_param) or with random values. Every model part
// takes one, so checkpoints and random-weight benchmarks of real shapes share one walk.
using ParamFiller = std::function<void(const ParamRef&)>;
ParamFiller checkpoint_filler(const io::TensorStore& store, const LoadOptions& options,
                              std::set<std::string>* consumed);
// Norm weights 1, norm biases and biases 0, everything else N(0, 0.02); filled on the device.
ParamFiller random_filler(const LoadOptions& options, uint64_t seed);

// The decoder's parameters from a filler (lm_head aliases embed_tokens when tied).
DecoderWeights fill_decoder_weights(const TextConfig& config, const TextLayout& layout,
                                    const ParamFiller& fill);

// With tied embeddings some checkpoints still carry lm_head.weight; transformers ties it to the
// embedding, so it counts as consumed.
void consume_tied_head(const TextConfig& config, const TextLayout& layout,
                       const io::TensorStore& store, std::set<std::string>* consumed);

// Throws FormatError listing tensors of `store` that nobody consumed (ignoring the non-persistent
// buffers some old checkpoints carry, such as rotary_emb.inv_freq).
void check_all_consumed(const io::TensorStore& store, const std::set<std::string>& consumed,
                        const std::string& what);

// Random weights of the right shapes (benchmarks of real shapes without a checkpoint).
DecoderWeights random_decoder_weights(const TextConfig& config, const LoadOptions& options,
                                      uint64_t seed);

int64_t count_parameters(const TextConfig& config);

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace vlm2mla
