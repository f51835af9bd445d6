#include "chat_inputs.h"

#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "vision/image.h"
#include "vision/processor_config.h"
#include "vision/processors.h"

namespace vlm2mla::cli {

ChatInputs build_chat_inputs(const Model& model, const std::string& model_dir,
                             const std::vector<std::string>& images, const std::string& prompt,
                             const std::string& system, bool raw) {
  ChatInputs out;
  auto tok = std::make_shared<Tokenizer>(Tokenizer::load(model_dir));
  out.tokenizer = tok;
  const bool vlm = model.image_token_id() >= 0;
  VLM2MLA_CHECK(images.empty() || vlm, ArgumentError, "--image given, but ",
                model.text_config().architecture, " is a text-only model");

  if (!images.empty()) {
    vision::ProcessorConfig pc = vision::load_processor_config(model_dir);
    std::vector<vision::Image> decoded;
    for (const auto& path : images) decoded.push_back(vision::load_image(path));
    vision::ProcessedImages p = vision::preprocess(pc, decoded);
    out.inputs.pixel_values = p.pixel_values;
    out.inputs.image_sizes = p.image_sizes;
    out.inputs.image_grid_thw = p.image_grid_thw;
  }

  std::vector<int64_t> ids;
  if (raw || !vlm) {
    VLM2MLA_CHECK(images.empty(), ArgumentError,
                  "--raw prompts cannot carry --image: the image placeholders come from the template");
    out.rendered = prompt;
    ids = tok->encode(prompt, /*add_special_tokens=*/true);
  } else {
    ChatFamily family = ChatFamily::kLlava15;
    switch (model.arch()) {
      case ArchId::kLlava:
        family = ChatFamily::kLlava15;
        break;
      case ArchId::kLlavaNext:  // the Llama-3 LLaVA-NeXT uses Llama-3 headers
        family = tok->token_to_id("<|start_header_id|>") ? ChatFamily::kLlavaNextLlama3 : ChatFamily::kLlava15;
        break;
      case ArchId::kQwen2_5_VL:
        family = ChatFamily::kQwen2_5_VL;
        break;
      case ArchId::kLlama:
      case ArchId::kQwen2:
        break;
    }
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system, 0});
    messages.push_back({"user", prompt, static_cast<int64_t>(images.size())});
    const std::string bos = tok->bos_id() ? tok->id_to_token(*tok->bos_id()) : "";
    ChatFormat f = render_chat(family, messages, bos);
    out.rendered = f.text;
    ids = tok->encode(f.text, f.add_special_tokens);
    for (const auto& s : f.stop_tokens) {
      if (auto id = tok->token_to_id(s)) out.stop_ids.push_back(*id);
    }
    auto placeholder = tok->token_to_id(f.image_token);
    VLM2MLA_CHECK(!placeholder || *placeholder == model.image_token_id(), FormatError, model_dir,
                  ": the tokenizer's ", f.image_token, " is id ", placeholder.value_or(-1),
                  " but config.json's image token id is ", model.image_token_id());
  }
  at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
  out.inputs.input_ids = vlm && !images.empty()
                             ? expand_image_tokens(t, model.image_token_id(), model.image_token_counts(out.inputs))
                             : t;
  return out;
}

}  // namespace vlm2mla::cli
