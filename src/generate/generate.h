// Autoregressive generation with transformers' semantics: left-padded batches take position ids from
// the attention mask (cumsum - 1), finished rows are filled with the pad id, generation stops when
// every row has produced an end-of-sequence token or max_new_tokens is reached.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "generate/sampling.h"
#include "models/decoder.h"

namespace vlm2mla {

// How decode steps run: dynamic (forward_hidden per step: shapes grow with the cache, every length read
// on the host), static (TextDecoder::forward_static: shapes fixed by the cache's capacity, lengths on
// the device), graph (static steps captured once as a CUDA graph and replayed), or auto: graph on CUDA
// where the build has CUDA graphs and the batch is left-padded, else dynamic.
enum class DecodeMode { kAuto, kDynamic, kStatic, kGraph };
const char* decode_mode_name(DecodeMode mode);
DecodeMode decode_mode_from_name(const std::string& name, const std::string& what);  // ArgumentError

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;
  // How the KV cache stores its rows (--kv-cache); unset: the compute dtype.
  std::optional<CacheSpec> cache;
  // Prefill in chunks of this many prompt positions (0: the whole prompt in one forward), so that long
  // prompts of large batches fit in memory.
  int64_t prefill_chunk = 0;
  DecodeMode decode = DecodeMode::kAuto;
  // Benchmarks only: the cache starts with random rows for every prompt position but the last
  // (KvCache::fill_synthetic) and only the last prompt token runs, so long contexts of large batches
  // can be timed without their prefill. The generated tokens are meaningless; decode speed is not.
  bool synthetic_cache = false;
  // Called after each step with the new token of every row ([b] int64, CPU) and which rows were
  // still running before the step ([b] bool).
  std::function<void(const at::Tensor& tokens, const at::Tensor& running)> on_step;
};

// What GenerateOptions::synthetic_cache does in place of the prefill: every prompt position but the last
// ([b, t] input) holds random rows in the (empty) cache, committed, with the prompt's image positions as image
// tokens for two-set (md) models (TextDecoder::visual_mask), as a prompt that ran would have left them.
void fill_synthetic_prompt(const TextDecoder& model, const DecoderInput& in, KvCache& cache);

// Defaults as transformers takes them: generation_config.json in `model_dir` when present (eos,
// pad, do_sample, temperature, top_k, top_p, repetition_penalty), else config.json's ids; pad falls
// back to the first eos id.
GenerateOptions load_generate_defaults(const std::string& model_dir, const TextConfig& config);

struct GenerateResult {
  at::Tensor sequences;  // [b, t + n] int64: prompt then new tokens (n <= max_new_tokens)
  int64_t new_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  std::vector<double> step_seconds;  // each decode step's wall time (token to token, after the prefill)
  int64_t kv_bytes_allocated = 0;  // bytes of the cache tensors at the end of the run
  int64_t kv_bytes_per_token = 0;  // cache bytes one position costs, all layers
  DecodeMode decode = DecodeMode::kDynamic;  // how the decode steps ran (auto resolved)
  int64_t step_kernels = -1;  // graph mode: kernel launches in the captured decode step (else -1)
};

class DecodeGraph;

// Decode steps in shape-static form (TextDecoder::forward_static), replayed as a CUDA graph with
// `graph`: the step's inputs live on the device and each step moves them on in place. generate runs its
// static and graph modes through this; the tests tie it to dynamic steps.
class StaticDecodeSteps {
 public:
  // cache: filled up to its length, with room for every step (KvCache::reserve); position: the first
  // step's position ids, [b, 1] or [3, b, 1] (M-RoPE); pads: [b] each row's left padding.
  StaticDecodeSteps(const TextDecoder& model, KvCache& cache, const at::Tensor& position, const at::Tensor& pads,
                    bool graph);
  ~StaticDecodeSteps();
  StaticDecodeSteps(const StaticDecodeSteps&) = delete;
  StaticDecodeSteps& operator=(const StaticDecodeSteps&) = delete;

  // Logits [b, V] of the next token after `tokens` ([b] or [b, 1] int64), committed to the cache. With a
  // graph the tensor aliases the graph's memory: the next step rewrites it.
  at::Tensor step(const at::Tensor& tokens);
  // With a graph, the kernel launches of the captured step (DecodeGraph::step_kernels), else -1.
  int64_t step_kernels() const;

 private:
  const TextDecoder& model_;
  KvCache& cache_;
  StaticDecodeInput in_;
  at::Tensor logits_;
  std::unique_ptr<DecodeGraph> graph_;
};

// From a prepared prompt (text or multimodal: embeddings and M-RoPE positions included).
GenerateResult generate(const TextDecoder& model, const Prompt& prompt, const GenerateOptions& options);

// Text only: input_ids [b, t] int64; attention_mask [b, t] (nonzero = token, zero = left padding)
// or undefined.
GenerateResult generate(const TextDecoder& model, const at::Tensor& input_ids,
                        const at::Tensor& attention_mask, const GenerateOptions& options);

}  // namespace vlm2mla
