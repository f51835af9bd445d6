// From an image file and a prompt to the inputs of a forward: the family's chat template, the
// tokenizer, the image processor, and the expansion of one placeholder per image into its tokens.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/model.h"

namespace vlm2mla {
class Tokenizer;
}

namespace vlm2mla::cli {

struct ChatInputs {
  ModelInputs inputs;                     // input_ids [1, s] and the images' tensors
  std::vector<int64_t> stop_ids;          // the template's stop tokens (beside the model's eos)
  std::shared_ptr<const Tokenizer> tokenizer;
  std::string rendered;                   // the prompt text after templating
};

// `raw`: encode the prompt as given (add_special_tokens=True), no template; text models always do.
ChatInputs build_chat_inputs(const Model& model, const std::string& model_dir,
                             const std::vector<std::string>& images, const std::string& prompt,
                             const std::string& system, bool raw);

}  // namespace vlm2mla::cli
