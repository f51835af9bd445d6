// linear_group (nn/layers.h): members stored as adjacent row blocks of one tensor (fuse_linears) run as
// one GEMM whose slices equal the separate linears (the slow twin); anything else (other storages, a
// gap, another order, per-member copies, gradients) runs separately. Members without a bias in a group
// with biases get zero ones.
#include <gtest/gtest.h>

#include <set>

#include "io/safetensors.h"
#include "nn/layers.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

LinearWeights random_linear(int64_t out, int64_t in, bool bias, at::Generator& gen) {
  LinearWeights w;
  w.weight = at::normal(0.0, 1.0, {out, in}, gen);
  if (bias) w.bias = at::normal(0.0, 1.0, {out}, gen);
  return w;
}

LinearWeights copy_of(const LinearWeights& w) {
  return {w.weight.clone(), w.bias.defined() ? w.bias.clone() : at::Tensor()};
}

// max |a - b| / max |b|
double rel(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

bool same_storage(const at::Tensor& a, const at::Tensor& b) {
  return a.storage().unsafeGetStorageImpl() == b.storage().unsafeGetStorageImpl();
}

// The group's results against the separate linears of (unfused) copies of the members.
void expect_equal_to_separate(const at::Tensor& x, const std::vector<const LinearWeights*>& members,
                              const std::vector<LinearWeights>& reference) {
  std::vector<at::Tensor> y = linear_group(x, members);
  ASSERT_EQ(y.size(), reference.size());
  for (size_t i = 0; i < y.size(); ++i) {
    at::Tensor expected = at::linear(x, reference[i].weight, reference[i].bias);
    ASSERT_EQ(y[i].sizes(), expected.sizes()) << "member " << i;
    EXPECT_LT(rel(y[i], expected), 1e-6) << "member " << i;
  }
}

class LinearGroup : public ::testing::TestWithParam<bool> {};  // with or without biases

TEST_P(LinearGroup, FusedMembersRunAsOneGemmEqualToTheSeparateLinears) {
  const bool bias = GetParam();
  at::Generator gen = at::detail::createCPUGenerator(1);
  LinearWeights q = random_linear(8, 16, bias, gen), k = random_linear(4, 16, bias, gen), v = random_linear(4, 16, bias, gen);
  const std::vector<LinearWeights> reference = {copy_of(q), copy_of(k), copy_of(v)};
  at::Tensor x = at::normal(0.0, 1.0, {2, 5, 16}, gen);  // [b, s, in]
  EXPECT_FALSE(fusable({&q, &k, &v}));
  // Unfused: the slow twin, one linear each (its own result tensors).
  std::vector<at::Tensor> separate = linear_group(x, {&q, &k, &v});
  EXPECT_FALSE(same_storage(separate[0], separate[1]));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(at::equal(separate[i], at::linear(x, reference[i].weight, reference[i].bias)));
  }

  fuse_linears({&q, &k, &v});
  EXPECT_TRUE(fusable({&q, &k, &v}));
  EXPECT_TRUE(same_storage(q.weight, v.weight));
  EXPECT_EQ(q.weight.storage().nbytes(), (8 + 4 + 4) * 16 * sizeof(float));  // the same bytes, in one tensor
  EXPECT_EQ(k.weight.storage_offset(), 8 * 16);
  EXPECT_TRUE(at::equal(k.weight, reference[1].weight));
  EXPECT_EQ(q.bias.defined(), bias);
  if (bias) {
    EXPECT_TRUE(same_storage(q.bias, v.bias));
    EXPECT_TRUE(at::equal(v.bias, reference[2].bias));
  }
  std::vector<at::Tensor> fused = linear_group(x, {&q, &k, &v});
  EXPECT_TRUE(same_storage(fused[0], fused[2])) << "one GEMM: the results are slices of one tensor";
  expect_equal_to_separate(x, {&q, &k, &v}, reference);
  // Any prefix or inner run is one GEMM too; a 2-D input as well.
  EXPECT_TRUE(fusable({&k, &v}));
  expect_equal_to_separate(x, {&q, &k}, {reference[0], reference[1]});
  expect_equal_to_separate(x.view({10, 16}), {&k, &v}, {reference[1], reference[2]});
  // fuse_linears again: nothing to do (the same storage).
  const void* storage = q.weight.storage().unsafeGetStorageImpl();
  fuse_linears({&q, &k, &v});
  EXPECT_EQ(q.weight.storage().unsafeGetStorageImpl(), storage);
}

TEST_P(LinearGroup, MembersThatAreNotAdjacentRunSeparately) {
  const bool bias = GetParam();
  at::Generator gen = at::detail::createCPUGenerator(2);
  LinearWeights q = random_linear(8, 16, bias, gen), k = random_linear(4, 16, bias, gen), v = random_linear(4, 16, bias, gen);
  const std::vector<LinearWeights> reference = {copy_of(q), copy_of(k), copy_of(v)};
  at::Tensor x = at::normal(0.0, 1.0, {3, 16}, gen);
  fuse_linears({&q, &k, &v});
  // Another order, or a gap (k left out): q and v are not adjacent.
  EXPECT_FALSE(fusable({&k, &q}));
  EXPECT_FALSE(fusable({&q, &v}));
  expect_equal_to_separate(x, {&k, &q}, {reference[1], reference[0]});
  std::vector<at::Tensor> gap = linear_group(x, {&q, &v});
  EXPECT_FALSE(same_storage(gap[0], gap[1]));
  expect_equal_to_separate(x, {&q, &v}, {reference[0], reference[2]});
  // Per-member copies (what layer_to's copy to another device makes of a fused layer): separate.
  LinearWeights qc = copy_of(q), kc = copy_of(k), vc = copy_of(v);
  EXPECT_FALSE(fusable({&qc, &kc, &vc}));
  expect_equal_to_separate(x, {&qc, &kc, &vc}, reference);
  // A run of two then a copy: one GEMM for the run, the copy alone.
  std::vector<at::Tensor> mixed = linear_group(x, {&q, &k, &vc});
  EXPECT_TRUE(same_storage(mixed[0], mixed[1]));
  EXPECT_FALSE(same_storage(mixed[1], mixed[2]));
  expect_equal_to_separate(x, {&q, &k, &vc}, reference);
  // Weights that want gradients are never read through the fused block.
  LinearWeights qg = q, kg = k;
  qg.weight = q.weight.detach().requires_grad_(true);  // the same storage, but a leaf of its own
  EXPECT_TRUE(same_storage(qg.weight, kg.weight));
  EXPECT_FALSE(fusable({&qg, &kg}));
}

INSTANTIATE_TEST_SUITE_P(Bias, LinearGroup, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "WithBias" : "WithoutBias"; });

// Members of which only some have a bias: the unbiased ones get a zero bias (rows of the block's bias
// tensor) and all run as one GEMM, equal to the separate linears of the original, unbiased members. Members
// of another dtype form a block of their own; a block of one member is left alone.
TEST(LinearGroupMixed, UnbiasedMembersGetZeroBiasesAndJoinTheBlock) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  LinearWeights q = random_linear(8, 16, true, gen), kr = random_linear(4, 16, true, gen);
  LinearWeights a0 = random_linear(3, 16, false, gen), a1 = random_linear(3, 16, false, gen);
  const std::vector<LinearWeights> reference = {copy_of(q), copy_of(kr), copy_of(a0), copy_of(a1)};
  ASSERT_FALSE(reference[2].bias.defined());
  fuse_linears({&q, &kr, &a0, &a1});
  EXPECT_TRUE(fusable({&q, &kr, &a0, &a1}));
  EXPECT_EQ(q.weight.storage().nbytes(), (8 + 4 + 3 + 3) * 16 * sizeof(float));  // the weights' bytes
  // The biases: one tensor of every member's rows, the added ones exactly zero, the others unchanged.
  ASSERT_TRUE(a0.bias.defined() && a1.bias.defined());
  EXPECT_TRUE(same_storage(q.bias, a1.bias));
  EXPECT_EQ(q.bias.storage().nbytes(), (8 + 4 + 3 + 3) * sizeof(float));
  EXPECT_EQ(a0.bias.sizes(), at::IntArrayRef({3}));
  EXPECT_TRUE(at::equal(a0.bias, at::zeros({3})));
  EXPECT_TRUE(at::equal(a1.bias, at::zeros({3})));
  EXPECT_TRUE(at::equal(q.bias, reference[0].bias));
  EXPECT_TRUE(at::equal(kr.bias, reference[1].bias));
  at::Tensor x = at::normal(0.0, 1.0, {2, 3, 16}, gen);
  std::vector<at::Tensor> y = linear_group(x, {&q, &kr, &a0, &a1});
  EXPECT_TRUE(same_storage(y[0], y[3])) << "one GEMM: the results are slices of one tensor";
  expect_equal_to_separate(x, {&q, &kr, &a0, &a1}, reference);
  // Unbiased members first: the same, the zeros at the front.
  LinearWeights u = random_linear(3, 16, false, gen), v = random_linear(4, 16, true, gen);
  const std::vector<LinearWeights> uv = {copy_of(u), copy_of(v)};
  fuse_linears({&u, &v});
  EXPECT_TRUE(fusable({&u, &v}));
  EXPECT_EQ(u.bias.storage_offset(), 0);
  EXPECT_TRUE(at::equal(u.bias, at::zeros({3})));
  expect_equal_to_separate(x, {&u, &v}, uv);
  // Again: nothing to do (the same storages).
  const void* storage = q.bias.storage().unsafeGetStorageImpl();
  fuse_linears({&q, &kr, &a0, &a1});
  EXPECT_EQ(q.bias.storage().unsafeGetStorageImpl(), storage);
  // Biases of another dtype: a block of their own.
  LinearWeights b32 = random_linear(4, 16, true, gen), b64 = random_linear(4, 16, true, gen), n = random_linear(4, 16, false, gen);
  b64.bias = b64.bias.to(at::kDouble);
  fuse_linears({&b32, &n, &b64});
  EXPECT_TRUE(fusable({&b32, &n}));
  EXPECT_FALSE(same_storage(n.weight, b64.weight));
  EXPECT_EQ(b64.bias.scalar_type(), at::kDouble);

  LinearWeights single = random_linear(4, 16, true, gen), other = random_linear(4, 16, false, gen);
  other.weight = other.weight.to(at::kDouble);
  const at::Tensor before = single.weight;
  fuse_linears({&single, &other});  // blocks of one (another dtype): untouched, no zero bias
  EXPECT_TRUE(before.is_same(single.weight));
  EXPECT_FALSE(other.bias.defined());
  LinearWeights f32 = random_linear(4, 16, false, gen), f64 = random_linear(4, 16, false, gen);
  f64.weight = f64.weight.to(at::kDouble);
  fuse_linears({&f32, &f64});
  EXPECT_FALSE(same_storage(f32.weight, f64.weight));
  LinearWeights empty, w = random_linear(4, 16, false, gen);
  fuse_linears({&w, &empty});  // an undefined weight (a decoder built from shapes): nothing fused
  EXPECT_EQ(w.weight.storage().nbytes(), 4 * 16 * sizeof(float));
}

// The safetensors writer takes fused members (row-block views at an offset of one storage) as they are.
TEST(LinearGroupMixed, FusedViewsWriteAsTheirOwnValues) {
  at::Generator gen = at::detail::createCPUGenerator(4);
  LinearWeights q = random_linear(8, 16, true, gen), k = random_linear(4, 16, true, gen);
  fuse_linears({&q, &k});
  ASSERT_GT(k.weight.storage_offset(), 0);
  testing::TempDir dir;
  io::write_safetensors(dir.file("w.safetensors"), {{"k.weight", k.weight}, {"k.bias", k.bias}, {"q.weight", q.weight}});
  auto back = io::read_safetensors(dir.file("w.safetensors"));
  EXPECT_TRUE(at::equal(back.at("k.weight"), k.weight));
  EXPECT_TRUE(at::equal(back.at("k.bias"), k.bias));
  EXPECT_TRUE(at::equal(back.at("q.weight"), q.weight));
}

}  // namespace
}  // namespace vlm2mla
