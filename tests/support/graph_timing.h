// Shared by the kernels' tests and disabled benchmarks: a call's output replayed from a CUDA graph, a GPU time per
// call measured inside one, and the decode projections of Qwen2.5-VL-7B. Include only where VLM2MLA_WITH_CUDA_KERNELS
// is defined.
#pragma once

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace vlm2mla::testing {

// f() (returning a tensor) captured as a CUDA graph on a pool stream and replayed once: the replay's output. Waits for
// the device first (the inputs were made on the current stream).
template <class F>
at::Tensor replayed_in_a_graph(F&& f) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
  c10::cuda::CUDAStreamGuard guard(stream);
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  at::Tensor out = f();
  graph.capture_end();
  graph.replay();
  stream.synchronize();
  return out;
}

// GPU time a call of f(i), i = 0 .. reps - 1 captured as one CUDA graph on `stream`, best of 5 replays, in µs.
template <class F>
double graph_us(F&& f, int reps, const c10::cuda::CUDAStream& stream) {
  c10::cuda::CUDAStreamGuard guard(stream);
  f(0);  // warm-up (cuBLAS handles and workspaces outside the capture)
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  for (int i = 0; i < reps; ++i) f(i);
  graph.capture_end();
  graph.replay();
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  float best = 1e30f;
  for (int t = 0; t < 5; ++t) {
    cudaEventRecord(e0, stream.stream());
    graph.replay();
    cudaEventRecord(e1, stream.stream());
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    best = std::min(best, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 1000.0 * best / reps;
}

// A projection of Qwen2.5-VL-7B's decoder: weight [n, k], with a bias or not.
struct ProjectionShape {
  const char* name;
  int64_t n, k;
  bool bias;
};
inline constexpr ProjectionShape kQwen7bProjections[] = {{"qkv", 4608, 3584, true},
                                                        {"o_proj", 3584, 3584, false},
                                                        {"gate_up", 37888, 3584, false},
                                                        {"down", 3584, 18944, false},
                                                        {"lm_head", 152064, 3584, false}};

// A projection's benchmark inputs over cold weights: `copies` weight copies (600 MB or more of them, so that the
// launches of a graph that rotates through them read DRAM, not the L2), a bias where the shape has one, x [m, k];
// `reps` launches a graph (fewer for large weights), `gb` one copy's size.
struct ColdProjection {
  at::Tensor w, b, x;  // [copies, n, k], [n] or undefined, [m, k]
  int copies = 1, reps = 100;
  double gb = 0;
};
inline ColdProjection cold_projection(const ProjectionShape& s, int64_t m, const at::TensorOptions& o) {
  ColdProjection p;
  p.gb = double(s.n) * s.k * 2 / 1e9;
  p.copies = int(std::max<int64_t>(1, int64_t(std::ceil(0.6 / p.gb))));
  p.reps = p.gb > 0.1 ? 20 : 100;
  p.w = at::randn({p.copies, s.n, s.k}, o) / 64;
  p.b = s.bias ? at::randn({s.n}, o) : at::Tensor();
  p.x = at::randn({m, s.k}, o);
  return p;
}

}  // namespace vlm2mla::testing
