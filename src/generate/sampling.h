// Choosing the next token from logits, with transformers' processors and their order:
// repetition penalty, then (when sampling) temperature, top-k, top-p, then a multinomial draw.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace vlm2mla {

struct SamplingParams {
  bool do_sample = false;           // false: greedy (argmax)
  double temperature = 1.0;         // > 0
  int64_t top_k = 50;               // 0 disables (transformers' default is 50)
  double top_p = 1.0;               // in (0, 1]; 1 disables
  double repetition_penalty = 1.0;  // 1 disables; applies to greedy too, as in transformers
  uint64_t seed = 0;
};

// Throws ArgumentError naming the parameter when out of range.
void validate(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // logits [b, V] (any dtype, any device); seen [b, n] int64 tokens so far (prompt and generated)
  // for the repetition penalty (may be undefined). Returns the chosen ids [b] int64 on the CPU.
  at::Tensor next(const at::Tensor& logits, const at::Tensor& seen);

  // The processed scores before the draw (float32, -inf where filtered); exposed for tests.
  at::Tensor process(const at::Tensor& logits, const at::Tensor& seen) const;

 private:
  SamplingParams params_;
  at::Generator generator_;
};

}  // namespace vlm2mla
