// The chat templates of the supported vision-language families, as the strings their Hugging Face
// chat templates render, for a prompt (add_generation_prompt=True) or a whole conversation with its
// assistant turns (add_generation_prompt=False). The Hub's tokenizer_config.json carries them
// as Jinja; we render the known families natively instead of evaluating Jinja. Provenance: LLaVA-1.5
// and Qwen2-VL/Qwen2.5-VL were checked against their published Jinja strings (as quoted in public
// code); llama3-llava-next follows the Llama-3 pattern (`trim`, `<|eot_id|>`) with llava-hf's
// images-first rendering, not yet checked against that repository's file.
#pragma once

#include <string>
#include <vector>

namespace vlm2mla {

enum class ChatFamily {
  kLlava15,         // llava-hf/llava-1.5-*: "USER: <image>\n{text} ASSISTANT:"
  kLlavaNextLlama3, // llava-hf/llama3-llava-next-8b-hf: Llama-3 headers, "<image>\n" before text
  kQwen2_5_VL,      // Qwen/Qwen2.5-VL-*: ChatML with <|vision_start|><|image_pad|><|vision_end|>
};
const char* chat_family_name(ChatFamily family);

struct ChatMessage {
  std::string role;     // "system", "user", "assistant"
  std::string text;
  int64_t images = 0;   // images attached to this message (rendered before its text)
  // Where in `text` each image sits (byte offsets, ascending; one per image), for families whose
  // template renders content items in order (Qwen2.5-VL). Empty: every image before the text. The
  // LLaVA templates always put a message's images first, so they ignore it.
  std::vector<size_t> image_at;
  // Videos attached to this message (Qwen2.5-VL: <|vision_start|><|video_pad|><|vision_end|> each,
  // before the text: after the message's images when image_at is empty, else before them). The
  // LLaVA templates have no videos and ignore it.
  int64_t videos = 0;
};

struct ChatFormat {
  std::string text;                     // the rendered prompt
  bool add_special_tokens = false;      // encode with the tokenizer's BOS (LLaVA-1.5's processor does)
  std::string image_token;              // the one placeholder per image to expand after encoding
  std::string video_token;              // the same per video (Qwen2.5-VL), else empty
  std::vector<std::string> stop_tokens; // besides the model's eos ids
};

// Renders `messages` (any number of system, user and assistant turns, in order) as the family's
// Jinja template does, with the generation prompt (the assistant header: "ASSISTANT:",
// "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|im_start|>assistant\n") appended when
// add_generation_prompt. `bos_token` is used by templates that write it themselves (Llama-3).
// ArgumentError for a role other than system, user or assistant.
ChatFormat render_chat(ChatFamily family, const std::vector<ChatMessage>& messages,
                       const std::string& bos_token, bool add_generation_prompt = true);

}  // namespace vlm2mla
