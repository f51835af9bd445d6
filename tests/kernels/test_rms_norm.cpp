// Fused RMSNorm (kernels/ops.h): where it is usable, its CPU refusal, and on a CUDA device the kernel
// against transformers' steps written out here (float32 mean of squares, normalise, round to the input
// dtype, times the weight), for bf16, fp16 and float32, widths that are and are not multiples of the
// CTA, 2-D and 3-D inputs, and no rows at all, through both of its kernels (rows of whole 16-byte vectors held
// in registers; other widths, rows wider than its registers hold, and rows off 16-byte bounds element by
// element); the same with the residual add before it; and the fused
// silu * up against libtorch's two steps, bit for bit.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

at::Tensor steps(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor normed = (xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(x.scalar_type());
  return w * normed;
}

TEST(FusedRmsNorm, CpuTensorsAreNotUsableAndSayWhy) {
  at::Tensor x = at::randn({2, 8}), w = at::randn({8});
  EXPECT_FALSE(fused_rms_norm_usable(x, w));
  const std::string why = testing::argument_error([&] { fused_rms_norm(x, w, 1e-6); });
  EXPECT_NE(why.find("CUDA"), std::string::npos) << why;
}

TEST(FusedRmsNormCuda, EqualsTheStepsUpToTheSumOrder) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(3);
  const testing::SwitchRestore restore{set_rms_norm_vectors, rms_norm_vectors_enabled()};
  struct Shape {
    std::vector<int64_t> sizes;
    at::ScalarType dtype;
    bool off_bound = false;  // contiguous, one element past a 16-byte bound
  };
  // (the last three element by element: a width of odd vectors, 1,536 vectors a row, rows off 16-byte bounds)
  for (const Shape& s : {Shape{{7, 3584}, at::kBFloat16}, Shape{{2, 3, 896}, at::kBFloat16}, Shape{{5, 1000}, at::kHalf},
                         Shape{{4, 3584}, at::kFloat}, Shape{{0, 128}, at::kBFloat16}, Shape{{3, 1001}, at::kHalf},
                         Shape{{2, 12288}, at::kBFloat16}, Shape{{7, 3584}, at::kBFloat16, true}}) {
    const at::TensorOptions o = at::TensorOptions().dtype(s.dtype).device(at::kCUDA);
    at::Tensor x;
    if (s.off_bound) {
      const int64_t n = s.sizes[0] * s.sizes[1];
      x = (at::randn({n + 1}, at::kFloat) * 3.0).to(o).narrow(0, 1, n).view(s.sizes);
    } else {
      x = (at::randn(s.sizes, at::kFloat) * 3.0).to(o);
    }
    at::Tensor w = (at::rand({x.size(-1)}, at::kFloat) + 0.5).to(o);
    ASSERT_TRUE(fused_rms_norm_usable(x, w));
    const at::Tensor want = steps(x, w, 1e-6).to(at::kFloat).cpu();
    for (bool vectors : {true, false}) {  // the register kernel where it takes the row, and element by element
      set_rms_norm_vectors(vectors);
      const at::Tensor got = fused_rms_norm(x, w, 1e-6).to(at::kFloat).cpu();
      ASSERT_EQ(got.sizes(), want.sizes());
      if (got.numel() == 0) continue;
      const double rel = ((got - want).abs() / want.abs().clamp_min(1e-3)).max().item<double>();
      const double exact = got.eq(want).to(at::kFloat).mean().item<double>();
      std::printf("[fused rms_norm %s %s%s] max rel. difference %.3g, %.4f of elements identical\n",
                  c10::toString(s.dtype), c10::str(x.sizes()).c_str(), vectors ? "" : ", element by element", rel,
                  exact);
      if (s.dtype == at::kFloat) {
        EXPECT_LT(rel, 1e-5);
      } else {  // at most a rounding step of the 16-bit type (twice: normed, then the product), rarely
        EXPECT_LE(rel, s.dtype == at::kBFloat16 ? 2.0 / 128 : 2.0 / 1024);
        EXPECT_GT(exact, 0.98);
      }
    }
  }
}

TEST(FusedAddRmsNormCuda, SumIsTheAddAndTheNormEqualsTheStepsUpToTheSumOrder) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(4);
  const testing::SwitchRestore restore{set_rms_norm_vectors, rms_norm_vectors_enabled()};
  for (const auto& [sizes, dtype] : {std::pair{std::vector<int64_t>{7, 3584}, at::kBFloat16},
                                     std::pair{std::vector<int64_t>{2, 1, 896}, at::kHalf},
                                     std::pair{std::vector<int64_t>{3, 1000}, at::kFloat},
                                     std::pair{std::vector<int64_t>{0, 64}, at::kBFloat16},
                                     std::pair{std::vector<int64_t>{3, 1001}, at::kHalf},        // element by element
                                     std::pair{std::vector<int64_t>{2, 12288}, at::kBFloat16}}) {  // the same
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    at::Tensor x = (at::randn(sizes, at::kFloat) * 3.0).to(o), r = at::randn(sizes, at::kFloat).to(o);
    at::Tensor w = (at::rand({sizes.back()}, at::kFloat) + 0.5).to(o);
    ASSERT_TRUE(fused_add_rms_norm_usable(x, r, w));
    EXPECT_FALSE(fused_add_rms_norm_usable(x, r.narrow(-1, 0, sizes.back() / 2), w));
    const at::Tensor want = steps(x + r, w, 1e-6).to(at::kFloat).cpu();
    for (bool vectors : {true, false}) {
      set_rms_norm_vectors(vectors);
      auto [sum, normed] = fused_add_rms_norm(x, r, w, 1e-6);
      EXPECT_TRUE(at::equal(sum, x + r)) << c10::toString(dtype) << (vectors ? "" : ", element by element");
      const at::Tensor got = normed.to(at::kFloat).cpu();
      ASSERT_EQ(got.sizes(), want.sizes());
      if (got.numel() == 0) continue;
      const double rel = ((got - want).abs() / want.abs().clamp_min(1e-3)).max().item<double>();
      std::printf("[fused add + rms_norm %s%s] max rel. difference %.3g\n", c10::toString(dtype),
                  vectors ? "" : ", element by element", rel);
      EXPECT_LE(rel, dtype == at::kBFloat16 ? 2.0 / 128 : dtype == at::kHalf ? 2.0 / 1024 : 1e-5);
    }
  }
}

TEST(FusedSiluMul, CpuTensorsAreNotUsableAndSayWhy) {
  at::Tensor g = at::randn({2, 8}), u = at::randn({2, 8});
  ASSERT_NE(fused_silu_mul_unusable(g, u), nullptr);
  const std::string why = testing::argument_error([&] { fused_silu_mul(g, u); });
  EXPECT_NE(why.find("CUDA"), std::string::npos) << why;
}

TEST(FusedSiluMulCuda, EqualsTheLibtorchStepsBitForBit) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(6);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    // the halves of a fused gate/up product (strided rows), separate tensors, a transposed (copied) view
    const at::Tensor both = (at::randn({3, 2, 2 * 1000}) * 4).to(o);
    const at::Tensor g1 = both.narrow(-1, 0, 1000), u1 = both.narrow(-1, 1000, 1000);
    const at::Tensor g2 = (at::randn({5, 37}) * 8).to(o), u2 = at::randn({5, 37}).to(o);
    const at::Tensor g3 = at::randn({16, 9}).to(o).t(), u3 = at::randn({9, 16}).to(o);
    // 16-byte vectors (g1, g3) and their per-element twin: a width the vectors divide, but rows that start off
    // 16-byte bounds (g4), and more rows than the grid's 65,535 (g5: rows walked by a loop)
    const at::Tensor g4 = both.narrow(-1, 1, 16), u4 = both.narrow(-1, 1017, 16);
    const at::Tensor g5 = at::randn({70000, 8}).to(o), u5 = at::randn({70000, 8}).to(o);
    for (const auto& [g, u] : {std::pair{g1, u1}, std::pair{g2, u2}, std::pair{g3, u3}, std::pair{g4, u4},
                               std::pair{g5, u5}, std::pair{g2.narrow(0, 0, 0), u2.narrow(0, 0, 0)}}) {
      const char* why = fused_silu_mul_unusable(g, u);
      ASSERT_EQ(why, nullptr) << why;
      const at::Tensor got = fused_silu_mul(g, u), want = at::silu(g) * u;
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_TRUE(at::equal(got, want)) << c10::toString(dtype) << " " << g.sizes() << ": max abs. difference "
                                        << (got.numel() ? (got - want).abs().max().item<double>() : 0.0);
    }
  }
  const at::Tensor g = at::randn({4, 8}, at::TensorOptions().device(at::kCUDA));
  EXPECT_NE(fused_silu_mul_unusable(g, g.narrow(1, 0, 4)), nullptr);
  EXPECT_NE(fused_silu_mul_unusable(g, g.to(at::kHalf)), nullptr);
}

}  // namespace
}  // namespace vlm2mla
