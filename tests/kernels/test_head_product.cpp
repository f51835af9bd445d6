// The fused per-kv-head product (kernels/ops.h's fused_head_product): where it is usable and why not, and on a
// CUDA device y[b, k, i, :] = x[b, k, i, :] w[k] against a float64 product of the same inputs, within the
// rounding of the dtype once (the kernel's tensor cores sum in float32 and it rounds once), at the decode step's
// shapes (Qwen2.5-VL-7B: 4 kv heads of 7 query heads, d_h 128, 264 absorbed columns; q a view of a wider
// product's rows) and others (a partial last column slice and 16-wide step, rows past a block of 16, one row,
// inner sizes of several 64-wide chunks), bf16 and fp16.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/ops.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

TEST(FusedHeadProduct, RefusesWhatItCannotTakeAndSaysWhy) {
  const at::Tensor cpu_x = at::randn({2, 4, 7, 128}), cpu_w = at::randn({4, 128, 264});
  ASSERT_NE(fused_head_product_unusable(cpu_x, cpu_w), nullptr);
  const std::string why = testing::argument_error([&] { fused_head_product(cpu_x, cpu_w); });
  EXPECT_NE(why.find("fused_head_product"), std::string::npos) << why;
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::TensorOptions o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor x = at::randn({2, 4, 7, 128}, o), w = at::randn({4, 128, 264}, o);
  EXPECT_EQ(fused_head_product_unusable(x, w), nullptr);
  auto expect = [](const char* got, const char* part) {
    ASSERT_NE(got, nullptr) << part;
    EXPECT_NE(std::string(got).find(part), std::string::npos) << got;
  };
  expect(fused_head_product_unusable(x, at::randn({4, 128, 258}, o)), "16-byte");         // n = 258
  expect(fused_head_product_unusable(x, at::randn({2, 128, 264}, o)), "shapes");         // kv heads
  expect(fused_head_product_unusable(x, w.to(at::kHalf)), "dtype");
  expect(fused_head_product_unusable(x.to(at::kFloat), w.to(at::kFloat)), "bf16 or fp16");
  expect(fused_head_product_unusable(x, w.transpose(1, 2).contiguous().transpose(1, 2)), "contiguous");
  expect(fused_head_product_unusable(at::randn({2, 4, 128, 7}, o).transpose(2, 3), w), "contiguous");  // x's last dim
  expect(fused_head_product_unusable(at::randn({2, 4, 7, 0}, o), at::randn({4, 0, 264}, o)), "inner size is 0");
  EXPECT_EQ(fused_head_product_unusable(at::randn({1, 4, 7, 1032}, o), at::randn({4, 1032, 64}, o)), nullptr);  // any d
  expect(fused_head_product_unusable(at::randn({2, 4, 7, 130}, o).narrow(-1, 1, 128), w), "16-byte");  // off bounds
}

TEST(FusedHeadProductCuda, EqualsTheFloat64ProductToTheDtypesRounding) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(31);
  int n_cases = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    // the dtype's relative rounding (half an ulp): 2^-8 bf16, 2^-11 fp16
    const double rel = dtype == at::kBFloat16 ? 1.0 / 256 : 1.0 / 2048;
    struct Shape {
      int64_t b, h, m, d, n;
      bool q_view;  // x a view of a wider product's rows (the decode step's q)
    };
    const std::vector<Shape> shapes = {{1, 4, 7, 128, 264, true},  {8, 4, 7, 128, 264, true},
                                       {36, 4, 7, 128, 264, false}, {8, 4, 7, 264, 128, false},
                                       {3, 2, 5, 64, 72, false},    {1, 1, 1, 8, 8, false},
                                       {2, 4, 7, 520, 128, false},  {5, 3, 7, 1032, 200, true}};
    for (const Shape& s : shapes) {
      at::Tensor x;
      if (s.q_view) {
        const at::Tensor qkv = at::randn({s.b, s.h * s.m * s.d + 1024}, o);
        x = qkv.narrow(1, 0, s.h * s.m * s.d).view({s.b, s.h, s.m, s.d});
      } else {
        x = at::randn({s.b, s.h, s.m, s.d}, o);
      }
      const at::Tensor w = at::randn({s.h, s.d, s.n}, o) * 0.1;
      const char* why = fused_head_product_unusable(x, w);
      ASSERT_EQ(why, nullptr) << why;
      const at::Tensor got = fused_head_product(x, w);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{s.b, s.h, s.m, s.n}));
      EXPECT_TRUE(got.is_contiguous());
      const at::Tensor want = at::matmul(x.to(at::kDouble), w.to(at::kDouble).unsqueeze(0));
      // each element within the rounding of its own magnitude, plus the float32 sums' worst error over d terms,
      // taken as truncating (d 2^-23 of the sum of the terms' magnitudes: the tensor cores' adds need not round
      // to nearest)
      const at::Tensor terms = at::matmul(x.to(at::kDouble).abs(), w.to(at::kDouble).abs().unsqueeze(0));
      const at::Tensor bound = want.abs() * rel + terms * (double(s.d) * 1.1921e-7);
      const at::Tensor err = (got.to(at::kDouble) - want).abs();
      EXPECT_TRUE((err <= bound).all().item<bool>())
          << c10::toString(dtype) << " b " << s.b << " d " << s.d << " n " << s.n << ": worst excess "
          << (err - bound).max().item<double>();
      ++n_cases;
    }
  }
  EXPECT_EQ(n_cases, 16);  // 8 shapes x 2 dtypes
}

}  // namespace
}  // namespace vlm2mla
