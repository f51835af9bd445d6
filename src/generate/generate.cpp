#include "generate/generate.h"

#include <chrono>
#include <cstdlib>

#include "core/device_memory.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/names.h"
#include "generate/decode_graph.h"
#include "io/json_file.h"

namespace vlm2mla {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

const char* decode_mode_name(DecodeMode mode) {
  switch (mode) {
    case DecodeMode::kAuto: return "auto";
    case DecodeMode::kDynamic: return "dynamic";
    case DecodeMode::kStatic: return "static";
    case DecodeMode::kGraph: return "graph";
  }
  return "?";
}

DecodeMode decode_mode_from_name(const std::string& name, const std::string& what) {
  return parse_choice(name, what, "decode mode",
                      std::array{DecodeMode::kAuto, DecodeMode::kDynamic, DecodeMode::kStatic, DecodeMode::kGraph},
                      decode_mode_name);
}

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

// Prompt positions [from, from + n) of a decoder input (the mask up to from + n: cached + new).
DecoderInput slice(const DecoderInput& in, int64_t from, int64_t n) {
  DecoderInput part;
  if (in.input_ids.defined()) part.input_ids = in.input_ids.narrow(1, from, n);
  if (in.inputs_embeds.defined()) part.inputs_embeds = in.inputs_embeds.narrow(1, from, n);
  part.features = in.features;  // rows named by feature_rows
  if (in.feature_rows.defined()) part.feature_rows = in.feature_rows.narrow(1, from, n);
  part.position_ids = in.position_ids.narrow(-1, from, n);
  if (in.attention_mask.defined()) part.attention_mask = in.attention_mask.narrow(1, 0, from + n);
  if (in.image_mask.defined()) part.image_mask = in.image_mask.narrow(1, from, n);
  return part;
}

// The prompt's forward, whole or in chunks of `chunk` positions; returns the last chunk's hidden states.
// synthetic: random rows stand for every position but the last, which alone runs.
at::Tensor prefill(const TextDecoder& model, const DecoderInput& in, KvCache& cache, int64_t chunk, bool synthetic) {
  const int64_t t = in.position_ids.size(-1);
  if (synthetic) {
    fill_synthetic_prompt(model, in, cache);
    return model.forward_hidden(slice(in, t - 1, 1), &cache);
  }
  if (chunk <= 0 || chunk >= t) return model.forward_hidden(in, &cache);
  at::Tensor hidden;
  for (int64_t from = 0; from < t; from += chunk) {
    hidden = model.forward_hidden(slice(in, from, std::min(chunk, t - from)), &cache);  // [b, n, d]
  }
  return hidden;
}

// Left padding per row ([b] int64, CPU) when every row of the mask is zeros then ones; nullopt
// otherwise (shape-static steps take each row's keys as one range [start, past]).
std::optional<at::Tensor> left_padding(const at::Tensor& mask) {
  at::Tensor m = mask.to(at::kCPU).ne(0);
  at::Tensor pads = m.logical_not().sum(-1);  // [b]
  at::Tensor j = at::arange(m.size(1), at::kLong).view({1, -1});
  if (!m.eq(j >= pads.view({-1, 1})).all().item<bool>()) return std::nullopt;
  return pads;
}

DecodeMode resolve_decode_mode(DecodeMode asked, const TextDecoder& model, bool left_padded) {
  const bool device_ok = !model.load_options().layers_on_host;
  if (asked == DecodeMode::kAuto) {
    return model.device().is_cuda() && DecodeGraph::available() && left_padded && device_ok ? DecodeMode::kGraph
                                                                                             : DecodeMode::kDynamic;
  }
  if (asked != DecodeMode::kDynamic) {
    VLM2MLA_CHECK(left_padded, ArgumentError, "--decode ", decode_mode_name(asked),
                  ": the attention mask must be left padding only (zeros, then ones, per row)");
    VLM2MLA_CHECK(device_ok, ArgumentError, "--decode ", decode_mode_name(asked),
                  " needs the layers resident on the device");
  }
  VLM2MLA_CHECK(asked != DecodeMode::kGraph || (model.device().is_cuda() && DecodeGraph::available()),
                ArgumentError, "--decode graph needs a CUDA device and a libtorch with CUDA (device ",
                model.device().str(), ")");
  return asked;
}

}  // namespace

StaticDecodeSteps::StaticDecodeSteps(const TextDecoder& model, KvCache& cache, const at::Tensor& position,
                                     const at::Tensor& pads, bool graph)
    : model_(model), cache_(cache) {
  const at::Device dev = model.device();
  const int64_t b = cache.batch();
  in_.input_ids = at::zeros({b, 1}, at::TensorOptions().dtype(at::kLong).device(dev));
  // Own storage (never a view of the caller's tensors), dense: the steps move it on in place.
  in_.position_ids = position.to(at::kLong).contiguous().to(dev, /*non_blocking=*/false, /*copy=*/true);
  in_.past = at::full({1}, cache.length(), at::TensorOptions().dtype(at::kLong).device(dev));
  in_.start = pads.to(at::kLong).to(dev);
  if (graph) graph_ = std::make_unique<DecodeGraph>(dev);
}

StaticDecodeSteps::~StaticDecodeSteps() = default;

int64_t StaticDecodeSteps::step_kernels() const { return graph_ ? graph_->step_kernels() : -1; }

at::Tensor StaticDecodeSteps::step(const at::Tensor& tokens) {
  in_.input_ids.copy_(tokens.reshape({-1, 1}));
  auto body = [this] {
    logits_ = model_.lm_head(model_.forward_static(in_, cache_)).squeeze(1);  // [b, V]
    in_.past.add_(1);
    in_.position_ids.add_(1);
  };
  if (graph_) {
    graph_->run(body);
  } else {
    body();
  }
  cache_.advance(1);
  return logits_;
}

GenerateResult generate(const TextDecoder& model, const Prompt& prompt, const GenerateOptions& options) {
  VLM2MLA_CHECK(options.max_new_tokens >= 0, ArgumentError, "--max-new-tokens must be >= 0");
  const at::Tensor& ids = prompt.input_ids;
  const int64_t b = ids.size(0), t = ids.size(1);
  at::Tensor mask = prompt.attention_mask;
  check_token_ids(ids, model.config().vocab_size, "input_ids");

  Sampler sampler(options.sampling);
  // Capacity for every position, rounded up to a multiple of 64: static steps attend over the whole
  // capacity, and cuBLAS runs the [*, capacity] score products of a dense cache markedly slower when
  // that extent is not a multiple of 8 (measured on the H200: 21 against 14 ms per step at 32k x 8).
  const int64_t capacity = (t + std::max<int64_t>(options.max_new_tokens, 1) + 63) / 64 * 64;
  std::unique_ptr<KvCache> cache_owner = model.make_kv_cache(b, capacity, options.cache ? &*options.cache : nullptr);
  KvCache& cache = *cache_owner;
  const std::optional<at::Tensor> pads = left_padding(mask);
  const DecodeMode mode = resolve_decode_mode(options.decode, model, pads.has_value());
  // Steps write positions up to t + max_new_tokens - 2: static steps need them all in place up front.
  if (mode != DecodeMode::kDynamic) cache.reserve(capacity);
  std::unique_ptr<StaticDecodeSteps> static_steps;
  // VLM2MLA_CUDA_PROFILE=1: the decode steps (not the prefill) form the CUDA profiler's capture range.
  const char* profile_env = std::getenv("VLM2MLA_CUDA_PROFILE");
  const bool profile = model.device().is_cuda() && profile_env && std::string(profile_env) == "1";
  at::Tensor eos = at::tensor(std::vector<int64_t>(options.eos_token_ids.begin(),
                                                   options.eos_token_ids.end()),
                              at::kLong);
  at::Tensor running = at::ones({b}, at::kBool);
  int64_t generated = 0;  // new tokens so far
  // The prompt's tokens and mask, each step's column then written in place: a view of the first t + k
  // columns after k steps. (Concatenated anew each step, they copied [b, s] int64 twice a step, 67 MB each at
  // 256 x 32k: without those copies that H200 step went from 61.9 to 43.2 ms.)
  const int64_t total = t + options.max_new_tokens;
  at::Tensor seen_buf = at::empty({b, total}, at::kLong);  // prompt + generated, for the repetition penalty
  seen_buf.narrow(1, 0, t).copy_(ids);
  at::Tensor mask_buf = at::ones({b, total}, at::kLong);
  mask_buf.narrow(1, 0, t).copy_(mask);
  at::Tensor seen = seen_buf.narrow(1, 0, t);
  const bool mrope = prompt.position_ids.dim() == 3;

  GenerateResult result;
  auto t0 = std::chrono::steady_clock::now(), t_step = t0;
  DecoderInput in = prompt.decoder_input();
  at::Tensor next_pos = prompt.next_position.to(at::kLong).view({b, 1});  // [b, 1]
  // M-RoPE: [3, b, 1], each axis continuing from the prompt's last position on it.
  at::Tensor next_mrope = prompt.next_mrope_position.defined()
                              ? prompt.next_mrope_position.to(at::kLong).view({3, b, 1})
                              : next_pos.unsqueeze(0).expand({3, b, 1});
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor logits;  // [b, V]
    if (step > 0 && static_steps) {
      logits = static_steps->step(in.input_ids);
    } else {
      at::Tensor hidden = step == 0 ? prefill(model, in, cache, options.prefill_chunk, options.synthetic_cache)
                                    : model.forward_hidden(in, &cache);  // [b, s, d]
      logits = model.lm_head(hidden.narrow(1, hidden.size(1) - 1, 1)).squeeze(1);
    }
    at::Tensor tok = sampler.next(logits, seen);  // [b] CPU
    // The sampled tokens are on the host: the step's work is done.
    if (step == 0) {
      synchronize(model.device());
      result.prefill_seconds = seconds_since(t0);
      t0 = t_step = std::chrono::steady_clock::now();
    } else {
      result.step_seconds.push_back(seconds_since(t_step));
      t_step = std::chrono::steady_clock::now();
    }
    tok = at::where(running, tok, at::full_like(tok, options.pad_token_id));
    at::Tensor before = running.clone();
    if (eos.numel() > 0) running = running.logical_and(at::isin(tok, eos).logical_not());
    const int64_t n = t + ++generated;  // columns filled after this step
    seen_buf.select(1, n - 1).copy_(tok);
    seen = seen_buf.narrow(1, 0, n);
    if (options.on_step) options.on_step(tok, before);
    if (!running.any().item<bool>()) break;
    // Next step: the new token at the next position (M-RoPE: each axis's), the grown mask.
    mask = mask_buf.narrow(1, 0, n);
    in.input_ids = tok.unsqueeze(1);
    in.inputs_embeds = at::Tensor();
    in.features = at::Tensor();
    in.feature_rows = at::Tensor();
    in.image_mask = at::Tensor();  // generated tokens are text
    in.position_ids = mrope ? next_mrope : next_pos;
    in.attention_mask = mask;
    if (step == 0 && profile) cuda_profiler_range(true);
    if (mode != DecodeMode::kDynamic && !static_steps) {
      static_steps = std::make_unique<StaticDecodeSteps>(model, cache, in.position_ids, *pads, mode == DecodeMode::kGraph);
    }
    next_pos = next_pos + 1;
    next_mrope = next_mrope + 1;
  }
  synchronize(model.device());
  if (profile) cuda_profiler_range(false);
  result.decode_seconds = generated > 1 ? seconds_since(t0) : 0.0;
  result.new_tokens = generated;
  result.kv_bytes_allocated = cache.bytes_allocated();
  result.kv_bytes_per_token = cache.bytes_per_token();
  result.decode = mode;
  if (static_steps) result.step_kernels = static_steps->step_kernels();
  result.sequences = seen.contiguous();  // the prompt and every new token (a copy unless the buffer is full)
  return result;
}

void fill_synthetic_prompt(const TextDecoder& model, const DecoderInput& in, KvCache& cache) {
  const int64_t t = in.position_ids.size(-1);
  cache.fill_synthetic(t - 1, in.input_ids.defined() ? model.visual_mask(in.input_ids.narrow(1, 0, t - 1))
                                                     : at::Tensor());
}

}  // namespace vlm2mla
