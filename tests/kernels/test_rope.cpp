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

// Two rotations in one launch (fused_rope_pair, the decode steps' queries and keys): refused on the CPU and for
// tensors of two dtypes, and on a CUDA device each output bit for bit the libtorch steps', in the models' pairs
// (the plain query and key [b, h, 1, d] with one [b, 1, 1, d] cos; the MLA key [b, 1, h_kv, R] and the query view
// [b, h_kv, g, 1, R] with its transposed cos), a pair past one launch's blocks, and a pair with an empty tensor.
TEST(FusedRopePair, RefusesWhatItCannotTakeAndSaysWhy) {
  const at::Tensor x = at::randn({1, 2, 1, 8}), c = at::randn({1, 1, 1, 8});
  ASSERT_NE(fused_rope_pair_unusable(x, c, c, x, c, c), nullptr);
  const std::string why = testing::argument_error([&] { fused_rope_pair(x, c, c, x, c, c); });
  EXPECT_NE(why.find("fused_rope_pair"), std::string::npos) << why;
  if (!has_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::TensorOptions o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor xg = at::randn({1, 2, 1, 8}, o), cg = at::randn({1, 1, 1, 8}, o);
  EXPECT_EQ(fused_rope_pair_unusable(xg, cg, cg, xg, cg, cg), nullptr);
  const char* dtypes = fused_rope_pair_unusable(xg, cg, cg, xg.to(at::kHalf), cg.to(at::kHalf), cg.to(at::kHalf));
  ASSERT_NE(dtypes, nullptr);
  EXPECT_NE(std::string(dtypes).find("dtype"), std::string::npos) << dtypes;
  const char* odd = fused_rope_pair_unusable(xg, cg, cg, at::randn({1, 2, 1, 7}, o), cg.narrow(-1, 0, 7), cg.narrow(-1, 0, 7));
  ASSERT_NE(odd, nullptr);
  EXPECT_NE(std::string(odd).find("odd"), std::string::npos) << odd;
}

TEST(FusedRopePairCuda, EachOutputIsTheLibtorchStepsBitForBit) {
  if (!has_cuda_kernels()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(17);
  int n = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    using Rope = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
    std::vector<std::pair<Rope, Rope>> pairs;
    for (int64_t b : {1, 8}) {
      // plain heads: q [b, 28, 1, 128] and k [b, 4, 1, 128] (transposed views of the projections), cos [b, 1, 1, 128]
      const at::Tensor qkv = at::randn({b, 1, (28 + 8) * 128}, o);
      const at::Tensor q = qkv.narrow(-1, 0, 28 * 128).view({b, 1, 28, 128}).transpose(1, 2);
      const at::Tensor k = qkv.narrow(-1, 28 * 128, 4 * 128).view({b, 1, 4, 128}).transpose(1, 2);
      const at::Tensor cos = at::randn({b, 1, 1, 128}, o), sin = at::randn({b, 1, 1, 128}, o);
      pairs.push_back({{q, cos, sin}, {k, cos, sin}});
      // MLA: the key [b, 1, 4, 32] with cos of its shape, the query's kept dims [b, 4, 7, 1, 32] with cos transposed
      const at::Tensor y = at::randn({b, 1, 28 * 128 + 4 * 32}, o);
      const at::Tensor kr = y.narrow(-1, 28 * 128, 4 * 32).view({b, 1, 4, 32});
      const at::Tensor qr = y.narrow(-1, 0, 28 * 128).view({b, 1, 28, 128}).transpose(1, 2).narrow(-1, 0, 32)
                                .reshape({b, 4, 7, 1, 32});
      const at::Tensor cm = at::randn({b, 1, 4, 32}, o), sm = at::randn({b, 1, 4, 32}, o);
      pairs.push_back({{kr, cm, sm}, {qr, cm.transpose(1, 2).unsqueeze(2), sm.transpose(1, 2).unsqueeze(2)}});
    }
    // past one launch's 4,096 blocks for the first (a grid-stride loop), and an empty second
    const at::Tensor big = at::randn({4200, 256, 8}, o), bc = at::randn({1, 256, 8}, o);
    pairs.push_back({{big, bc, bc}, {at::randn({2, 3, 1, 8}, o), at::randn({1, 1, 1, 8}, o), at::randn({1, 1, 1, 8}, o)}});
    pairs.push_back({{at::randn({2, 0, 8}, o), bc.narrow(1, 0, 1), bc.narrow(1, 0, 1)}, {big, bc, bc}});
    for (const auto& [a, b] : pairs) {
      const auto& [x1, c1, s1] = a;
      const auto& [x2, c2, s2] = b;
      const char* why = fused_rope_pair_unusable(x1, c1, s1, x2, c2, s2);
      ASSERT_EQ(why, nullptr) << why;
      const auto [out1, out2] = fused_rope_pair(x1, c1, s1, x2, c2, s2);
      const std::string what = std::string(c10::toString(dtype)) + " " + c10::str(x1.sizes()) + " with " +
                               c10::str(x2.sizes());
      EXPECT_TRUE(at::equal(out1, steps(x1, c1, s1))) << what << ": the first";
      EXPECT_TRUE(at::equal(out2, steps(x2, c2, s2))) << what << ": the second";
      ++n;
    }
  }
  EXPECT_EQ(n, 18);  // 3 dtypes x (2 batches x 2 model pairs + 2)
}

}  // namespace
}  // namespace vlm2mla
