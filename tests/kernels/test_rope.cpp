// Fused RoPE (kernels/ops.h): where it is usable and why not, its CPU refusal, and on a CUDA device the
// kernel against libtorch's steps written out here (x*cos + cat(-x2, x1)*sin), bit for bit, for bf16,
// fp16 and float32, in the shapes the models use (apply_rope's [b, h, s, d] x with [b, 1, s, d] cos; the
// MLA key [b, s, h_kv, R] with cos of its shape; the MLA query [b, h_kv, g, s, R], a strided view, with
// cos [b, h_kv, 1, s, R], itself a transposed view), odd sizes, transposed and sliced x, and no rows.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

at::Tensor steps(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

bool has_cuda_kernels() { return at::hasCUDA() && mla_decode_has_cuda(); }

TEST(FusedRope, CpuTensorsAreNotUsableAndSayWhy) {
  at::Tensor x = at::randn({1, 2, 3, 8}), cos = at::randn({1, 1, 3, 8}), sin = at::randn({1, 1, 3, 8});
  const char* why = fused_rope_unusable(x, cos, sin);
  ASSERT_NE(why, nullptr);
  EXPECT_NE(std::string(why).find("CUDA"), std::string::npos) << why;
  EXPECT_FALSE(fused_rope_usable(x, cos, sin));
  const std::string refused = testing::argument_error([&] { fused_rope(x, cos, sin); });
  EXPECT_NE(refused.find("CUDA"), std::string::npos) << refused;
  EXPECT_NE(refused.find("[1, 2, 3, 8]"), std::string::npos) << refused;
}

TEST(FusedRopeCuda, TensorsTheKernelCannotTakeAreRefusedWithAReason) {
  if (!has_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::TensorOptions o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor x = at::randn({2, 3, 4, 8}, o), cs = at::randn({2, 1, 4, 8}, o);
  EXPECT_EQ(fused_rope_unusable(x, cs, cs), nullptr);
  struct Case {
    std::string what;
    at::Tensor x, cos, sin;
  };
  for (const Case& c : {Case{"CUDA tensor", x.cpu(), cs, cs}, Case{"device", x, cs.cpu(), cs},
                        Case{"dtype", x, cs.to(at::kFloat), cs}, Case{"dtype", x.to(at::kDouble), cs.to(at::kDouble),
                                                                      cs.to(at::kDouble)},
                        Case{"odd", x.narrow(-1, 0, 7), cs.narrow(-1, 0, 7), cs.narrow(-1, 0, 7)},
                        Case{"broadcast", x, at::randn({2, 3, 5, 8}, o), cs},
                        Case{"broadcast", x.narrow(0, 0, 1), cs, cs},  // the sum would be larger than x
                        Case{"dims", at::randn({1, 1, 1, 1, 1, 1, 1, 1, 2}, o), at::randn({2}, o), at::randn({2}, o)},
                        Case{"grad", x.to(at::kFloat).requires_grad_(), cs.to(at::kFloat), cs.to(at::kFloat)}}) {
    const char* why = fused_rope_unusable(c.x, c.cos, c.sin);
    ASSERT_NE(why, nullptr) << c.what;
    EXPECT_NE(std::string(why).find(c.what), std::string::npos) << why;
    EXPECT_THROW(fused_rope(c.x, c.cos, c.sin), ArgumentError) << c.what;
  }
}

// One case: x, cos and sin are made by `make` from float32 CPU tensors (random x, random angles), in
// every dtype; the kernel must equal the steps bit for bit and keep x's shape.
struct Shapes {
  std::string what;
  std::vector<int64_t> x, cs;  // sizes before the views `view` takes
  std::function<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&)>
      view;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> as_is(const at::Tensor& x, const at::Tensor& c, const at::Tensor& s) {
  return {x, c, s};
}

void expect_bit_identical(const Shapes& sh) {
  for (at::ScalarType dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dt).device(at::kCUDA);
    at::Tensor angle = at::rand(sh.cs, at::kFloat) * 100.0;
    at::Tensor x0 = (at::randn(sh.x, at::kFloat) * 4.0).to(o);
    auto [x, cos, sin] = sh.view(x0, angle.cos().to(o), angle.sin().to(o));
    const std::string what = sh.what + " " + c10::toString(dt) + " x " + c10::str(x.sizes()) + " cos " +
                             c10::str(cos.sizes());
    ASSERT_TRUE(fused_rope_usable(x, cos, sin)) << what << ": " << fused_rope_unusable(x, cos, sin);
    at::Tensor got = fused_rope(x, cos, sin), want = steps(x, cos, sin);
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    ASSERT_EQ(got.scalar_type(), dt) << what;
    if (x.is_non_overlapping_and_dense()) {
      EXPECT_EQ(got.strides(), x.strides()) << what << ": x's layout";
    }
    if (!at::equal(got, want)) {
      const at::Tensor diff = got.ne(want);
      ADD_FAILURE() << what << ": " << diff.sum().item<int64_t>() << " of " << got.numel()
                    << " elements differ; max abs. difference "
                    << (got.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>();
    }
  }
}

TEST(FusedRopeCuda, EqualsTheLibtorchStepsBitForBit) {
  if (!has_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(5);
  std::vector<Shapes> cases;
  for (int64_t b : {1, 3}) {
    for (int64_t s : {1, 7}) {
      for (int64_t d : {2, 64, 128}) {
        const int64_t h = 5, h_kv = 2, g = 3, R = d;
        // apply_rope: x [b, h, s, d] as decoder.cpp makes it (a transposed [b, s, h, d]), cos [b, 1, s, d].
        cases.push_back({"apply_rope", {b, s, h, d}, {b, s, d}, [](const at::Tensor& x, const at::Tensor& c, const at::Tensor& sn) {
                           return std::make_tuple(x.transpose(1, 2), c.unsqueeze(1), sn.unsqueeze(1));
                         }});
        // The same with a contiguous x.
        cases.push_back({"apply_rope contiguous", {b, h, s, d}, {b, s, d}, [](const at::Tensor& x, const at::Tensor& c, const at::Tensor& sn) {
                           return std::make_tuple(x, c.unsqueeze(1), sn.unsqueeze(1));
                         }});
        // The MLA key: x [b, s, h_kv, R], cos [b, s, h_kv, R].
        cases.push_back({"mla key", {b, s, h_kv, R}, {b, s, h_kv, R}, as_is});
        // The MLA query: q_pre [b, h_q, s, d_h] (a transposed [b, s, h_q, d_h]) narrowed to its first R dims
        // and viewed [b, h_kv, g, s, R]; cos [b, s, h_kv, R] transposed to [b, h_kv, 1, s, R].
        const int64_t d_h = R + 6;
        cases.push_back({"mla query", {b, s, h_kv * g, d_h}, {b, s, h_kv, R},
                         [=](const at::Tensor& x, const at::Tensor& c, const at::Tensor& sn) {
                           at::Tensor q = x.transpose(1, 2).narrow(-1, 0, R).reshape({b, h_kv, g, s, R});
                           return std::make_tuple(q, c.transpose(1, 2).unsqueeze(2), sn.transpose(1, 2).unsqueeze(2));
                         }});
      }
    }
  }
  // Qwen2.5-VL's vision rope: x [s, heads, hd] float32 with cos [s, 1, hd].
  cases.push_back({"vision", {50, 16, 80}, {50, 80}, [](const at::Tensor& x, const at::Tensor& c, const at::Tensor& sn) {
                     return std::make_tuple(x, c.unsqueeze(-2), sn.unsqueeze(-2));
                   }});
  // cos as 2-D [s, d] against x [b, h, s, d]; x with a strided last dim; x overlapping itself (expanded).
  cases.push_back({"2-D cos", {2, 3, 9, 16}, {9, 16}, as_is});
  cases.push_back({"strided last dim", {2, 9, 32}, {9, 16}, [](const at::Tensor& x, const at::Tensor& c, const at::Tensor& sn) {
                     return std::make_tuple(x.slice(-1, 0, 32, 2), c, sn);
                   }});
  cases.push_back({"expanded x", {1, 9, 16}, {4, 9, 16}, [](const at::Tensor& x, const at::Tensor& c, const at::Tensor& sn) {
                     return std::make_tuple(x.expand({4, 9, 16}), c, sn);
                   }});
  cases.push_back({"1-D", {16}, {16}, as_is});
  for (const Shapes& sh : cases) expect_bit_identical(sh);
  // Extreme values: products that overflow the 16-bit types, subnormals, signed zeros.
  for (at::ScalarType dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dt).device(at::kCUDA);
    at::Tensor x = at::tensor({60000.f, -60000.f, 1e-6f, -0.f, 3.f, 1e-30f, 0.f, -2.5f}, at::kFloat).to(o);
    at::Tensor c = at::tensor({2.f, 0.5f, 1e-3f, 1.f, -0.f, 1e-10f, -1.f, 1.f}, at::kFloat).to(o);
    at::Tensor s = at::tensor({1.f, 3.f, -1e-3f, 0.f, 1.f, 1e10f, -0.f, 1.f}, at::kFloat).to(o);
    at::Tensor got = fused_rope(x, c, s), want = steps(x, c, s);
    EXPECT_TRUE(at::equal(got.isnan(), want.isnan())) << c10::toString(dt);
    EXPECT_TRUE(at::equal(got.nan_to_num(0), want.nan_to_num(0))) << c10::toString(dt) << "\n" << got << "\n" << want;
    EXPECT_TRUE(at::equal(got.signbit(), want.signbit())) << c10::toString(dt) << ": signed zeros";
  }
  // No rows: nothing launched, an empty result of x's shape.
  const at::TensorOptions o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  EXPECT_EQ(fused_rope(at::empty({0, 4, 8}, o), at::empty({1, 8}, o), at::empty({1, 8}, o)).sizes(),
            at::IntArrayRef({0, 4, 8}));
}

// More pairs than the grid's 4096 CTAs of 256 threads cover at once: the grid-stride loop does the rest.
// (Apart from the small cases, which scripts/device/kernels.sh also runs under compute-sanitizer.)
TEST(FusedRopeCuda, LargeInputsTakeTheGridStrideLoop) {
  if (!has_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(6);
  expect_bit_identical({"large", {4, 32, 2100, 128}, {4, 2100, 128}, [](const at::Tensor& x, const at::Tensor& c, const at::Tensor& sn) {
                          return std::make_tuple(x, c.unsqueeze(1), sn.unsqueeze(1));
                        }});
}

}  // namespace
}  // namespace vlm2mla
