// Access to the transformers-made fixtures under tests/fixtures (see scripts/make_text_fixtures.py).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "generate/generate.h"
#include "models/model.h"
#include "support/test_support.h"

namespace vlm2mla::testing {

struct TextFixture {
  std::string name;
  std::string dir;        // tests/fixtures/text/<name>
  std::string model_dir;  // .../model
  std::map<std::string, at::Tensor> inputs;       // input_ids, attention_mask
  std::map<std::string, at::Tensor> inputs_row1;  // input_ids (row 1 without padding)
  std::map<std::string, at::Tensor> expected;     // logits, logits_row1, generated, generated_row1, ...
  int64_t pad = 0;
  double hf_bf16_error = 0;  // HF's own bf16-on-CUDA vs fp32 max abs logit error (meta.json)
};

const std::vector<std::string>& text_fixture_names();
TextFixture load_text_fixture(const std::string& name);

// transformers' do_sample=False with the checkpoint's generation_config.json, n new tokens.
GenerateOptions greedy_options(const std::string& model_dir, const TextConfig& config, int64_t n);

// bool [B, T]: the real (non-padding) positions of the inputs (all when they carry no attention_mask).
at::Tensor real_positions(const ModelInputs& in);

// max |a - b| / max |b| over the positions where valid [B, T] is true (all when undefined).
double max_rel_error(const at::Tensor& a, const at::Tensor& b, const at::Tensor& valid = {});
double max_abs_error(const at::Tensor& a, const at::Tensor& b, const at::Tensor& valid = {});

// A byte-level BPE tokenizer.json over the 256 bytes (no merges) with Qwen's special tokens at the
// ids of the tiny Qwen2.5-VL fixture (<|image_pad|> 300, <|video_pad|> 301, <|vision_start|> 302, <|vision_end|> 303,
// <|im_start|> 304, <|im_end|> 305, <|endoftext|> 306).
nlohmann::json tiny_qwen_tokenizer();

// `dir` gets the tiny Qwen2.5-VL fixture (config, weights, generation config), the tiny-qwen2-vl
// preprocessor_config.json and tiny_qwen_tokenizer(): a model directory for chat prompts.
void write_tiny_qwen_chat_model(const std::string& dir);

}  // namespace vlm2mla::testing
