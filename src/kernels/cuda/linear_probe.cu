// cuBLASLt's algorithms for one decode projection, timed as a decode step runs them (linear_probe.h).
#include "kernels/cuda/linear_probe.h"

#include <cublasLt.h>
#include <dlfcn.h>

#include <algorithm>
#include <stdexcept>
#include <type_traits>

namespace vlm2mla {
static_assert(kLinearProbeInPlace == uint32_t(CUBLASLT_REDUCTION_SCHEME_INPLACE), "linear_probe.h's constant");
namespace {

// cuBLASLt's entry points, looked up in the copy this process has already loaded (libtorch's CUDA libraries load
// theirs): no link-time dependency, so that the binaries never bring a second, possibly older, copy beside
// libtorch's (whose cuBLAS must meet its own cuBLASLt).
// (one list: each entry point's field and symbol)
#define VLM2MLA_LT_FUNCTIONS(X)                                                                            \
  X(create, cublasLtCreate) X(destroy, cublasLtDestroy) X(desc_create, cublasLtMatmulDescCreate)          \
  X(desc_destroy, cublasLtMatmulDescDestroy) X(desc_set, cublasLtMatmulDescSetAttribute)                  \
  X(layout_create, cublasLtMatrixLayoutCreate) X(layout_destroy, cublasLtMatrixLayoutDestroy)             \
  X(pref_create, cublasLtMatmulPreferenceCreate) X(pref_destroy, cublasLtMatmulPreferenceDestroy)         \
  X(pref_set, cublasLtMatmulPreferenceSetAttribute) X(heuristic, cublasLtMatmulAlgoGetHeuristic)          \
  X(config_get, cublasLtMatmulAlgoConfigGetAttribute) X(matmul, cublasLtMatmul)

struct LtApi {
#define VLM2MLA_LT_FIELD(field, symbol) decltype(&symbol) field = nullptr;
  VLM2MLA_LT_FUNCTIONS(VLM2MLA_LT_FIELD)
#undef VLM2MLA_LT_FIELD
};

const LtApi& lt_api() {
  static const LtApi api = [] {
    void* lib = nullptr;
    for (const char* name : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
      if (lib) break;
    }
    if (!lib)
      throw std::runtime_error("probe_linear_algos: no cuBLASLt loaded in this process (libtorch's CUDA libraries "
                               "load it; a CPU libtorch does not)");
    LtApi a;
    auto get = [&](auto& fn, const char* symbol) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
      if (!fn) throw std::runtime_error(std::string("probe_linear_algos: cuBLASLt has no ") + symbol);
    };
#define VLM2MLA_LT_LOOKUP(field, symbol) get(a.field, #symbol);
    VLM2MLA_LT_FUNCTIONS(VLM2MLA_LT_LOOKUP)
#undef VLM2MLA_LT_LOOKUP
    return a;
  }();
  return api;
}
#undef VLM2MLA_LT_FUNCTIONS

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("probe_linear_algos: ") + what + " failed (cublasStatus " +
                             std::to_string(int(s)) + ")");
}

// One attribute of an algorithm's configuration as an integer (-1 where cuBLASLt does not report it).
int64_t config_attr(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  size_t size = 0;
  if (lt_api().config_get(&algo, attr, nullptr, 0, &size) != CUBLAS_STATUS_SUCCESS || size == 0 ||
      size > 8)
    return -1;
  uint64_t v = 0;
  if (lt_api().config_get(&algo, attr, &v, size, &size) != CUBLAS_STATUS_SUCCESS) return -1;
  if (size == 4) return int64_t(int32_t(uint32_t(v)));  // (the 32-bit attributes, little-endian)
  return int64_t(v);
}

// The cuBLASLt objects of one probe, released on every path.
struct Lt {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Lt() {
    if (pref) lt_api().pref_destroy(pref);
    if (d) lt_api().layout_destroy(d);
    if (b) lt_api().layout_destroy(b);
    if (a) lt_api().layout_destroy(a);
    if (op) lt_api().desc_destroy(op);
    if (handle) lt_api().destroy(handle);
  }
};

// `reps` launches of one algorithm captured as a CUDA graph, best of 5 replays: microseconds a launch, or an error.
double time_algo(const LinearProbeArgs& a, const Lt& lt, const cublasLtMatmulAlgo_t& algo, std::string& error) {
  const float alpha = 1.f, beta = 0.f;
  const size_t matrix_bytes = size_t(a.n) * size_t(a.k) * 2;
  auto launch = [&](int i) {
    const void* w = static_cast<const char*>(a.w) + size_t(i % std::max(a.copies, 1)) * matrix_bytes;
    return lt_api().matmul(lt.handle, lt.op, &alpha, w, lt.a, a.x, lt.b, &beta, a.y, lt.d, a.y, lt.d, &algo,
                          a.workspace, a.workspace_bytes, a.stream);
  };
  if (launch(0) != CUBLAS_STATUS_SUCCESS) {  // warm-up, outside the capture
    error = "cublasLtMatmul refused it";
    return -1.0;
  }
  if (cudaStreamSynchronize(a.stream) != cudaSuccess) {
    error = std::string("the warm-up launch failed: ") + cudaGetErrorString(cudaGetLastError());
    return -1.0;
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (cudaStreamBeginCapture(a.stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    error = std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(cudaGetLastError());
    return -1.0;
  }
  bool launched = true;
  for (int i = 0; i < a.reps && launched; ++i) launched = launch(i) == CUBLAS_STATUS_SUCCESS;
  const cudaError_t ended = cudaStreamEndCapture(a.stream, &graph);  // (ends the capture on every path)
  if (!launched || ended != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
    error = launched ? std::string("capturing it: ") + cudaGetErrorString(cudaGetLastError())
                     : "cublasLtMatmul refused it inside a capture";
    if (graph) cudaGraphDestroy(graph);
    return -1.0;
  }
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  float best = 1e30f;
  cudaGraphLaunch(exec, a.stream);  // warm-up replay
  for (int t = 0; t < 5; ++t) {
    cudaEventRecord(e0, a.stream);
    cudaGraphLaunch(exec, a.stream);
    cudaEventRecord(e1, a.stream);
    cudaEventSynchronize(e1);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, e0, e1);
    best = std::min(best, ms);
  }
  const cudaError_t err = cudaGetLastError();
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    error = std::string("replaying it: ") + cudaGetErrorString(err);
    return -1.0;
  }
  return 1000.0 * best / a.reps;
}

}  // namespace

std::vector<LinearProbeAlgo> probe_linear_algos(const LinearProbeArgs& a) {
  if (!a.x || !a.w || !a.y || a.m <= 0 || a.n <= 0 || a.k <= 0 || a.reps <= 0 || a.top <= 0 || !a.stream)
    throw std::runtime_error("probe_linear_algos: x, w, y, positive sizes, reps and top, and a stream are needed");
  Lt lt;
  check(lt_api().create(&lt.handle), "cublasLtCreate");
  check(lt_api().desc_create(&lt.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  // column-major: D [n, m] = W^T' (W row-major [n, k] is column-major [k, n], transposed) times x^T ([k, m])
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  check(lt_api().desc_set(lt.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)), "TRANSA");
  check(lt_api().desc_set(lt.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)), "TRANSB");
  if (a.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    check(lt_api().desc_set(lt.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
          "EPILOGUE");
    check(lt_api().desc_set(lt.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a.bias, sizeof(a.bias)),
          "BIAS_POINTER");
  }
  check(lt_api().layout_create(&lt.a, CUDA_R_16BF, uint64_t(a.k), uint64_t(a.n), a.k), "the weights' layout");
  check(lt_api().layout_create(&lt.b, CUDA_R_16BF, uint64_t(a.k), uint64_t(a.m), a.k), "the inputs' layout");
  check(lt_api().layout_create(&lt.d, CUDA_R_16BF, uint64_t(a.n), uint64_t(a.m), a.n), "the outputs' layout");
  check(lt_api().pref_create(&lt.pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = a.workspace_bytes;
  check(lt_api().pref_set(lt.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
        "MAX_WORKSPACE_BYTES");
  if (a.reduction_mask != 0) {
    const uint32_t mask = a.reduction_mask;
    check(lt_api().pref_set(lt.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask,
                                               sizeof(mask)),
          "REDUCTION_SCHEME_MASK");
  }
  std::vector<cublasLtMatmulHeuristicResult_t> found(size_t(a.top));
  int n_found = 0;
  check(lt_api().heuristic(lt.handle, lt.op, lt.a, lt.b, lt.d, lt.d, lt.pref, a.top, found.data(),
                                       &n_found),
        "cublasLtMatmulAlgoGetHeuristic");
  std::vector<LinearProbeAlgo> out;
  for (int i = 0; i < n_found; ++i) {
    const cublasLtMatmulHeuristicResult_t& r = found[size_t(i)];
    LinearProbeAlgo p;
    p.rank = i;
    p.waves = r.wavesCount;
    p.workspace = r.workspaceSize;
    if (r.state != CUBLAS_STATUS_SUCCESS) {
      p.error = "the heuristic's result state " + std::to_string(int(r.state));
      out.push_back(p);
      continue;
    }
    p.algo_id = int(config_attr(r.algo, CUBLASLT_ALGO_CONFIG_ID));
    p.tile_id = int(config_attr(r.algo, CUBLASLT_ALGO_CONFIG_TILE_ID));
    p.stages_id = int(config_attr(r.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID));
    p.splitk = int(config_attr(r.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM));
    p.reduction = int(config_attr(r.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME));
    if (r.workspaceSize > a.workspace_bytes) {
      p.error = "needs " + std::to_string(r.workspaceSize) + " bytes of workspace";
    } else {
      p.us = time_algo(a, lt, r.algo, p.error);
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace vlm2mla
