// A measurement tool, not a code path of the models: cuBLASLt's algorithms for one decode projection
// y[m, n] = x[m, k] W[n, k]^T (+ bias[n]) (bf16, float32 accumulation), each timed as a decode step runs it:
// launches captured in a CUDA graph, the weights cold (the launches rotate through `copies` weight matrices, so
// that they stream from DRAM and not from the L2). What it answers: whether an algorithm other than the
// heuristic's first (the one libtorch takes), e.g. one without split-K's separate reduction kernel, streams the
// small-batch projections faster (docs/KERNELS.md, "Small-batch steps"). Raw pointers, no libtorch; the caller
// allocates (tests/kernels/test_linear_probe.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vlm2mla {

// CUBLASLT_REDUCTION_SCHEME_INPLACE, for LinearProbeArgs::reduction_mask (callers need not include cublasLt.h):
// the algorithms without split-K or with its sums in the output buffer, no reduction kernel.
constexpr uint32_t kLinearProbeInPlace = 1;

struct LinearProbeAlgo {
  int rank = 0;             // its place in the heuristic's list
  int algo_id = -1;         // CUBLASLT_ALGO_CONFIG_ID
  int tile_id = -1;         // CUBLASLT_ALGO_CONFIG_TILE_ID
  int stages_id = -1;       // CUBLASLT_ALGO_CONFIG_STAGES_ID
  int splitk = -1;          // CUBLASLT_ALGO_CONFIG_SPLITK_NUM
  int reduction = -1;       // CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME
  float waves = 0.f;        // the heuristic's waves count
  size_t workspace = 0;     // bytes it asks for
  double us = -1.0;         // per launch, in a CUDA graph over cold weights; < 0: it failed (see error)
  std::string error;        // what failed, where it did
};

struct LinearProbeArgs {
  const void* x = nullptr;     // [m, k] bf16, rows contiguous
  const void* w = nullptr;     // `copies` matrices [n, k] bf16, one after another
  int copies = 1;
  const void* bias = nullptr;  // [n] bf16, or null
  void* y = nullptr;           // [m, n] bf16
  int64_t m = 0, n = 0, k = 0;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int top = 8;                   // algorithms asked of the heuristic
  uint32_t reduction_mask = 0;   // CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, 0: every scheme
  int reps = 100;                // launches a graph
  cudaStream_t stream = nullptr;  // a non-default stream (graph capture)
};

// The heuristic's algorithms for `a`, each timed (best of 5 graph replays). Throws std::runtime_error naming the
// cuBLASLt call where the setup (handle, descriptors, heuristic) fails; an algorithm that fails to run or to be
// captured is reported with its error instead.
std::vector<LinearProbeAlgo> probe_linear_algos(const LinearProbeArgs& a);

}  // namespace vlm2mla
