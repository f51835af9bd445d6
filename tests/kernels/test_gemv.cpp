// The skinny GEMM kernel (kernels/ops.h fused_linear, kernels/cuda/gemv): where it is usable and why
// not, and on a CUDA device against its twin, the libtorch steps it replaces ([residual +] at::linear of x,
// or of silu(gate) * up), over token counts on both sides of its 8-token tiles, widths that are and are not
// multiples of its row and k blocks, strided views, bias and residual, bf16 and fp16. Plus a disabled
// benchmark against cuBLAS on Qwen2.5-VL-7B's decode shapes (test_kernels --gtest_also_run_disabled_tests
// --gtest_filter='*GemvBandwidth*').
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"

#ifdef VLM2MLA_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace vlm2mla {
namespace {

bool cuda_ready() { return at::hasCUDA() && mla_decode_has_cuda(); }

// The libtorch steps the kernel computes in one launch.
at::Tensor steps(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& residual,
                 const at::Tensor& up) {
  at::Tensor in = up.defined() ? at::silu(x) * up : x;
  at::Tensor y = at::linear(in, w, b);
  return residual.defined() ? residual + y : y;
}

TEST(FusedLinear, CpuTensorsAreNotUsableAndSayWhy) {
  at::Tensor x = at::randn({2, 16}), w = at::randn({4, 16});
  const char* why = fused_linear_unusable(x, w);
  ASSERT_NE(why, nullptr);
  try {
    fused_linear(x, w);
    ADD_FAILURE() << "expected an ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("fused_linear"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

TEST(FusedLinearCuda, RefusalsNameTheirReason) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor x = at::randn({3, 64}, bf), w = at::randn({40, 64}, bf);
  EXPECT_EQ(fused_linear_unusable(x, w), nullptr);
  auto expect = [](const char* why, const std::string& part) {
    ASSERT_NE(why, nullptr) << "expected a refusal naming " << part;
    EXPECT_NE(std::string(why).find(part), std::string::npos) << why;
  };
  expect(fused_linear_unusable(x.cpu(), w), "CUDA");
  expect(fused_linear_unusable(x.to(at::kFloat), w.to(at::kFloat)), "bf16 or fp16");
  expect(fused_linear_unusable(x, w.to(at::kHalf)), "dtype");
  expect(fused_linear_unusable(at::randn({3, 60}, bf), at::randn({40, 60}, bf)), "multiple of 8");
  expect(fused_linear_unusable(at::randn({33, 64}, bf), w), "32");
  expect(fused_linear_unusable(at::randn({3, 72}, bf).narrow(1, 1, 64), w), "aligned");
  expect(fused_linear_unusable(x, w.t().contiguous().t()), "weight");
  expect(fused_linear_unusable(x, w, at::randn({41}, bf)), "bias");
  expect(fused_linear_unusable(x, w, {}, at::randn({3, 41}, bf)), "residual");
  expect(fused_linear_unusable(x, w, {}, {}, at::randn({2, 64}, bf)), "up");
  expect(fused_linear_unusable(at::randn({3, 64}, bf).requires_grad_(), w), "grad");
  try {
    fused_linear(x.to(at::kFloat), w.to(at::kFloat));
    ADD_FAILURE() << "expected an ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("bf16 or fp16"), std::string::npos) << e.what();
  }
}

TEST(FusedLinearCuda, EqualsTheLibtorchSteps) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(11);
  struct Case {
    int64_t m, n, k;
    bool bias, residual, swiglu, strided;
    at::ScalarType dtype;
  };
  std::vector<Case> cases;
  for (int64_t m : {1, 3, 8, 9, 16, 17, 32}) {
    cases.push_back({m, 300, 264, true, false, false, false, at::kBFloat16});
    cases.push_back({m, 17, 40, false, true, false, true, at::kBFloat16});
    cases.push_back({m, 1, 8, true, true, true, false, at::kHalf});
    cases.push_back({m, 3584, 3584, false, true, false, true, at::kBFloat16});   // o_proj + residual
    cases.push_back({m, 3584, 2368, true, true, true, true, at::kBFloat16});     // down from gate_up
    cases.push_back({m, 20000, 520, m % 2 == 1, false, false, false, at::kHalf});  // two row tiles per CTA
  }
  double worst_rel = 0, least_identical = 1;
  for (const Case& c : cases) {
    const auto o = at::TensorOptions().dtype(c.dtype).device(at::kCUDA);
    const at::Tensor w = (at::randn({c.n, c.k}) / std::sqrt(double(c.k))).to(o);
    const at::Tensor b = c.bias ? at::randn({c.n}).to(o) : at::Tensor();
    // strided: x and up are the two halves of one [m, 1, 2k] tensor (SwiGLU's fused gate/up output)
    at::Tensor x, up;
    if (c.strided) {
      const at::Tensor both = (at::randn({c.m, 1, 2 * c.k}) * 2).to(o);
      x = both.narrow(-1, 0, c.k);
      up = c.swiglu ? both.narrow(-1, c.k, c.k) : at::Tensor();
    } else {
      x = (at::randn({c.m, 1, c.k}) * 2).to(o);
      up = c.swiglu ? at::randn({c.m, 1, c.k}).to(o) : at::Tensor();
    }
    const at::Tensor res = c.residual ? at::randn({c.m, 1, c.n}).to(o) : at::Tensor();
    const char* why = fused_linear_unusable(x, w, b, res, up);
    ASSERT_EQ(why, nullptr) << why;
    const at::Tensor got = fused_linear(x, w, b, res, up).to(at::kFloat).cpu();
    const at::Tensor want = steps(x, w, b, res, up).to(at::kFloat).cpu();
    ASSERT_EQ(got.sizes(), want.sizes());
    const double scale = want.abs().max().item<double>();
    const double rel = (got - want).abs().max().item<double>() / std::max(scale, 1e-6);
    const double identical = got.eq(want).to(at::kFloat).mean().item<double>();
    worst_rel = std::max(worst_rel, rel);
    least_identical = std::min(least_identical, identical);
    // the float32 sums differ in order only: the rounded results agree but where a sum lies within its
    // order's error of a rounding boundary (then by a step of the 16-bit type; twice with a residual)
    const double step = c.dtype == at::kBFloat16 ? 1.0 / 128 : 1.0 / 1024;
    EXPECT_LE(rel, 2 * step) << "m " << c.m << " n " << c.n << " k " << c.k;
    EXPECT_GT(identical, 0.9) << "m " << c.m << " n " << c.n << " k " << c.k;
  }
  std::printf("[fused linear] %zu cases: worst difference %.3g of the largest value, at least %.4f identical\n",
              cases.size(), worst_rel, least_identical);
}

#ifdef VLM2MLA_WITH_CUDA_KERNELS
// GPU time of `reps` calls of f captured as one CUDA graph (launch gaps as inside a decode step's graph), per call.
template <typename F>
double graph_us(F&& f, int reps) {
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  c10::cuda::CUDAStreamGuard guard(side);
  f();  // warm-up (cuBLAS handles and workspaces outside the capture)
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  for (int i = 0; i < reps; ++i) f();
  graph.capture_end();
  graph.replay();
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  float best = 1e30f;
  for (int t = 0; t < 5; ++t) {
    cudaEventRecord(e0, side.stream());
    graph.replay();
    cudaEventRecord(e1, side.stream());
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    best = std::min(best, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 1000.0 * best / reps;
}
#endif

// Qwen2.5-VL-7B's decode projections, the kernel against what it replaces (cuBLAS, and the elementwise
// steps its fusions remove), side by side in one run. GB/s: weight bytes over the time.
TEST(FusedLinearCuda, DISABLED_GemvBandwidth) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(5);
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  struct Shape {
    const char* name;
    int64_t n, k;
    bool bias, residual, swiglu;
  };
  const Shape shapes[] = {{"qkv", 4608, 3584, true, false, false},
                          {"o_proj+res", 3584, 3584, false, true, false},
                          {"gate_up", 37888, 3584, false, false, false},
                          {"down+silu+res", 3584, 18944, false, true, true},
                          {"lm_head", 152064, 3584, false, false, false}};
  std::printf("[gemv] %-14s %3s %10s %10s %9s %9s %7s\n", "shape", "m", "steps us", "kernel us", "steps GB/s",
              "kernel GB/s", "speedup");
  for (int64_t m : {1, 2, 4, 8, 16, 32}) {
    double sum_steps = 0, sum_kernel = 0;
    for (const Shape& s : shapes) {
      const at::Tensor w = (at::randn({s.n, s.k}, o) / 64);
      const at::Tensor b = s.bias ? at::randn({s.n}, o) : at::Tensor();
      const at::Tensor both = at::randn({m, 1, 2 * s.k}, o);
      const at::Tensor x = both.narrow(-1, 0, s.k), up = s.swiglu ? both.narrow(-1, s.k, s.k) : at::Tensor();
      const at::Tensor res = s.residual ? at::randn({m, 1, s.n}, o) : at::Tensor();
      const int reps = s.n * s.k > 100000000 ? 20 : 100;
      const double t_steps = graph_us([&] { steps(x, w, b, res, up); }, reps);
      const double t_kernel = graph_us([&] { fused_linear(x, w, b, res, up); }, reps);
      const double gb = double(s.n) * s.k * 2 / 1e9;
      std::printf("[gemv] %-14s %3ld %10.1f %10.1f %9.0f %9.0f %6.2fx\n", s.name, long(m), t_steps, t_kernel,
                  gb / (t_steps * 1e-6), gb / (t_kernel * 1e-6), t_steps / t_kernel);
      sum_steps += s.name == std::string("lm_head") ? 0 : t_steps;
      sum_kernel += s.name == std::string("lm_head") ? 0 : t_kernel;
    }
    std::printf("[gemv] one layer's projections, m %ld: steps %.1f us, kernel %.1f us (%.2fx); x 28 layers: %.2f vs %.2f ms\n",
                long(m), sum_steps, sum_kernel, sum_steps / sum_kernel, 28 * sum_steps / 1000, 28 * sum_kernel / 1000);
  }
#else
  GTEST_SKIP() << "no CUDA kernels in this build";
#endif
}

}  // namespace
}  // namespace vlm2mla
