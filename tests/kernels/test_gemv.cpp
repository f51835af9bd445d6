// The one-row projection kernel (kernels/ops.h's fused_gemv, kernels/cuda/gemv.h): where it is usable and its
// refusals (each naming what is wrong); on a CUDA device, against a float64 reference and against at::linear (its
// twin) for bf16 and fp16, with and without a bias, over in-features whose warp runs are whole, ragged or empty,
// lanes holding 1 to 12 pieces (x in registers and in shared memory), row blocks cut short and at their cap; the
// same bits on every run and inside a CUDA graph. Its SiLU x up epilogue (fused_gemv_silu_mul): bit for bit
// fused_gemv then fused_silu_mul, and its refusals. And a disabled benchmark (test_kernels
// --gtest_also_run_disabled_tests --gtest_filter='*GemvBandwidth*'): the kernel against at::linear over
// Qwen2.5-VL-7B's decode projections at batch 1, each in a CUDA graph over cold weights, side by side in one run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "kernels/ops.h"
#include "support/projection_reference.h"
#include "support/test_support.h"

#ifdef VLM2MLA_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "support/graph_timing.h"
#endif

namespace vlm2mla {
namespace {

TEST(Gemv, CpuTensorsAreNotUsableAndSayWhy) {
  const at::Tensor x = at::randn({1, 64}), w = at::randn({32, 64});
  const char* why = gemv_unusable(x, w, at::Tensor());
  ASSERT_NE(why, nullptr);
  const std::string error = testing::argument_error([&] { fused_gemv(x, w, at::Tensor()); });
  EXPECT_NE(error.find("fused_gemv"), std::string::npos) << error;
  EXPECT_NE(error.find(why), std::string::npos) << error;
}

bool have_cuda() { return at::hasCUDA() && mla_decode_has_cuda(); }

TEST(GemvCuda, RefusesWhatItCannotTakeAndSaysWhy) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = at::randn({32, 64}, o), x = at::randn({1, 64}, o);
  EXPECT_EQ(gemv_unusable(x, w, at::Tensor()), nullptr);
  EXPECT_EQ(gemv_unusable(x.view({64}), w, at::Tensor()), nullptr);
  EXPECT_EQ(gemv_unusable(x.view({1, 1, 64}), w, at::randn({32}, o)), nullptr);
  const std::vector<testing::ProjectionRefusal> cases = {
      {at::randn({2, 64}, o), w, {}, "more than one row"},
      {x.to(at::kFloat), w.to(at::kFloat), {}, "bf16 or fp16"},
      {x, w.to(at::kHalf), {}, "differ in dtype"},
      {x, w.t().contiguous().t(), {}, "contiguous [out, in]"},
      {at::randn({1, 32}, o), w, {}, "in-features"},
      {x, w, at::randn({31}, o), "bias"},
      {x, w, at::randn({32}, o.dtype(at::kFloat)), "bias"},
      {at::randn({1, 72}, o).narrow(1, 4, 64), w, {}, "16-byte"},
      {at::randn({1, 60}, o), at::randn({32, 60}, o), {}, "multiple of 8"},
      {at::randn({1, 64}), w, {}, "not a CUDA tensor"},
  };
  testing::expect_projection_refusals(
      cases, [](const testing::ProjectionRefusal& c) { return gemv_unusable(c.x, c.w, c.b); },
      [](const testing::ProjectionRefusal& c) { fused_gemv(c.x, c.w, c.b); });
}

// The kernel against float64 sums (each result within the rounding of its dtype, plus float32's summation error)
// and against at::linear (within two of the dtype's rounding steps at the result's size).
TEST(GemvCuda, MatchesFloat64AndAtLinear) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(11);
  struct Shape {
    int64_t out, in;
  };
  // in / 8 pieces a row over 8 warps: 8 (one a warp), 24 (3: warps 3..7 empty), 160 (20: ragged), 1000, 2048 (1 a
  // lane), 3584 (2, ragged), 4096, 11008 (6), 18944 (10: x in shared memory), 24576 (12, the most); out 1 (one CTA
  // of one row), short blocks (257), many rows a CTA (152064: the LM head's), the 1,024-row cap (2^20 x 8).
  const Shape shapes[] = {{1, 8},       {3, 24},      {100, 160},    {257, 1000},  {513, 2048},
                          {3584, 3584}, {4608, 3584}, {1000, 4096},  {777, 11008}, {3584, 18944},
                          {300, 24576}, {152064, 3584}, {int64_t(1) << 20, 8}};
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    const auto o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    const double unit = dtype == at::kBFloat16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
    for (const Shape& s : shapes) {
      for (const bool with_bias : {false, true}) {
        const std::string what = std::string(dtype == at::kBFloat16 ? "bf16" : "fp16") + " " +
                                 std::to_string(s.out) + " x " + std::to_string(s.in) + (with_bias ? " + bias" : "");
        const at::Tensor w = at::randn({s.out, s.in}, o) / std::sqrt(double(s.in));
        const at::Tensor x = at::randn({1, s.in}, o);
        const at::Tensor b = with_bias ? at::randn({s.out}, o) : at::Tensor();
        ASSERT_EQ(gemv_unusable(x, w, b), nullptr) << what;
        const at::Tensor y = fused_gemv(x, w, b);
        ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, s.out})) << what;
        const testing::ProjectionReference r = testing::projection_reference(x, w, b);
        EXPECT_LE(testing::worst_against_float64(y, r, unit, s.in), 1.0) << what << ": against float64";
        // at::linear may round x w^T to the dtype before it adds the bias (libtorch 2.11's bf16 addmm at one row:
        // up to 3.9 of the bound without that term), where the kernel rounds x w^T + b once
        const at::Tensor lin = at::linear(x, w, b).to(at::kDouble);
        const at::Tensor xw = with_bias ? r.xw.abs() : at::zeros_like(r.ref);
        const double vs_linear = ((y.to(at::kDouble) - lin).abs() /
                                  ((r.ref.abs() * 2 + xw) * unit + r.mag * 1e-5 + 1e-30)).max().item<double>();
        EXPECT_LE(vs_linear, 1.0) << what << ": against at::linear";
      }
    }
  }
}

// The same bits on every call, in one row's other shapes ([in], [1, 1, in]), and replayed in a CUDA graph.
TEST(GemvCuda, SameBitsEveryRunAndInAGraph) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(5);
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = at::randn({3584, 18944}, o) / 128, x = at::randn({1, 18944}, o), b = at::randn({3584}, o);
  const at::Tensor first = fused_gemv(x, w, b);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(at::equal(fused_gemv(x, w, b), first));
  EXPECT_TRUE(at::equal(fused_gemv(x.view({18944}), w, b), first.view({3584})));
  EXPECT_TRUE(at::equal(fused_gemv(x.view({1, 1, 18944}), w, b), first.view({1, 1, 3584})));
  EXPECT_TRUE(at::equal(testing::replayed_in_a_graph([&] { return fused_gemv(x, w, b); }), first));
#else
  GTEST_SKIP() << "no CUDA kernels in this build";
#endif
}

// SiLU x up in the projection's launch gives the bits of fused_gemv over the fused gate/up block then fused_silu_mul
// over the two halves, over bf16 and fp16, with and without a bias (the gate's half and up's), pairs in one CTA or
// spread one a CTA, lanes holding x in registers or shared memory, and at the 7B gate/up sizes (2 x 18,944 rows of
// 3,584); the same bits on a second run and in a CUDA graph.
TEST(GemvCuda, SiluMulEpilogueEqualsTheTwoLaunches) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(23);
  struct Shape {
    int64_t n, in;  // pairs, in-features
  };
  const Shape shapes[] = {{1, 8}, {3, 24}, {100, 160}, {257, 1000}, {18944, 3584}, {777, 11008}, {300, 24576}};
  int cases = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    const auto o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    for (const Shape& s : shapes) {
      for (const bool with_bias : {false, true}) {
        const std::string what = std::string(dtype == at::kBFloat16 ? "bf16" : "fp16") + " 2 x " +
                                 std::to_string(s.n) + " x " + std::to_string(s.in) + (with_bias ? " + bias" : "");
        const at::Tensor w = at::randn({2 * s.n, s.in}, o) * (3 / std::sqrt(double(s.in)));
        const at::Tensor b = with_bias ? at::randn({2 * s.n}, o) : at::Tensor();
        const at::Tensor x = at::randn({1, 1, s.in}, o);
        ASSERT_EQ(gemv_silu_mul_unusable(x, w, b), nullptr) << what;
        const at::Tensor gu = fused_gemv(x, w, b);
        const at::Tensor want = fused_silu_mul(gu.narrow(-1, 0, s.n), gu.narrow(-1, s.n, s.n));
        const int64_t before = fused_gemv_silu_mul_launches();
        const at::Tensor got = fused_gemv_silu_mul(x, w, b);
        EXPECT_EQ(fused_gemv_silu_mul_launches(), before + 1) << what;
        ASSERT_EQ(got.sizes(), (std::vector<int64_t>{1, 1, s.n})) << what;
        EXPECT_TRUE(at::equal(got, want)) << what;
        EXPECT_TRUE(at::equal(fused_gemv_silu_mul(x, w, b), got)) << what << ": a second run";
        ++cases;
      }
    }
  }
  std::printf("[gemv silu x up] %d cases bit for bit\n", cases);
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = at::randn({37888, 3584}, o) / 64, x = at::randn({1, 3584}, o);
  const at::Tensor gu = fused_gemv(x, w, {});
  const at::Tensor want = fused_silu_mul(gu.narrow(1, 0, 18944), gu.narrow(1, 18944, 18944));
  EXPECT_TRUE(at::equal(testing::replayed_in_a_graph([&] { return fused_gemv_silu_mul(x, w, {}); }), want))
      << "7B gate/up, in a graph";
#else
  GTEST_SKIP() << "no CUDA kernels in this build";
#endif
}

// What the SiLU x up epilogue refuses, each reason naming what is wrong (fused_gemv's, and odd rows).
TEST(GemvCuda, SiluMulEpilogueRefusesWhatItCannotTakeAndSaysWhy) {
  {
    const at::Tensor x = at::randn({1, 64}), w = at::randn({32, 64});
    const char* why = gemv_silu_mul_unusable(x, w, at::Tensor());
    ASSERT_NE(why, nullptr);
    const std::string error = testing::argument_error([&] { fused_gemv_silu_mul(x, w, at::Tensor()); });
    EXPECT_NE(error.find("fused_gemv_silu_mul"), std::string::npos) << error;
    EXPECT_NE(error.find(why), std::string::npos) << error;
  }
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor x = at::randn({1, 64}, o);
  EXPECT_EQ(gemv_silu_mul_unusable(x, at::randn({32, 64}, o), at::Tensor()), nullptr);
  const std::vector<testing::ProjectionRefusal> cases = {
      {x, at::randn({33, 64}, o), {}, "odd"},
      {at::randn({2, 64}, o), at::randn({32, 64}, o), {}, "more than one row"},
      {x, at::randn({32, 64}, o), at::randn({16}, o), "bias"},
      {x, at::randn({32, 60}, o), {}, "in-features"},
  };
  testing::expect_projection_refusals(
      cases, [](const testing::ProjectionRefusal& c) { return gemv_silu_mul_unusable(c.x, c.w, c.b); },
      [](const testing::ProjectionRefusal& c) { fused_gemv_silu_mul(c.x, c.w, c.b); });
}

TEST(GemvCuda, DISABLED_GemvBandwidth) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(7);
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
  std::printf("[gemv] %-8s %10s %10s %9s %9s %7s\n", "shape", "linear us", "gemv us", "linear GB/s", "gemv GB/s",
              "speedup");
  double sum_linear = 0, sum_gemv = 0;
  for (const testing::ProjectionShape& s : testing::kQwen7bProjections) {
    const testing::ColdProjection cold = testing::cold_projection(s, 1, o);
    const at::Tensor &w = cold.w, &b = cold.b, &x = cold.x;
    const int copies = cold.copies, reps = cold.reps;
    const double gb = cold.gb;
    const double t_linear = testing::graph_us([&](int i) { at::linear(x, w[i % copies], b); }, reps, stream);
    const double t_gemv = testing::graph_us([&](int i) { fused_gemv(x, w[i % copies], b); }, reps, stream);
    const int per_layer = std::string(s.name) == "lm_head" ? 1 : 28;
    sum_linear += t_linear * per_layer;
    sum_gemv += t_gemv * per_layer;
    std::printf("[gemv] %-8s %10.1f %10.1f %9.0f %9.0f %6.2fx\n", s.name, t_linear, t_gemv, gb / (t_linear * 1e-6),
                gb / (t_gemv * 1e-6), t_linear / t_gemv);
    c10::cuda::CUDAStreamGuard guard(stream);
    const at::Tensor want = at::linear(x, w[0], b).to(at::kFloat), got = fused_gemv(x, w[0], b).to(at::kFloat);
    EXPECT_LE((got - want).abs().max().item<double>(), 2e-2 * want.abs().max().item<double>() + 1e-3) << s.name;
  }
  std::printf("[gemv] a step's projections (28 layers and the LM head): at::linear %.2f ms, gemv %.2f ms (%.2fx)\n",
              sum_linear / 1000, sum_gemv / 1000, sum_linear / sum_gemv);
#else
  GTEST_SKIP() << "no CUDA kernels in this build";
#endif
}

}  // namespace
}  // namespace vlm2mla
