// The few-row projection kernel (kernels/ops.h's fused_gemm_rows, kernels/cuda/gemm_rows.h): where it is usable and
// its refusals (each naming what is wrong); on a CUDA device, against a float64 reference and against at::linear (its
// twin) for bf16 and fp16, with and without a bias, at 2 to 16 rows (rows 8..15 of the tensor cores' A operand
// zeros or not), over in-features whose 32-wide pieces fill the warps or not (a piece cut short, warps without a
// piece), out-features ending inside a tile, CTAs taking one unit of rows or many; each row's result the same bits
// whatever rows share its launch; the same bits on every run and inside a CUDA graph. Its SiLU x up epilogue
// (fused_gemm_rows_silu_mul): bit for bit fused_gemm_rows then fused_silu_mul. And a disabled benchmark
// (test_kernels --gtest_also_run_disabled_tests --gtest_filter='*GemmRowsBandwidth*'): the kernel against
// at::linear over Qwen2.5-VL-7B's decode projections at 2, 4, 8 and 16 rows, each in a CUDA graph over cold weights,
// side by side in one run.
#include <gtest/gtest.h>

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

TEST(GemmRows, CpuTensorsAreNotUsableAndSayWhy) {
  const at::Tensor x = at::randn({4, 64}), w = at::randn({32, 64});
  for (const bool silu : {false, true}) {
    const char* why = silu ? gemm_rows_silu_mul_unusable(x, w, at::Tensor()) : gemm_rows_unusable(x, w, at::Tensor());
    ASSERT_NE(why, nullptr);
    const std::string error = testing::argument_error([&] {
      silu ? fused_gemm_rows_silu_mul(x, w, at::Tensor()) : fused_gemm_rows(x, w, at::Tensor());
    });
    EXPECT_NE(error.find(silu ? "fused_gemm_rows_silu_mul" : "fused_gemm_rows"), std::string::npos) << error;
    EXPECT_NE(error.find(why), std::string::npos) << error;
  }
}

bool have_cuda() { return at::hasCUDA() && mla_decode_has_cuda(); }

TEST(GemmRowsCuda, RefusesWhatItCannotTakeAndSaysWhy) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = at::randn({32, 64}, o), x = at::randn({4, 64}, o);
  EXPECT_EQ(gemm_rows_unusable(x, w, at::Tensor()), nullptr);
  EXPECT_EQ(gemm_rows_unusable(at::randn({1, 64}, o), w, at::Tensor()), nullptr);
  EXPECT_EQ(gemm_rows_unusable(at::randn({16, 1, 64}, o), w, at::randn({32}, o)), nullptr);
  EXPECT_EQ(gemm_rows_silu_mul_unusable(x, w, at::Tensor()), nullptr);
  const std::vector<testing::ProjectionRefusal> cases = {
      {at::randn({17, 64}, o), w, {}, "rows are not between 1 and 16"},
      {at::randn({64, 4}, o).t(), w, {}, "not contiguous"},
      {x.to(at::kFloat), w.to(at::kFloat), {}, "bf16 or fp16"},
      {x, w.to(at::kHalf), {}, "differ in dtype"},
      {x, w.t().contiguous().t(), {}, "contiguous [out, in]"},
      {at::randn({4, 32}, o), w, {}, "in-features"},
      {x, w, at::randn({31}, o), "bias"},
      {at::randn({4 * 64 + 4}, o).narrow(0, 4, 4 * 64).view({4, 64}), w, {}, "16-byte"},
      {at::randn({4, 60}, o), at::randn({32, 60}, o), {}, "multiple of 8"},
      {at::randn({4, 64}), w, {}, "not a CUDA tensor"},
      {x, at::randn({33, 64}, o), {}, "odd", true},
  };
  testing::expect_projection_refusals(
      cases,
      [](const testing::ProjectionRefusal& c) {
        return c.silu ? gemm_rows_silu_mul_unusable(c.x, c.w, c.b) : gemm_rows_unusable(c.x, c.w, c.b);
      },
      [](const testing::ProjectionRefusal& c) {
        c.silu ? fused_gemm_rows_silu_mul(c.x, c.w, c.b) : fused_gemm_rows(c.x, c.w, c.b);
      });
}

// The kernel against float64 sums (each result within the rounding of its dtype, plus float32's summation error)
// and against at::linear over float32 copies rounded to the dtype (within two rounding steps), and each row the bits
// of the launch of that row alone.
TEST(GemmRowsCuda, MatchesFloat64AndAtLinear) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(13);
  struct Shape {
    int64_t out, in;
  };
  // in / 32 pieces over 8 warps: 8 (a piece cut short to 8 elements, 7 warps without one), 40 (two pieces, one cut
  // short), 160, 1000 (ragged), 3584 (112: 14 a warp), 18944 (592, the down projection's); out inside one tile (3,
  // 17), ending inside a unit (100, 257, 777), the 7B q/k/v, o_proj and down sizes, and more units than CTAs (40,000
  // rows: CTAs take several units).
  const Shape shapes[] = {{3, 8},       {17, 40},     {100, 160},   {257, 1000},   {777, 3584},
                          {3584, 3584}, {4608, 3584}, {3584, 18944}, {40000, 64}};
  int cases = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    const auto o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    const double unit = dtype == at::kBFloat16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
    for (const Shape& s : shapes) {
      const at::Tensor w = at::randn({s.out, s.in}, o) / std::sqrt(double(s.in));
      for (const int64_t m : {2, 3, 8, 9, 16}) {
        for (const bool with_bias : {false, true}) {
          const std::string what = std::string(dtype == at::kBFloat16 ? "bf16" : "fp16") + " " + std::to_string(m) +
                                   " x " + std::to_string(s.out) + " x " + std::to_string(s.in) +
                                   (with_bias ? " + bias" : "");
          const at::Tensor x = at::randn({m, 1, s.in}, o);
          const at::Tensor b = with_bias ? at::randn({s.out}, o) : at::Tensor();
          ASSERT_EQ(gemm_rows_unusable(x, w, b), nullptr) << what;
          const int64_t before = fused_gemm_rows_launches();
          const at::Tensor y = fused_gemm_rows(x, w, b);
          EXPECT_EQ(fused_gemm_rows_launches(), before + 1) << what;
          ASSERT_EQ(y.sizes(), (std::vector<int64_t>{m, 1, s.out})) << what;
          const testing::ProjectionReference r = testing::projection_reference(x.squeeze(1), w, b);
          const at::Tensor yd = y.squeeze(1).to(at::kDouble);
          EXPECT_LE(testing::worst_against_float64(yd, r, unit, s.in), 1.0) << what << ": against float64";
          // the twin: at::linear over float32 copies (float32 sums, the bias added, then rounded once to the dtype:
          // the kernel's arithmetic in cuBLAS's order), element by element within two rounding steps and both
          // float32 summation errors. (at::linear in the dtype itself is no twin at 2 or more rows: cuBLAS's split-K
          // GEMMs round their partial sums to the dtype, measured up to 7.8 times the float64 bound above on the H200
          // on 2026-12-01, where the kernel meets it.)
          const at::Tensor lin = at::linear(x.squeeze(1).to(at::kFloat), w.to(at::kFloat),
                                            with_bias ? b.to(at::kFloat) : at::Tensor())
                                     .to(dtype)
                                     .to(at::kDouble);
          const at::Tensor twin_bound = r.ref.abs() * (2 * unit) + r.mag * (2e-6 * std::sqrt(double(s.in))) + 1e-30;
          EXPECT_LE(((yd - lin).abs() / twin_bound).max().item<double>(), 1.0) << what << ": against at::linear";
          // a row's sums see no other row: the first row alone (launched as one row of this kernel) and the first
          // two give the same bits as in the launch of m rows
          EXPECT_TRUE(at::equal(fused_gemm_rows(x.narrow(0, 0, 1), w, b), y.narrow(0, 0, 1))) << what << ": row 0";
          EXPECT_TRUE(at::equal(fused_gemm_rows(x.narrow(0, 0, 2), w, b), y.narrow(0, 0, 2))) << what << ": rows 0-1";
          ++cases;
        }
      }
    }
  }
  std::printf("[gemm rows] %d cases within bounds\n", cases);
}

// The same bits on every call, in other shapes of the same rows ([m, in], [m, 1, in]), and replayed in a CUDA
// graph.
TEST(GemmRowsCuda, SameBitsEveryRunAndInAGraph) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(5);
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor w = at::randn({3584, 18944}, o) / 128, x = at::randn({8, 18944}, o), b = at::randn({3584}, o);
  const at::Tensor first = fused_gemm_rows(x, w, b);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(at::equal(fused_gemm_rows(x, w, b), first));
  EXPECT_TRUE(at::equal(fused_gemm_rows(x.view({8, 1, 18944}), w, b), first.view({8, 1, 3584})));
  EXPECT_TRUE(at::equal(testing::replayed_in_a_graph([&] { return fused_gemm_rows(x, w, b); }), first));
#else
  GTEST_SKIP() << "no CUDA kernels in this build";
#endif
}

// SiLU x up in the projection's launch gives the bits of fused_gemm_rows over the fused gate/up block then
// fused_silu_mul over the two halves, over bf16 and fp16, with and without a bias, at 2, 8 and 16 rows, pairs ending
// inside a tile, and at the 7B gate/up sizes (2 x 18,944 rows of 3,584: CTAs taking several units).
TEST(GemmRowsCuda, SiluMulEpilogueEqualsTheTwoLaunches) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(23);
  struct Shape {
    int64_t n, in;  // pairs, in-features
  };
  const Shape shapes[] = {{3, 8}, {100, 160}, {257, 1000}, {18944, 3584}};
  int cases = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    const auto o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    for (const Shape& s : shapes) {
      for (const int64_t m : {2, 8, 16}) {
        for (const bool with_bias : {false, true}) {
          const std::string what = std::string(dtype == at::kBFloat16 ? "bf16" : "fp16") + " " + std::to_string(m) +
                                   " x 2 x " + std::to_string(s.n) + " x " + std::to_string(s.in) +
                                   (with_bias ? " + bias" : "");
          const at::Tensor w = at::randn({2 * s.n, s.in}, o) * (3 / std::sqrt(double(s.in)));
          const at::Tensor b = with_bias ? at::randn({2 * s.n}, o) : at::Tensor();
          const at::Tensor x = at::randn({m, 1, s.in}, o);
          ASSERT_EQ(gemm_rows_silu_mul_unusable(x, w, b), nullptr) << what;
          const at::Tensor gu = fused_gemm_rows(x, w, b);
          const at::Tensor want = fused_silu_mul(gu.narrow(-1, 0, s.n), gu.narrow(-1, s.n, s.n));
          const at::Tensor got = fused_gemm_rows_silu_mul(x, w, b);
          ASSERT_EQ(got.sizes(), (std::vector<int64_t>{m, 1, s.n})) << what;
          EXPECT_TRUE(at::equal(got, want)) << what;
          EXPECT_TRUE(at::equal(fused_gemm_rows_silu_mul(x, w, b), got)) << what << ": a second run";
          ++cases;
        }
      }
    }
  }
  std::printf("[gemm rows silu x up] %d cases bit for bit\n", cases);
}

TEST(GemmRowsCuda, DISABLED_GemmRowsBandwidth) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(7);
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
  std::printf("[gemm rows] %-8s %4s %10s %10s %11s %11s %7s\n", "shape", "rows", "linear us", "kernel us",
              "linear GB/s", "kernel GB/s", "speedup");
  for (const int64_t m : {2, 4, 8, 16}) {
    double sum_linear = 0, sum_kernel = 0;
    for (const testing::ProjectionShape& s : testing::kQwen7bProjections) {
      const testing::ColdProjection cold = testing::cold_projection(s, m, o);
      const at::Tensor &w = cold.w, &b = cold.b, &x = cold.x;
      const int copies = cold.copies, reps = cold.reps;
      const double t_linear = testing::graph_us([&](int i) { at::linear(x, w[i % copies], b); }, reps, stream);
      const double t_kernel = testing::graph_us([&](int i) { fused_gemm_rows(x, w[i % copies], b); }, reps, stream);
      const int per_layer = std::string(s.name) == "lm_head" ? 1 : 28;
      sum_linear += t_linear * per_layer;
      sum_kernel += t_kernel * per_layer;
      std::printf("[gemm rows] %-8s %4lld %10.1f %10.1f %11.0f %11.0f %6.2fx\n", s.name, static_cast<long long>(m),
                  t_linear, t_kernel, cold.gb / (t_linear * 1e-6), cold.gb / (t_kernel * 1e-6), t_linear / t_kernel);
      c10::cuda::CUDAStreamGuard guard(stream);
      const at::Tensor want = at::linear(x, w[0], b).to(at::kFloat), got = fused_gemm_rows(x, w[0], b).to(at::kFloat);
      EXPECT_LE((got - want).abs().max().item<double>(), 2e-2 * want.abs().max().item<double>() + 1e-3) << s.name;
    }
    std::printf("[gemm rows] %lld rows: a step's projections (28 layers and the LM head): at::linear %.2f ms, kernel "
                "%.2f ms (%.2fx)\n",
                static_cast<long long>(m), sum_linear / 1000, sum_kernel / 1000, sum_linear / sum_kernel);
  }
#else
  GTEST_SKIP() << "no CUDA kernels in this build";
#endif
}

}  // namespace
}  // namespace vlm2mla
