// The fused quantized-cache write (kernels/ops.h fused_ring_write, kernels/cuda/cache_write): where it is
// usable and why not, and on a CUDA device against its twin, kvcache/quant.h's quantized_ring_write (the
// libtorch steps RowStore::write_at runs otherwise): from the same store, step after step across the ring's
// wrap (positions below the window, at it, past it), both must leave every array bit for bit equal, for
// 2-, 4- and 8-bit codes, groups of 16 to 64, rows wider than the kernel's CTA, and bf16, fp16 and float32
// rings.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"
#include "kvcache/quant.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

struct Store {
  at::Tensor window;
  QuantizedRows q;
  Store clone() const { return {window.clone(), {q.data.clone(), q.scale.clone(), q.lo.clone()}}; }
};

// A store with random contents (the ring as if written, the quantized arrays as if filled).
Store random_store(int64_t b, int64_t w, int64_t cap, int64_t n, int64_t bits, int64_t group, at::ScalarType dtype,
                   at::Device dev) {
  Store s;
  s.window = (at::randn({b, w, n}) * 3).to(dev, dtype);
  s.q.data = at::randint(0, 256, {b, cap, n * bits / 8}, at::TensorOptions().dtype(at::kByte)).to(dev);
  s.q.scale = at::rand({b, cap, n / group}).to(dev, at::kHalf);
  s.q.lo = at::randn({b, cap, n / group}).to(dev, at::kHalf);
  return s;
}

TEST(FusedRingWrite, CpuStoresAreNotUsableAndSayWhy) {
  Store s = random_store(2, 4, 8, 64, 4, 32, at::kFloat, at::kCPU);
  const at::Tensor rows = at::randn({2, 1, 64}), pos = at::zeros({1}, at::kLong);
  const char* why = fused_ring_write_unusable(rows, pos, s.window, s.q, 4, 32);
  ASSERT_NE(why, nullptr);
  const std::string refused = testing::argument_error([&] { fused_ring_write(rows, pos, s.window, s.q, 4, 32); });
  EXPECT_NE(refused.find("fused_ring_write"), std::string::npos) << refused;
}

TEST(FusedRingWriteCuda, RefusalsNameTheirReason) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::Device dev(at::kCUDA);
  Store s = random_store(2, 4, 8, 64, 4, 32, at::kBFloat16, dev);
  const at::Tensor rows = at::randn({2, 1, 64}).to(dev, at::kBFloat16);
  const at::Tensor pos = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(dev));
  EXPECT_EQ(fused_ring_write_unusable(rows, pos, s.window, s.q, 4, 32), nullptr);
  auto expect = [](const char* why, const std::string& part) {
    ASSERT_NE(why, nullptr) << "expected a refusal naming " << part;
    EXPECT_NE(std::string(why).find(part), std::string::npos) << why;
  };
  expect(fused_ring_write_unusable(rows.to(at::kHalf), pos, s.window, s.q, 4, 32), "dtype");
  expect(fused_ring_write_unusable(rows, pos.to(at::kInt), s.window, s.q, 4, 32), "int64");
  expect(fused_ring_write_unusable(rows, pos, s.window, s.q, 3, 32), "bits");
  expect(fused_ring_write_unusable(rows, pos, s.window, s.q, 4, 24), "group");
  expect(fused_ring_write_unusable(rows.narrow(2, 0, 32), pos, s.window, s.q, 4, 32), "match");
  expect(fused_ring_write_unusable(rows, pos, s.window, s.q, 8, 32), "shapes");
  expect(fused_ring_write_unusable(rows.cpu(), pos, s.window, s.q, 4, 32), "device");
}

TEST(FusedRingWriteCuda, WritesTheTwinsBitsStepAfterStep) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(23);
  const at::Device dev(at::kCUDA);
  struct Case {
    int64_t b, w, n, bits, group;
    at::ScalarType dtype;
  };
  const std::vector<Case> cases = {{3, 4, 128, 4, 32, at::kBFloat16}, {1, 128, 128, 4, 32, at::kBFloat16},
                                   {2, 5, 96, 4, 16, at::kHalf},      {2, 3, 128, 8, 64, at::kFloat},
                                   {2, 4, 64, 2, 16, at::kBFloat16},  {1, 2, 8192, 4, 32, at::kBFloat16},
                                   {4, 6, 256, 8, 32, at::kHalf}};
  for (const Case& c : cases) {
    const int64_t cap = 2 * c.w + 9;
    Store twin = random_store(c.b, c.w, cap, c.n, c.bits, c.group, c.dtype, dev), fused = twin.clone();
    for (int64_t p = 0; p < cap; ++p) {  // below the window, at it, past it: every slot wraps at least twice
      const at::Tensor rows = (at::randn({c.b, 1, c.n}) * (1 + p % 3)).to(dev, c.dtype);
      const at::Tensor pos = at::full({1}, p, at::TensorOptions().dtype(at::kLong).device(dev));
      quantized_ring_write(rows, pos, twin.window, twin.q, c.bits, c.group);
      const char* why = fused_ring_write_unusable(rows, pos, fused.window, fused.q, c.bits, c.group);
      ASSERT_EQ(why, nullptr) << why;
      fused_ring_write(rows, pos, fused.window, fused.q, c.bits, c.group);
      const std::string what = std::string(c10::toString(c.dtype)) + " bits " + std::to_string(c.bits) + " group " +
                               std::to_string(c.group) + " n " + std::to_string(c.n) + " w " + std::to_string(c.w) +
                               " pos " + std::to_string(p);
      ASSERT_TRUE(at::equal(fused.window, twin.window)) << what << ": the ring";
      ASSERT_TRUE(at::equal(fused.q.data, twin.q.data)) << what << ": the codes";
      ASSERT_TRUE(at::equal(fused.q.scale, twin.q.scale)) << what << ": the scales";
      ASSERT_TRUE(at::equal(fused.q.lo, twin.q.lo)) << what << ": the minimums";
    }
  }
}

}  // namespace
}  // namespace vlm2mla
