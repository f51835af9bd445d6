// Fused RMSNorm (kernels/ops.h): where it is usable, its CPU refusal, and on a CUDA device the kernel
// against transformers' steps written out here (float32 mean of squares, normalise, round to the input
// dtype, times the weight), for bf16, fp16 and float32, widths that are and are not multiples of the
// CTA, 2-D and 3-D inputs, and no rows at all.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "kernels/ops.h"

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
  try {
    fused_rms_norm(x, w, 1e-6);
    ADD_FAILURE() << "expected an ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

TEST(FusedRmsNormCuda, EqualsTheStepsUpToTheSumOrder) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(3);
  struct Shape {
    std::vector<int64_t> sizes;
    at::ScalarType dtype;
  };
  for (const Shape& s : {Shape{{7, 3584}, at::kBFloat16}, Shape{{2, 3, 896}, at::kBFloat16}, Shape{{5, 1000}, at::kHalf},
                         Shape{{4, 3584}, at::kFloat}, Shape{{0, 128}, at::kBFloat16}}) {
    const at::TensorOptions o = at::TensorOptions().dtype(s.dtype).device(at::kCUDA);
    at::Tensor x = (at::randn(s.sizes, at::kFloat) * 3.0).to(o);
    at::Tensor w = (at::rand({s.sizes.back()}, at::kFloat) + 0.5).to(o);
    ASSERT_TRUE(fused_rms_norm_usable(x, w));
    at::Tensor got = fused_rms_norm(x, w, 1e-6).to(at::kFloat).cpu();
    at::Tensor want = steps(x, w, 1e-6).to(at::kFloat).cpu();
    ASSERT_EQ(got.sizes(), want.sizes());
    if (got.numel() == 0) continue;
    const double rel = ((got - want).abs() / want.abs().clamp_min(1e-3)).max().item<double>();
    const double exact = got.eq(want).to(at::kFloat).mean().item<double>();
    std::printf("[fused rms_norm %s %s] max rel. difference %.3g, %.4f of elements identical\n",
                c10::toString(s.dtype), c10::str(at::IntArrayRef(s.sizes)).c_str(), rel, exact);
    if (s.dtype == at::kFloat) {
      EXPECT_LT(rel, 1e-5);
    } else {  // at most a rounding step of the 16-bit type (twice: normed, then the product), rarely
      EXPECT_LE(rel, s.dtype == at::kBFloat16 ? 2.0 / 128 : 2.0 / 1024);
      EXPECT_GT(exact, 0.98);
    }
  }
}

}  // namespace
}  // namespace vlm2mla
