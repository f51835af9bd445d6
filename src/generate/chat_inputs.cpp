#include "generate/chat_inputs.h"

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "vision/image.h"
#include "vision/processor_config.h"
#include "vision/processors.h"
#include "vision/video.h"

namespace vlm2mla {

namespace {

ChatFamily family_for(const Model& model, const Tokenizer& tok) {
  const bool llama3_headers = tok.token_to_id("<|start_header_id|>").has_value();
  switch (model.arch()) {
    case ArchId::kLlava:
      return ChatFamily::kLlava15;
    case ArchId::kLlavaNext:  // the Llama-3 LLaVA-NeXT uses Llama-3 headers
      return llama3_headers ? ChatFamily::kLlavaNextLlama3 : ChatFamily::kLlava15;
    case ArchId::kQwen2_5_VL:
      return ChatFamily::kQwen2_5_VL;
    case ArchId::kLlama:
    case ArchId::kQwen2:
      if (tok.token_to_id("<|im_start|>")) return ChatFamily::kQwen2_5_VL;
      return llama3_headers ? ChatFamily::kLlavaNextLlama3 : ChatFamily::kLlava15;
  }
  return ChatFamily::kLlava15;
}

}  // namespace

ChatInputBuilder::ChatInputBuilder(const Model& model, std::string model_dir)
    : model_(&model),
      model_dir_(std::move(model_dir)),
      tokenizer_(std::make_shared<Tokenizer>(Tokenizer::load(model_dir_))),
      family_(family_for(model, *tokenizer_)) {}

ChatFormat ChatInputBuilder::format(const std::vector<ChatMessage>& messages,
                                    bool add_generation_prompt) const {
  const std::string bos = tokenizer_->bos_id() ? tokenizer_->id_to_token(*tokenizer_->bos_id()) : "";
  return render_chat(family_, messages, bos, add_generation_prompt);
}

ChatInputs ChatInputBuilder::chat(const std::vector<ChatMessage>& messages,
                                  const std::vector<std::string>& image_paths,
                                  bool add_generation_prompt, const std::vector<ChatVideo>& videos) const {
  const Model& model = *model_;
  const bool vlm = model.image_token_id() >= 0;
  int64_t placeholders = 0;
  for (const auto& m : messages) placeholders += m.images;
  VLM2MLA_CHECK(image_paths.empty() || vlm, ArgumentError, image_paths.size(), " image(s) given, but ",
                model.text_config().architecture, " is a text-only model");
  VLM2MLA_CHECK(placeholders == static_cast<int64_t>(image_paths.size()), ArgumentError, "the messages hold ",
                placeholders, " image(s) but ", image_paths.size(), " image file(s) were given");
  int64_t video_placeholders = 0;
  for (const auto& m : messages) video_placeholders += m.videos;
  VLM2MLA_CHECK((videos.empty() && video_placeholders == 0) || model.video_token_id() >= 0, ArgumentError,
                "videos given, but ", model.text_config().architecture, " takes no video input (only Qwen2.5-VL does)");
  VLM2MLA_CHECK(video_placeholders == static_cast<int64_t>(videos.size()), ArgumentError, "the messages hold ",
                video_placeholders, " video(s) but ", videos.size(), " video(s) were given");

  ChatInputs out;
  if (!image_paths.empty()) {
    if (!processor_) {
      processor_ = std::make_shared<vision::ProcessorConfig>(vision::load_processor_config(model_dir_));
    }
    std::vector<vision::Image> decoded;
    for (const auto& path : image_paths) decoded.push_back(vision::load_image(path));
    vision::ProcessedImages p = vision::preprocess(*processor_, decoded);
    out.inputs.pixel_values = p.pixel_values;
    out.inputs.image_sizes = p.image_sizes;
    out.inputs.image_grid_thw = p.image_grid_thw;
  }
  if (!videos.empty()) {
    if (!video_processor_) {
      video_processor_ = std::make_shared<vision::VideoProcessorConfig>(vision::load_video_processor_config(model_dir_));
    }
    std::vector<std::vector<vision::Image>> decoded;
    std::vector<double> fps;
    for (const ChatVideo& v : videos) {
      decoded.emplace_back();
      for (const auto& path : v.frames) decoded.back().push_back(vision::load_image(path));
      fps.push_back(v.fps > 0 ? v.fps : vision::kDefaultVideoFps);
    }
    vision::ProcessedVideos p = vision::preprocess_videos(*video_processor_, decoded, fps);
    out.inputs.pixel_values_videos = p.pixel_values_videos;
    out.inputs.video_grid_thw = p.video_grid_thw;
    out.inputs.second_per_grid_ts = p.second_per_grid_ts;
  }

  ChatFormat f = format(messages, add_generation_prompt);
  out.rendered = f.text;
  for (const auto& s : f.stop_tokens) {
    if (auto id = tokenizer_->token_to_id(s)) out.stop_ids.push_back(*id);
  }
  if (vlm) {
    auto placeholder = tokenizer_->token_to_id(f.image_token);
    VLM2MLA_CHECK(!placeholder || *placeholder == model.image_token_id(), FormatError, model_dir_,
                  ": the tokenizer's ", f.image_token, " is id ", placeholder.value_or(-1),
                  " but config.json's image token id is ", model.image_token_id());
  }
  const std::vector<int64_t> ids = tokenizer_->encode(f.text, f.add_special_tokens);
  at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);  // [1, s]
  out.inputs.input_ids = t;
  if (!image_paths.empty()) {  // one placeholder per image -> that image's tokens
    out.inputs.input_ids = expand_image_tokens(t, model.image_token_id(), model.image_token_counts(out.inputs));
  }
  if (!videos.empty()) {
    auto placeholder = tokenizer_->token_to_id(f.video_token);
    VLM2MLA_CHECK(placeholder && *placeholder == model.video_token_id(), FormatError, model_dir_,
                  ": the tokenizer's ", f.video_token, " is id ", placeholder.value_or(-1),
                  " but config.json's video token id is ", model.video_token_id());
    out.inputs.input_ids = expand_image_tokens(out.inputs.input_ids, model.video_token_id(),
                                               model.video_token_counts(out.inputs), "video");
  }
  return out;
}

ChatInputs ChatInputBuilder::raw(const std::string& text) const {
  ChatInputs out;
  out.rendered = text;
  out.inputs.input_ids = at::tensor(tokenizer_->encode(text, /*add_special_tokens=*/true), at::kLong).unsqueeze(0);
  return out;
}

}  // namespace vlm2mla
