// Pieces shared by the subcommands.
#pragma once

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include <map>
#include <string>

#include "models/weights.h"

namespace vlm2mla::cli {

// --device / --dtype as every model-running subcommand takes them.
struct RunFlags {
  std::string device = "cpu";
  std::string dtype;  // empty: float32 on cpu, bfloat16 on cuda
  std::string attention = "auto";  // auto | reference | fused
  void add_to(CLI::App* app);
  LoadOptions load_options() const;
};

// Reads an inputs .safetensors in the `logits` format and checks the tensors it needs:
// input_ids int [B,T] (int32 accepted, widened), optional attention_mask [B,T], position_ids [B,T].
struct TextInputs {
  at::Tensor input_ids;       // int64 [B, T]
  at::Tensor attention_mask;  // int64 [B, T] or undefined
  at::Tensor position_ids;    // int64 [B, T] or undefined
};
TextInputs read_text_inputs(const std::string& path);

void register_logits(CLI::App& app);
void register_generate(CLI::App& app);
void register_inspect(CLI::App& app);
void register_init_random(CLI::App& app);
void register_bench(CLI::App& app);
void register_tokenize(CLI::App& app);

}  // namespace vlm2mla::cli

namespace vlm2mla {
class TextDecoder;
}
namespace vlm2mla::cli {
// Loads the model at `dir` with the run flags (device, dtype, attention backend); logs the load time.
std::shared_ptr<TextDecoder> load_model(const std::string& dir, const RunFlags& flags);
}  // namespace vlm2mla::cli
