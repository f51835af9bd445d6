#include "generate/generate.h"

#include <chrono>

#include "core/device_memory.h"
#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"

namespace vlm2mla {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerateOptions load_generate_defaults(const std::string& model_dir, const TextConfig& config) {
  GenerateOptions o;
  o.eos_token_ids = config.eos_token_ids;
  std::optional<int64_t> pad = config.pad_token_id;
  const std::string path = model_dir + "/generation_config.json";
  if (fs::exists(path)) {
    nlohmann::json g = io::read_json_file(path);
    VLM2MLA_CHECK(g.is_object(), FormatError, path, ": expected a JSON object");
    auto number = [&](const char* key, double fallback) {
      if (!g.contains(key) || g[key].is_null()) return fallback;
      VLM2MLA_CHECK(g[key].is_number(), FormatError, path, ": key '", key, "' must be a number");
      return g[key].get<double>();
    };
    if (g.contains("eos_token_id") && !g["eos_token_id"].is_null()) {
      o.eos_token_ids.clear();
      const auto& e = g["eos_token_id"];
      VLM2MLA_CHECK(e.is_number_integer() || e.is_array(), FormatError, path,
                    ": key 'eos_token_id' must be an integer or a list of integers");
      if (e.is_number_integer()) {
        o.eos_token_ids.push_back(e.get<int64_t>());
      } else {
        for (const auto& x : e) {
          VLM2MLA_CHECK(x.is_number_integer(), FormatError, path,
                        ": key 'eos_token_id' must hold integers");
          o.eos_token_ids.push_back(x.get<int64_t>());
        }
      }
    }
    if (g.contains("pad_token_id") && g["pad_token_id"].is_number_integer()) {
      pad = g["pad_token_id"].get<int64_t>();
    }
    if (g.contains("do_sample") && g["do_sample"].is_boolean()) o.sampling.do_sample = g["do_sample"];
    o.sampling.temperature = number("temperature", o.sampling.temperature);
    o.sampling.top_k = static_cast<int64_t>(number("top_k", static_cast<double>(o.sampling.top_k)));
    o.sampling.top_p = number("top_p", o.sampling.top_p);
    o.sampling.repetition_penalty = number("repetition_penalty", o.sampling.repetition_penalty);
  }
  o.pad_token_id = pad ? *pad : (o.eos_token_ids.empty() ? 0 : o.eos_token_ids.front());
  return o;
}

GenerateResult generate(const TextDecoder& model, const at::Tensor& input_ids,
                        const at::Tensor& attention_mask, const GenerateOptions& options) {
  return generate(model, text_prompt(input_ids, attention_mask), options);
}

namespace {

// The prompt's forward, whole or in chunks of `chunk` positions; returns the last chunk's hidden states.
at::Tensor prefill(const TextDecoder& model, const DecoderInput& in, KvCache& cache, int64_t chunk) {
  const int64_t t = in.position_ids.size(-1);
  if (chunk <= 0 || chunk >= t) return model.forward_hidden(in, &cache);
  at::Tensor hidden;
  for (int64_t from = 0; from < t; from += chunk) {
    const int64_t n = std::min(chunk, t - from);
    DecoderInput part;
    if (in.input_ids.defined()) part.input_ids = in.input_ids.narrow(1, from, n);
    if (in.inputs_embeds.defined()) part.inputs_embeds = in.inputs_embeds.narrow(1, from, n);
    part.position_ids = in.position_ids.narrow(-1, from, n);
    if (in.attention_mask.defined()) part.attention_mask = in.attention_mask.narrow(1, 0, from + n);
    if (in.image_mask.defined()) part.image_mask = in.image_mask.narrow(1, from, n);
    hidden = model.forward_hidden(part, &cache);  // [b, n, d]
  }
  return hidden;
}

}  // namespace

GenerateResult generate(const TextDecoder& model, const Prompt& prompt, const GenerateOptions& options) {
  VLM2MLA_CHECK(options.max_new_tokens >= 0, ArgumentError, "--max-new-tokens must be >= 0");
  const at::Tensor& ids = prompt.input_ids;
  const int64_t b = ids.size(0), t = ids.size(1);
  at::Tensor mask = prompt.attention_mask;
  check_token_ids(ids, model.config().vocab_size, "input_ids");

  Sampler sampler(options.sampling);
  std::unique_ptr<KvCache> cache_owner =
      model.make_kv_cache(b, t + std::max<int64_t>(options.max_new_tokens, 1), options.cache ? &*options.cache : nullptr);
  KvCache& cache = *cache_owner;
  at::Tensor eos = at::tensor(std::vector<int64_t>(options.eos_token_ids.begin(),
                                                   options.eos_token_ids.end()),
                              at::kLong);
  at::Tensor running = at::ones({b}, at::kBool);
  std::vector<at::Tensor> steps;  // [b] each
  at::Tensor seen = ids;          // prompt + generated, for the repetition penalty
  const bool mrope = prompt.position_ids.dim() == 3;

  GenerateResult result;
  auto t0 = std::chrono::steady_clock::now();
  DecoderInput in = prompt.decoder_input();
  at::Tensor next_pos = prompt.next_position.to(at::kLong).view({b, 1});  // [b, 1]
  // M-RoPE: [3, b, 1], each axis continuing from the prompt's last position on it.
  at::Tensor next_mrope = prompt.next_mrope_position.defined()
                              ? prompt.next_mrope_position.to(at::kLong).view({3, b, 1})
                              : next_pos.unsqueeze(0).expand({3, b, 1});
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor hidden = step == 0 ? prefill(model, in, cache, options.prefill_chunk)
                                  : model.forward_hidden(in, &cache);  // [b, s, d]
    at::Tensor logits = model.lm_head(hidden.narrow(1, hidden.size(1) - 1, 1)).squeeze(1);  // [b, V]
    at::Tensor tok = sampler.next(logits, seen);  // [b] CPU
    if (step == 0) {
      synchronize(model.device());
      result.prefill_seconds = seconds_since(t0);
      t0 = std::chrono::steady_clock::now();
    }
    tok = at::where(running, tok, at::full_like(tok, options.pad_token_id));
    at::Tensor before = running.clone();
    if (eos.numel() > 0) running = running.logical_and(at::isin(tok, eos).logical_not());
    steps.push_back(tok);
    seen = at::cat({seen, tok.unsqueeze(1)}, 1);
    if (options.on_step) options.on_step(tok, before);
    if (!running.any().item<bool>()) break;
    // Next step: the new token at the next position (M-RoPE: each axis's), the grown mask.
    mask = at::cat({mask, at::ones({b, 1}, at::kLong)}, 1);
    in.input_ids = tok.unsqueeze(1);
    in.inputs_embeds = at::Tensor();
    in.image_mask = at::Tensor();  // generated tokens are text
    in.position_ids = mrope ? next_mrope : next_pos;
    in.attention_mask = mask;
    next_pos = next_pos + 1;
    next_mrope = next_mrope + 1;
  }
  synchronize(model.device());
  result.decode_seconds = steps.size() > 1 ? seconds_since(t0) : 0.0;
  result.new_tokens = static_cast<int64_t>(steps.size());
  result.kv_bytes_allocated = cache.bytes_allocated();
  result.kv_bytes_per_token = cache.bytes_per_token();
  result.sequences = steps.empty() ? ids : at::cat({ids, at::stack(steps, 1)}, 1);
  return result;
}

}  // namespace vlm2mla
