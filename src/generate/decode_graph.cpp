#include "generate/decode_graph.h"

#include <vector>

#include "core/error.h"

#ifdef VLM2MLA_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <cuda_runtime_api.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_profiler_api.h>
#endif

namespace vlm2mla {

#ifdef VLM2MLA_WITH_CUDA

struct DecodeGraph::Impl {
  at::Device device;
  at::cuda::CUDAGraph graph;
  explicit Impl(at::Device d) : device(d) {}
};

bool DecodeGraph::available() { return true; }

namespace {

// The kernel nodes of the graph `stream` is capturing (-1 when the runtime cannot say).
int64_t captured_kernels(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaGraph_t graph = nullptr;
#if CUDART_VERSION >= 13000
  cudaError_t err = cudaStreamGetCaptureInfo(stream, &status, nullptr, &graph);
#else
  cudaError_t err = cudaStreamGetCaptureInfo_v2(stream, &status, nullptr, &graph);
#endif
  size_t n = 0;
  if (err != cudaSuccess || status != cudaStreamCaptureStatusActive || !graph ||
      cudaGraphGetNodes(graph, nullptr, &n) != cudaSuccess) {
    cudaGetLastError();  // a query, not a failure of the step
    return -1;
  }
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0 && cudaGraphGetNodes(graph, nodes.data(), &n) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  int64_t kernels = 0;
  for (size_t i = 0; i < n; ++i) {
    cudaGraphNodeType type = cudaGraphNodeTypeEmpty;
    if (cudaGraphNodeGetType(nodes[i], &type) == cudaSuccess && type == cudaGraphNodeTypeKernel) ++kernels;
  }
  return kernels;
}

}  // namespace

void cuda_profiler_range(bool start) {
  c10::cuda::device_synchronize();
  if (start) {
    cudaProfilerStart();
  } else {
    cudaProfilerStop();
  }
}

DecodeGraph::DecodeGraph(at::Device device) {
  VLM2MLA_CHECK(device.is_cuda(), ArgumentError, "CUDA graphs need a CUDA device, got ", device);
  if (!device.has_index()) device = at::Device(at::kCUDA, c10::cuda::current_device());
  impl_ = std::make_unique<Impl>(device);
}

DecodeGraph::~DecodeGraph() = default;

void DecodeGraph::run(const std::function<void()>& step) {
  if (calls_ >= 2) {
    impl_->graph.replay();  // on the current stream
    ++calls_, ++replays_;
    return;
  }
  c10::cuda::CUDAGuard guard(impl_->device);
  // Graphs are captured on a side stream. It starts after everything queued so far and the current
  // stream resumes after it: two device synchronisations per generation, at the first two steps.
  c10::cuda::device_synchronize();
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, impl_->device.index());
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    if (calls_ == 0) {
      step();
    } else {
      impl_->graph.capture_begin();
      try {
        step();
        step_kernels_ = captured_kernels(side.stream());
      } catch (...) {
        try {
          impl_->graph.capture_end();
        } catch (...) {
        }
        throw;
      }
      impl_->graph.capture_end();
    }
  }
  c10::cuda::device_synchronize();
  if (calls_ == 1) {
    impl_->graph.replay();
    ++replays_;
  }
  ++calls_;
}

#else  // no CUDA in this libtorch

struct DecodeGraph::Impl {};

bool DecodeGraph::available() { return false; }

void cuda_profiler_range(bool) {}

DecodeGraph::DecodeGraph(at::Device device) {
  throw ArgumentError(detail::concat("CUDA graphs need a libtorch with CUDA; this build has none (device ",
                                     device.str(), ")"));
}

DecodeGraph::~DecodeGraph() = default;

void DecodeGraph::run(const std::function<void()>&) {}

#endif

}  // namespace vlm2mla
