#include "tokenizer/chat_template.h"

#include "core/error.h"

namespace vlm2mla {

const char* chat_family_name(ChatFamily family) {
  switch (family) {
    case ChatFamily::kLlava15: return "llava-1.5";
    case ChatFamily::kLlavaNextLlama3: return "llava-next-llama3";
    case ChatFamily::kQwen2_5_VL: return "qwen2.5-vl";
  }
  return "?";
}

namespace {

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// Jinja's `trim`: strip leading and trailing whitespace.
std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

std::string repeat(const std::string& s, int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

ChatFormat render_chat(ChatFamily family, const std::vector<ChatMessage>& messages,
                       const std::string& bos_token, bool add_generation_prompt) {
  for (const auto& m : messages) {
    VLM2MLA_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant", ArgumentError,
                  "chat: unknown role '", m.role, "' (expected system, user or assistant)");
  }
  ChatFormat f;
  switch (family) {
    case ChatFamily::kLlava15:
      // Per message: "ROLE: " (not for system), "<image>\n" per image, each text + " ".
      for (const auto& m : messages) {
        if (m.role != "system") f.text += upper(m.role) + ": ";
        f.text += repeat("<image>\n", m.images);
        f.text += m.text + " ";  // assistant turns too (inside {% generation %})
      }
      if (add_generation_prompt) f.text += "ASSISTANT:";
      f.add_special_tokens = true;  // the processor's tokenizer call adds <s>
      f.image_token = "<image>";
      break;
    case ChatFamily::kLlavaNextLlama3:
      if (!messages.empty()) f.text = bos_token;  // `{% if loop.index0 == 0 %}{{ bos_token }}`
      for (const auto& m : messages) {
        f.text += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        f.text += repeat("<image>\n", m.images);
        f.text += trim(m.text) + "<|eot_id|>";
      }
      if (add_generation_prompt) f.text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      f.image_token = "<image>";
      f.stop_tokens = {"<|eot_id|>"};
      break;
    case ChatFamily::kQwen2_5_VL:
      // `loop.first and message['role'] != 'system'`: no default system message without messages.
      if (!messages.empty() && messages.front().role != "system") {
        f.text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
      }
      for (const auto& m : messages) {
        const std::string vision = "<|vision_start|><|image_pad|><|vision_end|>";
        const std::string video = "<|vision_start|><|video_pad|><|vision_end|>";
        f.text += "<|im_start|>" + m.role + "\n";
        if (m.image_at.empty()) {
          f.text += repeat(vision, m.images) + repeat(video, m.videos) + m.text;
        } else {  // content items in order: text up to each image, the image, ...
          size_t from = 0;
          f.text += repeat(video, m.videos);
          for (size_t at : m.image_at) {
            f.text += m.text.substr(from, at - from) + vision;
            from = at;
          }
          f.text += m.text.substr(from);
        }
        f.text += "<|im_end|>\n";
      }
      if (add_generation_prompt) f.text += "<|im_start|>assistant\n";
      f.image_token = "<|image_pad|>";
      f.video_token = "<|video_pad|>";
      f.stop_tokens = {"<|im_end|>", "<|endoftext|>"};
      break;
  }
  return f;
}

}  // namespace vlm2mla
