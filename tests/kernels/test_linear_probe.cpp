// A disabled benchmark (test_kernels --gtest_also_run_disabled_tests --gtest_filter='*CublasLtAlgorithms*'): cuBLASLt's
// algorithms for Qwen2.5-VL-7B's decode projections (kernels/cuda/linear_probe.h) against at::linear, each in a CUDA
// graph over cold weights (the launches rotate through copies of the weights, 600 MB or more of them), side by side
// in one run. Does an algorithm other than the heuristic's first (libtorch's), e.g. one without split-K's reduction
// kernel, stream the small-batch projections faster? VLM2MLA_PROBE_ROWS (comma-separated, default 1,8,32) sets
// the rows m. The probe's result is checked against at::linear (bf16 tolerance), so that a wrong layout cannot
// pass for a fast one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#ifdef VLM2MLA_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/linear_probe.h"
#include "support/graph_timing.h"
#endif

namespace vlm2mla {
namespace {

#ifdef VLM2MLA_WITH_CUDA_KERNELS
std::vector<int64_t> probe_rows() {
  const char* env = std::getenv("VLM2MLA_PROBE_ROWS");
  std::vector<int64_t> rows;
  std::stringstream in(env && *env ? env : "1,8,32");
  for (std::string item; std::getline(in, item, ',');) rows.push_back(std::stoll(item));
  return rows;
}
#endif

TEST(LinearProbeCuda, DISABLED_CublasLtAlgorithms) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(7);
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
  at::Tensor workspace = at::empty({int64_t(64) << 20}, o.dtype(at::kByte));
  std::printf("[lt] %-8s %3s %-22s %5s %5s %6s %6s %4s %5s %9s %9s %8s\n", "shape", "m", "path", "algo", "tile",
              "stages", "splitk", "red", "waves", "ws KiB", "us", "GB/s");
  for (const int64_t m : probe_rows()) {
    for (const testing::ProjectionShape& s : testing::kQwen7bProjections) {
      const testing::ColdProjection cold = testing::cold_projection(s, m, o);
      const at::Tensor &w = cold.w, &b = cold.b, &x = cold.x;
      const int copies = cold.copies, reps = cold.reps;
      const double gb = cold.gb;
      const double t_linear = testing::graph_us([&](int i) { at::linear(x, w[i % copies], b); }, reps, stream);
      std::printf("[lt] %-8s %3ld %-22s %5s %5s %6s %6s %4s %5s %9s %9.1f %8.0f\n", s.name, long(m), "at::linear", "",
                  "", "", "", "", "", "", t_linear, gb / (t_linear * 1e-6));
      at::Tensor y = at::empty({m, s.n}, o);
      for (const uint32_t mask : {0u, kLinearProbeInPlace}) {
        LinearProbeArgs a;
        a.x = x.data_ptr();
        a.w = w.data_ptr();
        a.copies = copies;
        a.bias = s.bias ? b.data_ptr() : nullptr;
        a.y = y.data_ptr();
        a.m = m;
        a.n = s.n;
        a.k = s.k;
        a.workspace = workspace.data_ptr();
        a.workspace_bytes = size_t(workspace.numel());
        a.top = 16;
        a.reduction_mask = mask;
        a.reps = reps;
        a.stream = stream.stream();
        std::vector<LinearProbeAlgo> algos;
        try {
          algos = probe_linear_algos(a);
        } catch (const std::exception& e) {
          ADD_FAILURE() << s.name << " m " << m << ": " << e.what();
          continue;
        }
        bool any = false;
        for (const LinearProbeAlgo& p : algos) {
          const std::string path = std::string(mask ? "lt in-place #" : "lt #") + std::to_string(p.rank);
          if (p.us < 0) {
            std::printf("[lt] %-8s %3ld %-22s %5d %5d %6d %6d %4d %5.2f %9zu   failed: %s\n", s.name, long(m),
                        path.c_str(), p.algo_id, p.tile_id, p.stages_id, p.splitk, p.reduction, p.waves,
                        p.workspace / 1024, p.error.c_str());
            continue;
          }
          any = true;
          std::printf("[lt] %-8s %3ld %-22s %5d %5d %6d %6d %4d %5.2f %9zu %9.1f %8.0f %5.2fx\n", s.name, long(m),
                      path.c_str(), p.algo_id, p.tile_id, p.stages_id, p.splitk, p.reduction, p.waves,
                      p.workspace / 1024, p.us, gb / (p.us * 1e-6), t_linear / p.us);
        }
        if (any) {  // y: the last replay's, of weight copy (reps - 1) % copies
          c10::cuda::CUDAStreamGuard guard(stream);
          stream.synchronize();
          const at::Tensor want = at::linear(x, w[(reps - 1) % copies], b).to(at::kFloat);
          const double err = (y.to(at::kFloat) - want).abs().max().item<double>();
          const double mag = want.abs().max().item<double>();
          EXPECT_LE(err, 2e-2 * mag + 1e-3) << s.name << " m " << m << ": the probe's output is not x W^T (+ b)";
        }
      }
    }
  }
#else
  GTEST_SKIP() << "no CUDA kernels in this build";
#endif
}

}  // namespace
}  // namespace vlm2mla
