#include "arch/arch.h"

#include "core/error.h"

namespace vlm2mla {

namespace {
struct ArchEntry {
  const char* hf_name;
  const char* model_type;
  ArchId id;
};
// The architecture table: HF class names and model_type strings.
constexpr ArchEntry kArchTable[] = {
    {"LlamaForCausalLM", "llama", ArchId::kLlama},
    {"Qwen2ForCausalLM", "qwen2", ArchId::kQwen2},
    {"LlavaForConditionalGeneration", "llava", ArchId::kLlava},
    {"LlavaNextForConditionalGeneration", "llava_next", ArchId::kLlavaNext},
    {"Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", ArchId::kQwen2_5_VL},
};
}  // namespace

const char* arch_name(ArchId arch) {
  for (const auto& e : kArchTable) {
    if (e.id == arch) return e.model_type;
  }
  return "?";
}

const char* arch_hf_name(ArchId arch) {
  for (const auto& e : kArchTable) {
    if (e.id == arch) return e.hf_name;
  }
  return "?";
}

bool is_vlm(ArchId arch) {
  switch (arch) {
    case ArchId::kLlama:
    case ArchId::kQwen2:
      return false;
    case ArchId::kLlava:
    case ArchId::kLlavaNext:
    case ArchId::kQwen2_5_VL:
      return true;
  }
  return false;
}

ArchId arch_from_hf(const std::string& architecture, const std::string& model_type,
                    const std::string& origin) {
  for (const auto& e : kArchTable) {
    if (!architecture.empty() ? architecture == e.hf_name : model_type == e.model_type) return e.id;
  }
  std::string supported;
  for (const auto& e : kArchTable) supported += std::string(supported.empty() ? "" : ", ") + e.hf_name;
  throw ArgumentError(detail::concat(
      origin, ": unsupported architecture '", architecture.empty() ? model_type : architecture,
      "' (supported: ", supported, ")"));
}

ArchTraits arch_traits(ArchId arch) {
  switch (arch) {
    case ArchId::kLlama: return {false, 10000.0, 1e-6, 2048};
    case ArchId::kQwen2: return {true, 10000.0, 1e-6, 32768};
    case ArchId::kLlava:
    case ArchId::kLlavaNext:
    case ArchId::kQwen2_5_VL:
      break;
  }
  throw ArgumentError(detail::concat("arch_traits: ", arch_name(arch),
                                     " is not a language-model architecture"));
}

}  // namespace vlm2mla
