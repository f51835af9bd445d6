// The closed list of supported architectures and the table that maps Hugging Face's
// `architectures` strings onto it.
#pragma once

#include <string>

namespace vlm2mla {

enum class ArchId {
  kLlama,      // LlamaForCausalLM: Llama-2 (MHA), Llama-3 (GQA, llama3 RoPE scaling), Vicuna
  kQwen2,      // Qwen2ForCausalLM: GQA, q/k/v bias, often tied embeddings
  kLlava,      // LlavaForConditionalGeneration: CLIP tower + 2-layer projector + Llama
  kLlavaNext,  // LlavaNextForConditionalGeneration: LLaVA with anyres tiling and image_newline
  kQwen2_5_VL, // Qwen2_5_VLForConditionalGeneration: Qwen ViT (window attention) + Qwen2 with M-RoPE
};

// True for the vision-language architectures.
bool is_vlm(ArchId arch);

const char* arch_name(ArchId arch);  // "llama", "qwen2"
const char* arch_hf_name(ArchId arch);  // "LlamaForCausalLM", ...

// Maps config.json's architectures[0] (and model_type as fallback when architectures is absent).
// Throws ArgumentError naming the string and listing the supported ones.
ArchId arch_from_hf(const std::string& architecture, const std::string& model_type,
                    const std::string& origin);

// Per-architecture facts that differ between the decoders (language-model architectures only).
struct ArchTraits {
  bool qkv_bias_default;     // q/k/v projections carry a bias unless config says otherwise
  double default_rope_theta;
  double default_rms_norm_eps;
  long default_max_position_embeddings;
};
ArchTraits arch_traits(ArchId arch);

}  // namespace vlm2mla
