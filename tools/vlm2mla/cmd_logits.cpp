// vlm2mla logits --model DIR --inputs IN.safetensors --out OUT.safetensors [--device] [--dtype]
#include "common.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "models/model.h"

namespace vlm2mla::cli {

void register_logits(CLI::App& app) {
  struct Args {
    std::string model, inputs, out;
    RunFlags run;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "logits", "Forward pass: write the logits float32 [B,T,V] for the inputs, as transformers' "
                "model(**inputs).logits");
  cmd->add_option("--model", args->model, "model directory (config.json + safetensors)")->required();
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with input_ids int64 [B,T], optional attention_mask, position_ids, "
                  "pixel_values, image_sizes, image_grid_thw")
      ->required();
  cmd->add_option("--out", args->out, "output safetensors (tensor 'logits')")->required();
  args->run.add_to(cmd);
  args->run.add_fuse_to(cmd);
  cmd->callback([args]() {
    ModelInputs in = read_model_inputs(args->inputs);
    auto model = load_model(args->model, args->run, ModelUse::kInference);
    check_token_ids(in.input_ids, model->text_config().vocab_size, args->inputs + ": input_ids");
    // As transformers' forward: without position_ids, 1-D positions are 0..T-1 in every row;
    // Qwen2.5-VL's M-RoPE positions come from input_ids and image_grid_thw.
    at::Tensor logits = model->logits(in).to(at::kCPU, at::kFloat);
    io::write_safetensors(args->out, {{"logits", logits.contiguous()}});
    VLM2MLA_INFO("wrote logits ", logits.sizes(), " to ", args->out);
  });
}

}  // namespace vlm2mla::cli
