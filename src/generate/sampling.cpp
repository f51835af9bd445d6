#include "generate/sampling.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace vlm2mla {

void validate(const SamplingParams& p) {
  VLM2MLA_CHECK(p.temperature > 0, ArgumentError, "--temperature must be > 0, got ", p.temperature);
  VLM2MLA_CHECK(p.top_k >= 0, ArgumentError, "--top-k must be >= 0, got ", p.top_k);
  VLM2MLA_CHECK(p.top_p > 0 && p.top_p <= 1, ArgumentError, "--top-p must be in (0, 1], got ",
                p.top_p);
  VLM2MLA_CHECK(p.repetition_penalty > 0, ArgumentError, "--repetition-penalty must be > 0, got ",
                p.repetition_penalty);
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params), generator_(at::detail::createCPUGenerator(params.seed)) {
  validate(params_);
}

at::Tensor Sampler::process(const at::Tensor& logits, const at::Tensor& seen) const {
  at::Tensor scores = logits.to(at::kCPU).to(at::kFloat).clone();  // [b, V]
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (params_.repetition_penalty != 1.0 && seen.defined() && seen.numel() > 0) {
    at::Tensor idx = seen.to(at::kCPU).to(at::kLong);
    at::Tensor s = scores.gather(1, idx);
    s = at::where(s < 0, s * params_.repetition_penalty, s / params_.repetition_penalty);
    scores.scatter_(1, idx, s);
  }
  if (!params_.do_sample) return scores;
  if (params_.temperature != 1.0) scores = scores / params_.temperature;
  const int64_t vocab = scores.size(1);
  if (params_.top_k > 0 && params_.top_k < vocab) {
    at::Tensor kth = std::get<0>(scores.topk(params_.top_k, -1)).narrow(1, params_.top_k - 1, 1);
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (params_.top_p < 1.0) {
    // Drop the low-probability tail whose mass is <= 1 - top_p; keep at least the best token.
    auto sorted = scores.sort(-1, /*descending=*/false);
    at::Tensor sorted_logits = std::get<0>(sorted), sorted_idx = std::get<1>(sorted);
    at::Tensor cum = sorted_logits.softmax(-1).cumsum(-1);
    at::Tensor remove_sorted = cum <= (1.0 - params_.top_p);
    remove_sorted.narrow(1, vocab - 1, 1).fill_(false);
    at::Tensor remove = remove_sorted.scatter(1, sorted_idx, remove_sorted);
    scores = scores.masked_fill(remove, neg_inf);
  }
  return scores;
}

at::Tensor Sampler::next(const at::Tensor& logits, const at::Tensor& seen) {
  // Plain greedy: argmax where the logits are, move only the ids.
  if (!params_.do_sample && params_.repetition_penalty == 1.0) return logits.argmax(-1).to(at::kCPU);
  at::Tensor scores = process(logits, seen);
  if (!params_.do_sample) return scores.argmax(-1);
  at::Tensor probs = scores.softmax(-1);
  return at::multinomial(probs, 1, /*replacement=*/false, generator_).squeeze(1);
}

}  // namespace vlm2mla
