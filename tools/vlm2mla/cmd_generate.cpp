// vlm2mla generate --model DIR --inputs IN.safetensors --max-new-tokens N [--greedy] [--out-ids F]
#include <cstdio>

#include "common.h"
#include "core/log.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "models/model.h"

namespace vlm2mla::cli {

void register_generate(CLI::App& app) {
  struct Args {
    std::string model, inputs, out_ids;
    int64_t max_new_tokens = 32;
    bool greedy = false, sample = false;
    double temperature = -1, top_p = -1, repetition_penalty = -1;
    int64_t top_k = -1;
    uint64_t seed = 0;
    RunFlags run;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate tokens after the prompts in --inputs (greedy or sampled), as "
                  "transformers' generate");
  cmd->add_option("--model", args->model, "model directory")->required();
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with input_ids int64 [B,T] and optional attention_mask (left padding)")
      ->required();
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate at most")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  auto* greedy = cmd->add_flag("--greedy", args->greedy, "argmax decoding (do_sample=False)");
  cmd->add_flag("--sample", args->sample, "sample (do_sample=True)")->excludes(greedy);
  cmd->add_option("--temperature", args->temperature, "sampling temperature (default: "
                                                       "generation_config.json, else 1)");
  cmd->add_option("--top-k", args->top_k, "keep the k most likely tokens (0: off; default: "
                                          "generation_config.json, else 50)");
  cmd->add_option("--top-p", args->top_p, "nucleus sampling mass (default: generation_config.json, "
                                          "else 1 = off)");
  cmd->add_option("--repetition-penalty", args->repetition_penalty,
                  "penalty for tokens already seen (default: generation_config.json, else 1)");
  cmd->add_option("--seed", args->seed, "random seed for sampling")->capture_default_str();
  cmd->add_option("--out-ids", args->out_ids,
                  "write 'generated' int64 [B, T+N] here instead of printing the new ids");
  args->run.add_to(cmd);
  cmd->callback([args]() {
    ModelInputs in = read_model_inputs(args->inputs);
    auto model = load_model(args->model, args->run);
    GenerateOptions opts = load_generate_defaults(args->model, model->text_config());
    opts.max_new_tokens = args->max_new_tokens;
    if (args->greedy) opts.sampling.do_sample = false;
    if (args->sample) opts.sampling.do_sample = true;
    if (args->temperature >= 0) opts.sampling.temperature = args->temperature;
    if (args->top_k >= 0) opts.sampling.top_k = args->top_k;
    if (args->top_p >= 0) opts.sampling.top_p = args->top_p;
    if (args->repetition_penalty >= 0) opts.sampling.repetition_penalty = args->repetition_penalty;
    opts.sampling.seed = args->seed;
    validate(opts.sampling);

    const int64_t b = in.input_ids.size(0);
    const bool stream = args->out_ids.empty() && b == 1;
    if (stream) {
      std::printf("[");
      std::fflush(stdout);
      auto first = std::make_shared<bool>(true);
      opts.on_step = [first](const at::Tensor& tok, const at::Tensor& running) {
        if (!running[0].item<bool>()) return;
        std::printf("%s%lld", *first ? "" : ", ", static_cast<long long>(tok[0].item<int64_t>()));
        std::fflush(stdout);
        *first = false;
      };
    }
    GenerateResult r = generate(model->decoder(), model->prepare(in, /*forward_semantics=*/false), opts);
    if (stream) {
      std::printf("]\n");
    } else if (args->out_ids.empty()) {
      // One JSON array of new ids per row, up to and including its end-of-sequence token.
      const int64_t t = in.input_ids.size(1);
      for (int64_t row = 0; row < b; ++row) {
        std::printf("[");
        for (int64_t j = t; j < r.sequences.size(1); ++j) {
          const int64_t id = r.sequences[row][j].item<int64_t>();
          std::printf("%s%lld", j > t ? ", " : "", static_cast<long long>(id));
          if (std::find(opts.eos_token_ids.begin(), opts.eos_token_ids.end(), id) !=
              opts.eos_token_ids.end()) {
            break;
          }
        }
        std::printf("]\n");
      }
    } else {
      io::write_safetensors(args->out_ids, {{"generated", r.sequences.contiguous()}});
      VLM2MLA_INFO("wrote generated ", r.sequences.sizes(), " to ", args->out_ids);
    }
    const double decode_tps = r.decode_seconds > 0 ? b * (r.new_tokens - 1) / r.decode_seconds : 0;
    VLM2MLA_DEBUG("prefill ", r.prefill_seconds, " s, decode ", r.new_tokens, " steps, ",
                  decode_tps, " tokens/s");
  });
}

}  // namespace vlm2mla::cli
