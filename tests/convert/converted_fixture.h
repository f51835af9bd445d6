// Converted fixtures for the runtime tests: a fixture family's tiny model converted to MLA in the test
// (md for the VLMs, whitened for the text models), and the decoder input of one more token.
#pragma once

#include <memory>
#include <string>

#include "models/model.h"

namespace vlm2mla::testing {

struct Converted {
  std::shared_ptr<Model> model;
  ModelInputs inputs;
};

// tests/fixtures/<name>: partial RoPE R = 4 (2-norm), D latent dims per kv head (a real compression),
// calibrated on the fixture's inputs; the image set's k/v biases perturbed so that the per-modality
// bias terms differ, as fine-tuning makes them.
Converted converted(const std::string& name, int64_t D = 3);

// The decoder input of one more token (id `token`) after the prompt, every row.
DecoderInput next_token(const Prompt& p, int64_t token);

}  // namespace vlm2mla::testing
