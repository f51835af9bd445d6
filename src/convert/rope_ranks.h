// RoPE-pair ranks: which frequency pairs of each (layer, kv head) keep RoPE under partial RoPE
// (METHOD.md section 3).
//
// Layout (the authors' .pth files and ours): rank is uint8 [layers, n_kv, head_dim]; each row holds a
// permutation of 0..head_dim/2-1 written twice (dims k and k + head_dim/2 belong to pair k in the
// rotate_half layout); rank 0 = most important; a pair is kept for r pairs when rank < r.
// Our files are safetensors: tensor "rope_rank" (U8), optional "score" (F32 [layers, n_kv, head_dim/2],
// higher = more important) and metadata {"format": "vlm2mla-rope-ranks", "strategy", "source"}.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace vlm2mla::convert {

struct RopeRanks {
  at::Tensor rank;       // uint8 [layers, n_kv, head_dim]: a permutation of 0..head_dim/2-1, twice
  at::Tensor score;      // float32 [layers, n_kv, head_dim/2], or undefined (fixed strategies, .pth)
  std::string source;    // where the ranks came from: a path, or "fixed:<strategy>"
  std::string strategy;  // "high", "low", "uniform", "scores", "2-norm", "mkl", ... or "" when unknown

  int64_t layers() const { return rank.size(0); }
  int64_t n_kv() const { return rank.size(1); }
  int64_t head_dim() const { return rank.size(2); }
};

// Reads a rank file: our .safetensors, or the authors' .pth (a single uint8 tensor). Checks that the
// ranks are a uint8 3-D tensor whose rows are each a permutation written twice (FormatError naming
// the file otherwise). Other extensions: ArgumentError.
RopeRanks read_rope_ranks(const std::string& path);

// Checks the shape [layers, n_kv, head_dim] (and the score's [layers, n_kv, head_dim/2] when present)
// and that every row is a permutation of 0..head_dim/2-1 written twice. FormatError naming `what`
// (usually the file), the expected and found shape, or the first bad (layer, head) and why.
void validate_rope_ranks(const RopeRanks& ranks, int64_t layers, int64_t n_kv, int64_t head_dim,
                         const std::string& what);

// Writes ranks (and the score when defined) as safetensors, atomically.
void write_rope_ranks(const std::string& path, const RopeRanks& ranks);

// bool [layers, n_kv, head_dim/2]: pair k of (layer, head) is kept (rank < r).
// ArgumentError unless 0 < r <= head_dim/2.
at::Tensor kept_pairs(const RopeRanks& ranks, int64_t r);

// Ranks from scores [layers, n_kv, head_dim/2] (higher = more important): per row a stable descending
// sort, so equal scores rank the lower pair index first. The score is kept (as float32).
// ArgumentError on a wrong shape, non-finite scores or head_dim/2 > 256.
RopeRanks ranks_from_scores(const at::Tensor& score);

// The score-free strategies of METHOD.md section 3, for r kept pairs of head_dim/2:
//   "high":    pairs 0..r-1;   "low": pairs head_dim/2-r..head_dim/2-1;
//   "uniform": pairs floor(i * head_dim / (2r)) for i in 0..r-1.
// The kept pairs get ranks 0..r-1 in ascending pair index, the other pairs ranks r..head_dim/2-1 in
// ascending pair index; so kept_pairs(result, r) is exactly the strategy's set for this r (for
// another r' it is "the first r' kept pairs", which for "low" and "uniform" is not the strategy's set
// for r'). Every (layer, head) gets the same row. ArgumentError on an unknown strategy or bad sizes.
RopeRanks fixed_ranks(const std::string& strategy, int64_t layers, int64_t n_kv, int64_t head_dim, int64_t r);

}  // namespace vlm2mla::convert
