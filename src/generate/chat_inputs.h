// From chat messages and image files to the inputs of one forward: the model family's chat
// template, the model directory's tokenizer, its image processor (preprocessor_config.json), and
// the expansion of each image placeholder into that image's tokens, as the Hugging Face processors
// do. One implementation for `generate --prompt` and for calibration datasets (convert/calib_data).
// Compiled only with the tokenizers (VLM2MLA_TOKENIZER=ON, which defines VLM2MLA_WITH_TOKENIZER).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "tokenizer/chat_template.h"

namespace vlm2mla {

class Tokenizer;
namespace vision {
struct ProcessorConfig;
struct VideoProcessorConfig;
}

// A video given as its frames, already sampled (image files, in order), and their frame rate
// (0: the processor's default, vision::kDefaultVideoFps).
struct ChatVideo {
  std::vector<std::string> frames;
  double fps = 0;
};

struct ChatInputs {
  ModelInputs inputs;             // input_ids [1, s] (image placeholders expanded), the images' tensors
  std::vector<int64_t> stop_ids;  // the template's stop tokens (beside the model's eos)
  std::string rendered;           // the text after templating, before image expansion
};

class ChatInputBuilder {
 public:
  // Loads the tokenizer of `model_dir` (IoError / FormatError naming the files);
  // preprocessor_config.json is read at the first image. `model` must outlive the builder.
  ChatInputBuilder(const Model& model, std::string model_dir);

  // The template that renders messages. Vision-language models by architecture: LLaVA-1.5;
  // LLaVA-NeXT with Llama-3 header tokens in its tokenizer llama3-llava-next, else LLaVA-1.5's;
  // Qwen2.5-VL. Text-only models by their tokenizer's special tokens: <|im_start|> -> ChatML (the
  // Qwen2.5-VL template without images is Qwen2-Instruct's), <|start_header_id|> -> Llama-3 headers
  // (llama3-llava-next's without images is Llama-3-Instruct's), else the Vicuna-style
  // "USER: ... ASSISTANT:" of LLaVA-1.5.
  ChatFamily family() const { return family_; }
  const std::shared_ptr<const Tokenizer>& tokenizer() const { return tokenizer_; }

  // The messages rendered by family() (the tokenizer's BOS where the template writes it).
  ChatFormat format(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  // The inputs of `messages`: rendered, encoded, and with `image_paths` (the messages' images in
  // order; their number must equal the sum of ChatMessage::images) decoded, preprocessed and
  // expanded into their image tokens. ArgumentError for images given to a text-only model or a
  // count mismatch; FormatError when the tokenizer's image placeholder is not config.json's image
  // token id; the image and processor errors name their files.
  // `videos` (Qwen2.5-VL only; their number must equal the sum of ChatMessage::videos) are read with
  // the video processor (vision/video.h) and their placeholders expanded the same way.
  ChatInputs chat(const std::vector<ChatMessage>& messages, const std::vector<std::string>& image_paths,
                  bool add_generation_prompt, const std::vector<ChatVideo>& videos = {}) const;

  // `text` encoded as given, with the tokenizer's special tokens (BOS), no template, no images.
  ChatInputs raw(const std::string& text) const;

 private:
  const Model* model_;
  std::string model_dir_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ChatFamily family_ = ChatFamily::kLlava15;
  mutable std::shared_ptr<const vision::ProcessorConfig> processor_;  // read at the first image
  mutable std::shared_ptr<const vision::VideoProcessorConfig> video_processor_;  // at the first video
};

}  // namespace vlm2mla
