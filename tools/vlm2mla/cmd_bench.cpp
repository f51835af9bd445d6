// vlm2mla bench (--model DIR | --random-weights CONFIG.json) --context N --batch B --new-tokens M
//               [--image HxW]
// Load time, vision encoding (VLMs, with --image), prefill and decode throughput, KV-cache bytes and
// peak memory of one greedy generate run.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "common.h"
#include "core/device_memory.h"
#include "core/dtype.h"
#include "core/env_switch.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "io/json_file.h"
#include "kernels/ops.h"
#include <unistd.h>
#include "generate/generate.h"
#include "models/model.h"
#include "vision/processors.h"

namespace vlm2mla::cli {

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Random inputs of the shapes a real image of `h` x `w` gives each architecture, and a prompt of
// `context` text tokens after the image's tokens (Qwen: inside vision_start ... vision_end).
ModelInputs make_inputs(const Model& m, int64_t batch, int64_t context, int64_t h, int64_t w,
                        at::Generator& gen, at::Device device) {
  const int64_t vocab = m.text_config().vocab_size;
  // Text ids below the image token and every special id of these vocabularies.
  int64_t text_max = std::min<int64_t>(vocab, 30000);
  if (m.image_token_id() >= 0) text_max = std::min(text_max, m.image_token_id());
  if (const QwenVisionTower* q = m.qwen_vision()) {
    text_max = std::min({text_max, q->config().vision_start_token_id, q->config().video_token_id});
  }
  text_max = std::max<int64_t>(text_max, 2);
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  ModelInputs in;
  at::Tensor text = at::randint(0, text_max, {batch, context}, gen, at::TensorOptions().dtype(at::kLong));
  if (h <= 0 || m.image_token_id() < 0) {  // text only: ids below every image/vision special id
    in.input_ids = m.image_token_id() < 0
                       ? at::randint(0, vocab, {batch, context}, gen, at::TensorOptions().dtype(at::kLong))
                       : text;
    return in;
  }
  std::vector<at::Tensor> prefix;
  if (const LlavaVision* llava = m.llava()) {
    const auto& v = llava->config().vision;
    if (llava->next()) {
      const auto [bh, bw] = vision::select_best_resolution(h, w, llava->config().image_grid_pinpoints);
      const int64_t patches = (bh / v.image_size) * (bw / v.image_size) + 1;
      in.pixel_values = at::randn({batch, patches, 3, v.image_size, v.image_size}, opts);
      in.image_sizes = at::tensor({h, w}, at::kLong).repeat({batch, 1});
    } else {
      in.pixel_values = at::randn({batch, 3, v.image_size, v.image_size}, opts);
    }
    prefix.push_back(at::full({batch, llava->tokens_per_image(h, w)}, m.image_token_id(), at::kLong));
  } else if (const QwenVisionTower* q = m.qwen_vision()) {
    const auto& c = q->config();
    const int64_t factor = c.patch_size * c.spatial_merge_size;
    // Qwen2.5-VL's published processor bounds (min_pixels 3136, max_pixels 12845056).
    const auto [rh, rw] = vision::smart_resize(h, w, factor, 3136, 12845056);
    const int64_t gh = rh / c.patch_size, gw = rw / c.patch_size;
    in.pixel_values = at::randn({batch * gh * gw, c.patch_dim()}, opts);
    in.image_grid_thw = at::tensor({int64_t{1}, gh, gw}, at::kLong).repeat({batch, 1});
    const int64_t tokens = gh * gw / (c.spatial_merge_size * c.spatial_merge_size);
    prefix.push_back(at::full({batch, 1}, c.vision_start_token_id, at::kLong));
    prefix.push_back(at::full({batch, tokens}, m.image_token_id(), at::kLong));
    prefix.push_back(at::full({batch, 1}, c.vision_end_token_id, at::kLong));
  }
  prefix.push_back(text);
  in.input_ids = at::cat(prefix, 1);
  return in;
}

// config.json with an `mla` block: R rope dims (high pairs), D latent dims per kv head on every
// layer, md projections for vision-language models (their visual token ids), written to a temp file.
std::string write_random_mla_config(const std::string& path, int64_t D, int64_t R) {
  nlohmann::json root = io::read_json_file(path);
  const TextConfig c = parse_text_config(root, path);
  VLM2MLA_CHECK(!c.mla, ArgumentError, "--mla-kv-rank: ", path, " is already converted");
  VLM2MLA_CHECK(R > 0 && R % 2 == 0 && R <= c.head_dim, ArgumentError, "--mla-rope-dims: R = ", R,
                " must be even and in [2, ", c.head_dim, "]");
  MlaConfig m;
  m.qk_rope_head_dim = R;
  std::vector<int64_t> pairs;
  for (int64_t k = 0; k < R / 2; ++k) pairs.push_back(k);
  m.kept_pairs.assign(static_cast<size_t>(c.num_hidden_layers),
                      std::vector<std::vector<int64_t>>(static_cast<size_t>(c.num_key_value_heads), pairs));
  m.rope_strategy = "high";
  m.visual_token_ids = Model::visual_token_ids_of(root, path);
  m.svd = m.visual_token_ids.empty() ? SvdMethod::kWhitened : SvdMethod::kMd;
  m.modality_split = m.svd == SvdMethod::kMd;
  m.kv_lora_rank.assign(static_cast<size_t>(c.num_hidden_layers), c.num_key_value_heads * D);
  root["mla"] = mla_config_to_json(m);
  // Validate as the loader will (ranks within [W_kc; W_v]'s).
  parse_text_config(root, path + " (with --mla-kv-rank)");
  const std::string out = fs::join(fs::temp_directory(), "vlm2mla-bench-mla-" + std::to_string(::getpid()) + ".json");
  io::write_json_file(out, root);
  return out;
}

}  // namespace

void register_bench(CLI::App& app) {
  struct Args {
    std::string model, random_config, image;
    int64_t context = 512, batch = 1, new_tokens = 32;
    int64_t warmup = 1;
    bool json = false, synthetic_cache = false;
    uint64_t seed = 0;
    int64_t mla_kv_rank = 0, mla_rope_dims = 32, prefill_chunk = 0;
    RunFlags run;
    CacheFlags cache;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Time loading, vision encoding, prefill and greedy decode; report KV-cache bytes and "
               "peak memory");
  auto* model = cmd->add_option("--model", args->model, "model directory");
  auto* random = cmd->add_option("--random-weights", args->random_config,
                                 "benchmark the shapes of this config.json with random weights");
  model->excludes(random);
  cmd->add_option("--context", args->context, "text tokens per sequence (after the image's tokens)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch", args->batch, "sequences")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--new-tokens", args->new_tokens, "decode steps")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--image", args->image,
                  "HxW: one random image of that original size per sequence (vision-language models)");
  cmd->add_option("--warmup", args->warmup, "untimed warm-up runs (few steps) before the timed one")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", args->seed, "seed of the random prompt and weights")->capture_default_str();
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->add_flag("--synthetic-cache", args->synthetic_cache,
                "time decode over a cache holding random rows for the prompt (only its last token runs: no "
                "prefill), so long contexts of large batches are affordable; decode speed does not depend on "
                "the cached values (transformers' reference numbers used a pre-filled cache the same way); with "
                "--image the image's positions stay image tokens (two-set models read keys by modality)");
  cmd->add_option("--mla-kv-rank", args->mla_kv_rank,
                  "with --random-weights: convert the config on the fly to MLA with random weights, D "
                  "latent dims per kv head (r_kv = n_kv x D), md projections for VLMs");
  cmd->add_option("--mla-rope-dims", args->mla_rope_dims, "with --mla-kv-rank: R rope dims per head")
      ->capture_default_str();
  cmd->add_option("--prefill-chunk", args->prefill_chunk,
                  "prefill in chunks of this many positions (0: one forward), for long contexts x large batches")
      ->capture_default_str();
  args->run.add_to(cmd);
  args->run.add_fuse_to(cmd);
  args->cache.add_to(cmd);
  cmd->callback([args]() {
    VLM2MLA_CHECK(!args->model.empty() || !args->random_config.empty(), ArgumentError,
                  "bench: give --model DIR or --random-weights CONFIG.json");
    int64_t h = 0, w = 0;
    if (!args->image.empty()) {
      char x = 0;
      VLM2MLA_CHECK(std::sscanf(args->image.c_str(), "%ld%c%ld", &h, &x, &w) == 3 && x == 'x' && h > 0 &&
                        w > 0,
                    ArgumentError, "--image: expected HxW (e.g. 336x336), got '", args->image, "'");
    }
    const LoadOptions options = args->run.load_options(ModelUse::kInference);
    // the decode kernel and combine layout asked of converted models' CUDA steps (VLM2MLA_DECODE_KERNEL,
    // VLM2MLA_DECODE_COMBINE, default auto), the fewest and most tiles a split, the scores-first kernels' warps and
    // the wgmma kernel's layout (VLM2MLA_DECODE_MIN_TILES, VLM2MLA_DECODE_MAX_TILES, VLM2MLA_DECODE_WIDE_WARPS,
    // VLM2MLA_DECODE_WGMMA_PRODUCERS / _CONSUMERS): read now, so a bad value stops the run before the model loads
    const char* kernel_request = mla_decode_variant_name(model_decode_variant());
    const char* combine_request = mla_decode_combine_name(model_decode_combine());
    const int64_t min_tiles = model_decode_min_tiles(), max_tiles = model_decode_max_tiles();
    const int64_t wide_warps = model_decode_wide_warps();
    const int64_t wgmma_producers = model_decode_wgmma_producers(), wgmma_consumers = model_decode_wgmma_consumers();
    nlohmann::json env_switches = nlohmann::json::object();
    for (const auto& [name, on] : env_switch_states()) env_switches[name] = on;
    auto t0 = std::chrono::steady_clock::now();
    std::string random_config = args->random_config;
    struct RemoveOnExit {
      std::string path;
      ~RemoveOnExit() { if (!path.empty()) fs::remove_all(path); }
    } mla_config;
    if (args->mla_kv_rank > 0) {
      VLM2MLA_CHECK(!random_config.empty(), ArgumentError, "--mla-kv-rank needs --random-weights CONFIG.json");
      random_config = mla_config.path = write_random_mla_config(random_config, args->mla_kv_rank, args->mla_rope_dims);
    }
    std::shared_ptr<Model> m = args->model.empty()
                                   ? Model::random(random_config, options, args->seed)
                                   : Model::load(args->model, options);
    m->set_attention_backend(args->run.attention_backend());
    m->set_mla_attention(args->run.mla_attention());
    synchronize(options.device);
    const double load_s = since(t0);
    VLM2MLA_CHECK(h == 0 || m->image_token_id() >= 0, ArgumentError, "--image given, but ",
                  m->text_config().architecture, " is a text-only model");

    at::Generator gen = at::detail::createCPUGenerator(args->seed);
    ModelInputs in = make_inputs(*m, args->batch, args->context, h, w, gen, options.device);
    GenerateOptions go;  // greedy, no end-of-sequence: exactly new_tokens steps
    go.max_new_tokens = args->new_tokens;
    go.cache = args->cache.spec();
    go.decode = args->cache.decode_mode();
    go.prefill_chunk = args->prefill_chunk;
    go.synthetic_cache = args->synthetic_cache;
    // The roofline floor's ingredients, measured before the timed run (its buffers are freed again).
    const double bandwidth = copy_bandwidth(options.device);
    const int64_t weight_bytes = m->decoder().step_weight_bytes();
    // Warm-up of the vision side on a few sequences (at most 8: Qwen2.5-VL encodes large images one run at a
    // time, so their shapes are the batch's; encoding all of a large batch's images twice took minutes)
    if (h > 0 && args->warmup > 0) {
      at::Generator warm_gen = at::detail::createCPUGenerator(args->seed + 1);
      m->prepare(make_inputs(*m, std::min<int64_t>(args->batch, 8), args->context, h, w, warm_gen, options.device),
                 false);
    }
    reset_peak_memory(options.device);
    t0 = std::chrono::steady_clock::now();
    Prompt prompt = m->prepare(in, false);  // vision encoding, positions
    synchronize(options.device);
    const double vision_s = since(t0);
    // The pixels are the prompt's features now: freed before the cache is allocated (float32 patches of 1344 x
    // 1344 images are 10 GiB at b = 256, which with the cache did not fit on an H200)
    in.pixel_values = at::Tensor();
    in.pixel_values_videos = at::Tensor();
    for (int64_t i = 0; i < args->warmup; ++i) {  // same shapes, few steps, over the timed run's prompt
      GenerateOptions wo = go;
      wo.max_new_tokens = std::min<int64_t>(go.max_new_tokens, 4);
      generate(m->decoder(), prompt, wo);
    }
    take_mla_decode_kernels_used();  // forget the warm-up's
    GenerateResult r = generate(m->decoder(), prompt, go);
    const std::vector<std::string> kernels_used = take_mla_decode_kernels_used();
    const int64_t peak = peak_memory_bytes(options.device);
    const int64_t s = in.input_ids.size(1);
    const int64_t image_tokens = m->image_token_id() >= 0 ? in.input_ids.eq(m->image_token_id()).sum().item<int64_t>() / args->batch : 0;
    const int64_t steps = r.new_tokens - 1;  // the first new token comes out of the prefill
    // The median step: the steady state, without the first steps' one-time costs (a CUDA graph's
    // eager warm-up and capture).
    std::vector<double> sorted = r.step_seconds;
    std::sort(sorted.begin(), sorted.end());
    const double median_ms = sorted.empty() ? 0.0
                             : 1e3 * (sorted.size() % 2 ? sorted[sorted.size() / 2]
                                                        : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]));
    nlohmann::json j = {
        {"model", args->model.empty() ? args->random_config + " (random weights)" : args->model},
        {"architecture", m->text_config().architecture},
        {"device", options.device.str()},
        {"dtype", dtype_name(options.dtype)},
        {"attention", attention_backend_name(m->attention_backend())},
        {"mla", m->text_config().mla
                    ? nlohmann::json{{"qk_rope_head_dim", m->text_config().mla->qk_rope_head_dim},
                                     {"svd", svd_method_name(m->text_config().mla->svd)},
                                     {"kv_lora_rank", m->text_config().mla->kv_lora_rank}}
                    : nlohmann::json()},
        {"mla_attention", mla_attention_name(m->decoder().mla_attention())},
        {"fused_projections", options.fuse_projections},
        {"kv_cache", args->cache.type.empty() ? dtype_name(options.dtype) : args->cache.type},
        {"decode_mode", decode_mode_name(r.decode)},
        {"decode_kernel_request", kernel_request},
        {"decode_combine_request", combine_request},
        // the fast paths' on/off switches as the environment set them (core/env_switch.h), the decode kernels'
        // fewest and most tiles a split (VLM2MLA_DECODE_MIN_TILES, VLM2MLA_DECODE_MAX_TILES) and the scores-first
        // values pass's warps (VLM2MLA_DECODE_WIDE_WARPS); 0: the plan's own
        {"env_switches", env_switches},
        {"decode_min_tiles", min_tiles},
        {"decode_max_tiles", max_tiles},
        {"decode_wide_warps", wide_warps},
        {"decode_wgmma_producers", wgmma_producers},  // (0: the plan's; -1: none)
        {"decode_wgmma_consumers", wgmma_consumers},
        // the absorbed-MLA decode kernels the run's CUDA steps took ("tc-rows", "tc-rows-mod", "tc-keys",
        // "tc-codes", "wide", "generic"); none for unconverted models, nor on the CPU (its steps take the libtorch form)
        {"decode_kernels", kernels_used},
        // graph mode: the kernel launches of one captured decode step (exact, where timings are noisy)
        {"decode_step_kernels", r.step_kernels},
        {"synthetic_cache", args->synthetic_cache},
        {"context", s},
        {"batch", args->batch},
        {"image", args->image},
        {"image_tokens", image_tokens},
        {"new_tokens", r.new_tokens},
        {"load_seconds", load_s},
        {"vision_seconds", vision_s},
        {"prefill_seconds", r.prefill_seconds},
        // With --synthetic-cache only the last prompt token ran: no prefill rate.
        {"prefill_tokens_per_s", args->synthetic_cache ? nlohmann::json() : nlohmann::json(args->batch * s / r.prefill_seconds)},
        {"decode_seconds", r.decode_seconds},
        {"decode_ms_per_step", steps > 0 ? 1e3 * r.decode_seconds / steps : 0.0},
        {"decode_tokens_per_s", steps > 0 ? args->batch * steps / r.decode_seconds : 0.0},
        {"decode_ms_per_step_median", median_ms},
        {"decode_tokens_per_s_median", median_ms > 0 ? 1e3 * args->batch / median_ms : 0.0},
        {"decode_step_ms", [&] {
           std::vector<double> ms;
           for (double x : r.step_seconds) ms.push_back(1e3 * x);
           return ms;
         }()},
        {"step_weight_bytes", weight_bytes},
        {"copy_bandwidth_bytes_per_s", bandwidth},
        // (weights a step reads + the cache as allocated) / copy bandwidth: no step can be faster.
        {"floor_ms", 1e3 * static_cast<double>(weight_bytes + r.kv_bytes_allocated) / bandwidth},
        {"kv_bytes_per_token", r.kv_bytes_per_token},
        {"kv_bytes_allocated", r.kv_bytes_allocated},
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
    if (h > 0) std::printf("vision    %s image, %lld tokens: %.4f s (encoder, projector)\n",
                           args->image.c_str(), (long long)image_tokens, vision_s);
    if (args->synthetic_cache) {
      std::printf("prefill   none: %lld x %lld random cached positions (%lld image tokens each), the last prompt "
                  "token in %.4f s\n",
                  (long long)args->batch, (long long)(s - 1), (long long)image_tokens, r.prefill_seconds);
    } else {
      std::printf("prefill   %lld x %lld tokens in %.4f s: %.1f tokens/s\n", (long long)args->batch,
                  (long long)s, r.prefill_seconds, j["prefill_tokens_per_s"].get<double>());
    }
    std::printf("decode    %lld steps x %lld: %.2f ms/step (median %.2f), %.1f tokens/s (%s steps)\n",
                (long long)steps, (long long)args->batch, j["decode_ms_per_step"].get<double>(), median_ms,
                j["decode_tokens_per_s"].get<double>(), decode_mode_name(r.decode));
    std::printf("kv cache  %lld bytes/token, %lld bytes allocated\n", (long long)r.kv_bytes_per_token,
                (long long)r.kv_bytes_allocated);
    std::printf("floor     %.2f ms/step: (%.3f GB of weights + the cache) at %.1f GB/s copy rate; median step %.1fx it\n",
                j["floor_ms"].get<double>(), weight_bytes / 1e9, bandwidth / 1e9,
                median_ms / j["floor_ms"].get<double>());
    std::printf("peak mem  %.1f MiB (%s)\n", peak / 1048576.0, j["peak_memory_kind"].get<std::string>().c_str());
  });
}

}  // namespace vlm2mla::cli
