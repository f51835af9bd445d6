// vlm2mla logits --model DIR --inputs IN.safetensors --out OUT.safetensors [--device] [--dtype]
#include "common.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "models/decoder.h"

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
                  "safetensors with input_ids int64 [B,T], optional attention_mask and position_ids")
      ->required();
  cmd->add_option("--out", args->out, "output safetensors (tensor 'logits')")->required();
  args->run.add_to(cmd);
  cmd->callback([args]() {
    TextInputs in = read_text_inputs(args->inputs);
    auto model = load_model(args->model, args->run);
    check_token_ids(in.input_ids, model->config().vocab_size, args->inputs + ": input_ids");
    const int64_t b = in.input_ids.size(0), t = in.input_ids.size(1);
    DecoderInput d;
    d.input_ids = in.input_ids;
    d.attention_mask = in.attention_mask;
    // As transformers' forward: without position_ids, positions are 0..T-1 for every row.
    d.position_ids = in.position_ids.defined()
                         ? in.position_ids
                         : at::arange(t, at::kLong).unsqueeze(0).expand({b, t}).contiguous();
    at::Tensor logits = model->lm_head(model->forward_hidden(d, nullptr)).to(at::kCPU, at::kFloat);
    io::write_safetensors(args->out, {{"logits", logits.contiguous()}});
    VLM2MLA_INFO("wrote logits ", logits.sizes(), " to ", args->out);
  });
}

}  // namespace vlm2mla::cli
