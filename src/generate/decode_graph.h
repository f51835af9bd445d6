// CUDA graph capture and replay of one shape-static decode step (TextDecoder::forward_static): a step's
// few thousand kernel launches become one graph launch, so decode is no longer bound by the host's
// launch rate. libtorch's CUDA graphs (at::cuda::CUDAGraph) in builds whose libtorch has CUDA;
// elsewhere available() is false and run() throws.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>

namespace vlm2mla {

// Marks the range a CUDA profiler records when started with a capture range (for example
// `nsys profile --capture-range=cudaProfilerApi`): generate brackets its decode steps with it when the
// environment sets VLM2MLA_CUDA_PROFILE=1. No-op in builds without CUDA.
void cuda_profiler_range(bool start);

class DecodeGraph {
 public:
  // True when this build can capture CUDA graphs.
  static bool available();

  explicit DecodeGraph(at::Device device);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // Runs `step` once per call: the first call eagerly on the capture stream (libraries initialise
  // there), the second captures it and replays the capture, every later call replays it. `step` must
  // be shape-static (the same launches every time, no host reads of device values, no allocation that
  // outlives it except its outputs) and leave its outputs in tensors it assigns: after the capture
  // those alias the graph's memory, which each replay rewrites.
  void run(const std::function<void()>& step);

  // Calls that replayed the captured graph.
  int64_t replays() const { return replays_; }
  // Kernel launches in the captured step (the graph's kernel nodes, counted as the capture ends): what
  // fusions remove, exactly, where timings move within their noise. -1 before the capture.
  int64_t step_kernels() const { return step_kernels_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t calls_ = 0, replays_ = 0, step_kernels_ = -1;
};

}  // namespace vlm2mla
