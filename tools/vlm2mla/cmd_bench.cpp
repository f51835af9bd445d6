// vlm2mla bench (--model DIR | --random-weights CONFIG.json) --context N --batch B --new-tokens M
// Load time, prefill and decode throughput, KV-cache bytes and peak memory of one generate run.
#include <chrono>
#include <cstdio>

#include "common.h"
#include "core/device_memory.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/log.h"
#include "generate/generate.h"
#include "io/json_file.h"
#include "models/model.h"

namespace vlm2mla::cli {

void register_bench(CLI::App& app) {
  struct Args {
    std::string model, random_config;
    int64_t context = 512, batch = 1, new_tokens = 32;
    int64_t warmup = 1;
    bool json = false;
    uint64_t seed = 0;
    RunFlags run;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Time loading, prefill and greedy decode; report KV-cache bytes and peak memory");
  auto* model = cmd->add_option("--model", args->model, "model directory");
  auto* random = cmd->add_option("--random-weights", args->random_config,
                                 "benchmark the shapes of this config.json with random weights");
  model->excludes(random);
  cmd->add_option("--context", args->context, "prompt tokens per sequence")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch", args->batch, "sequences")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--new-tokens", args->new_tokens, "decode steps")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", args->warmup, "untimed warm-up runs (short) before the timed one")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", args->seed, "seed of the random prompt and weights")->capture_default_str();
  cmd->add_flag("--json", args->json, "print one JSON object");
  args->run.add_to(cmd);
  cmd->callback([args]() {
    VLM2MLA_CHECK(!args->model.empty() || !args->random_config.empty(), ArgumentError,
                  "bench: give --model DIR or --random-weights CONFIG.json");
    const LoadOptions options = args->run.load_options();
    auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<const TextDecoder> m;
    std::shared_ptr<Model> loaded;  // keeps a loaded checkpoint alive
    if (!args->model.empty()) {
      loaded = load_model(args->model, args->run);
      m = std::shared_ptr<const TextDecoder>(loaded, &loaded->decoder());
    } else {
      TextConfig config = parse_text_config(io::read_json_file(args->random_config), args->random_config);
      auto decoder = std::make_shared<TextDecoder>(
          config, random_decoder_weights(config, options, args->seed), options);
      decoder->set_attention_backend(args->run.attention_backend());
      m = decoder;
    }
    synchronize(options.device);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    at::Generator gen = at::detail::createCPUGenerator(args->seed);
    at::Tensor ids = at::randint(0, m->config().vocab_size, {args->batch, args->context}, gen,
                                 at::TensorOptions().dtype(at::kLong));
    GenerateOptions go;  // greedy, no end-of-sequence: exactly new_tokens steps
    go.max_new_tokens = args->new_tokens;
    for (int64_t i = 0; i < args->warmup; ++i) {  // same shapes, few steps
      GenerateOptions w = go;
      w.max_new_tokens = std::min<int64_t>(go.max_new_tokens, 4);
      generate(*m, ids, at::Tensor(), w);
    }
    reset_peak_memory(options.device);
    GenerateResult r = generate(*m, ids, at::Tensor(), go);
    const int64_t peak = peak_memory_bytes(options.device);
    const int64_t kv_per_token = r.kv_bytes_per_token, kv_allocated = r.kv_bytes_allocated;
    const int64_t steps = r.new_tokens - 1;  // the first new token comes out of the prefill
    nlohmann::json j = {
        {"model", args->model.empty() ? args->random_config + " (random weights)" : args->model},
        {"device", options.device.str()},
        {"dtype", dtype_name(options.dtype)},
        {"attention", attention_backend_name(m->attention_backend())},
        {"context", args->context},
        {"batch", args->batch},
        {"new_tokens", r.new_tokens},
        {"load_seconds", load_s},
        {"prefill_seconds", r.prefill_seconds},
        {"prefill_tokens_per_s", args->batch * args->context / r.prefill_seconds},
        {"decode_seconds", r.decode_seconds},
        {"decode_ms_per_step", steps > 0 ? 1e3 * r.decode_seconds / steps : 0.0},
        {"decode_tokens_per_s", steps > 0 ? args->batch * steps / r.decode_seconds : 0.0},
        {"kv_bytes_per_token", kv_per_token},
        {"kv_bytes_allocated", kv_allocated},
        {"peak_memory_bytes", peak},
        {"peak_memory_kind", options.device.is_cuda() ? "cuda caching allocator peak"
                                                      : "process peak resident set"}};
    if (args->json) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("%s on %s (%s, attention %s)\n", j["model"].get<std::string>().c_str(),
                j["device"].get<std::string>().c_str(), j["dtype"].get<std::string>().c_str(),
                j["attention"].get<std::string>().c_str());
    std::printf("load      %.3f s\n", load_s);
    std::printf("prefill   %lld x %lld tokens in %.3f s: %.1f tokens/s\n", (long long)args->batch,
                (long long)args->context, r.prefill_seconds, j["prefill_tokens_per_s"].get<double>());
    std::printf("decode    %lld steps x %lld: %.2f ms/step, %.1f tokens/s\n", (long long)steps,
                (long long)args->batch, j["decode_ms_per_step"].get<double>(),
                j["decode_tokens_per_s"].get<double>());
    std::printf("kv cache  %lld bytes/token, %lld bytes allocated\n", (long long)kv_per_token,
                (long long)kv_allocated);
    std::printf("peak mem  %.1f MiB (%s)\n", peak / 1048576.0, j["peak_memory_kind"].get<std::string>().c_str());
  });
}

}  // namespace vlm2mla::cli
