// The fused quantized-cache write (kernels/ops.h fused_ring_write, kernels/cuda/cache_write): where it is
// usable and why not, and on a CUDA device against its twin, kvcache/quant.h's quantized_ring_write (the
// libtorch steps RowStore::write_at runs otherwise): from the same store, step after step across the ring's
// wrap (positions below the window, at it, past it), both must leave every array bit for bit equal, for
// 2-, 4- and 8-bit codes, groups of 16 to 64, rows wider than the kernel's CTA, and bf16, fp16 and float32
// rings.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"
#include "kvcache/quant.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

// A latent write test's step, as its failures name it.
std::string step_label(at::ScalarType dtype, int64_t b, bool two_sets, int64_t p) {
  return std::string(c10::toString(dtype)) + " b " + std::to_string(b) + (two_sets ? " two sets" : " one set") +
         " pos " + std::to_string(p);
}

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

// The fused latent write (kernels/ops.h fused_latent_write): where it is usable and why not, and on a CUDA device
// against its twin, at::where choosing each sequence's latent by its step token's modality and an index_copy_ into
// each store: bit for bit, with and without the image set's rows (views of a wider product's rows, as the decode
// step's projections are), for bf16, fp16 and float32 stores, at positions across the capacity.
TEST(FusedLatentWrite, RefusesWhatItCannotWriteAndSaysWhy) {
  const at::Tensor rows = at::randn({2, 1, 128}), store = at::zeros({2, 16, 128}), pos = at::zeros({1}, at::kLong);
  ASSERT_NE(fused_latent_write_unusable(rows, {}, {}, rows, pos, store, store), nullptr);
  const std::string why = testing::argument_error([&] { fused_latent_write(rows, {}, {}, rows, pos, store, store); });
  EXPECT_NE(why.find("fused_latent_write"), std::string::npos) << why;
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::TensorOptions o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor r = at::randn({2, 1, 128}, o), st = at::zeros({2, 16, 128}, o), p = pos.cuda();
  const at::Tensor img = at::zeros({2, 1}, o.dtype(at::kBool));
  EXPECT_EQ(fused_latent_write_unusable(r, r, img, r, p, st, st), nullptr);
  auto expect = [](const char* got, const char* part) {
    ASSERT_NE(got, nullptr) << part;
    EXPECT_NE(std::string(got).find(part), std::string::npos) << got;
  };
  expect(fused_latent_write_unusable(r, r, {}, r, p, st, st), "go together");
  expect(fused_latent_write_unusable(r.to(at::kFloat), {}, {}, r, p, st, st), "dtypes");
  expect(fused_latent_write_unusable(r, {}, {}, r, p.to(at::kInt), st, st), "int64");
  expect(fused_latent_write_unusable(r, {}, {}, r, p, st.narrow(2, 0, 64), st), "match");
  expect(fused_latent_write_unusable(at::randn({2, 1, 130}, o).narrow(2, 1, 128), {}, {}, r, p, st, st), "16-byte");
  expect(fused_latent_write_unusable(r, r, img.to(at::kByte), r, p, st, st), "bool");
  expect(fused_latent_write_unusable(r, {}, {}, r.cpu(), p, st, st), "device");
}

TEST(FusedLatentWriteCuda, WritesTheTwinsBits) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(29);
  int n = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    for (int64_t b : {1, 5}) {
      for (bool two_sets : {false, true}) {
        const int64_t r = 128, hr = 128, cap = 12;
        at::Tensor lat_twin = at::randn({b, cap, r}, o), rope_twin = at::randn({b, cap, hr}, o);
        at::Tensor lat_fused = lat_twin.clone(), rope_fused = rope_twin.clone();
        for (int64_t p : {int64_t(0), int64_t(5), cap - 1}) {
          // the projections' output row [q | RoPE key | latent (text) | latent (image)], as linear_group's slices
          const at::Tensor y = at::randn({b, 1, 3584 + hr + 2 * r}, o);
          const at::Tensor k_rope = y.narrow(2, 3584, hr).contiguous();  // (RoPE applied: a new tensor)
          const at::Tensor text = y.narrow(2, 3584 + hr, r), image_rows = y.narrow(2, 3584 + hr + r, r);
          const at::Tensor image = two_sets ? (at::rand({b, 1}, o.dtype(at::kFloat)) < 0.5) : at::Tensor();
          const at::Tensor alt = two_sets ? image_rows : at::Tensor();
          const at::Tensor pos = at::full({1}, p, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
          const at::Tensor picked = two_sets ? at::where(image.unsqueeze(-1), image_rows, text) : text;
          lat_twin.index_copy_(1, pos, picked);
          rope_twin.index_copy_(1, pos, k_rope);
          const char* why = fused_latent_write_unusable(text, alt, image, k_rope, pos, lat_fused, rope_fused);
          ASSERT_EQ(why, nullptr) << why;
          fused_latent_write(text, alt, image, k_rope, pos, lat_fused, rope_fused);
          const std::string what = step_label(dtype, b, two_sets, p);
          ASSERT_TRUE(at::equal(lat_fused, lat_twin)) << what << ": the latent store";
          ASSERT_TRUE(at::equal(rope_fused, rope_twin)) << what << ": the RoPE key's store";
          ++n;
        }
      }
    }
  }
  EXPECT_EQ(n, 36);  // 3 dtypes x 2 batches x 2 layouts x 3 positions
}

// The fused K/V write (kernels/ops.h fused_kv_write): a dense cache's keys and values at one position in one launch,
// a row per kv head; where it is usable and why not, and on a CUDA device against its twin, an index_copy_ into each
// store: bit for bit, from views of a wider projection's rows (as the decode step's q/k/v are) and from contiguous
// rows, for bf16, fp16 and float32 stores, at positions across the capacity.
TEST(FusedKvWrite, RefusesWhatItCannotWriteAndSaysWhy) {
  const at::Tensor rows = at::randn({2, 4, 1, 64}), store = at::zeros({2, 4, 16, 64}), pos = at::zeros({1}, at::kLong);
  ASSERT_NE(fused_kv_write_unusable(rows, rows, pos, store, store), nullptr);
  const std::string why = testing::argument_error([&] { fused_kv_write(rows, rows, pos, store, store); });
  EXPECT_NE(why.find("fused_kv_write"), std::string::npos) << why;
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::TensorOptions o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor r = at::randn({2, 4, 1, 64}, o), st = at::zeros({2, 4, 16, 64}, o), p = pos.cuda();
  EXPECT_EQ(fused_kv_write_unusable(r, r, p, st, st), nullptr);
  auto expect = [](const char* got, const char* part) {
    ASSERT_NE(got, nullptr) << part;
    EXPECT_NE(std::string(got).find(part), std::string::npos) << got;
  };
  expect(fused_kv_write_unusable(r.to(at::kFloat), r, p, st, st), "dtypes");
  expect(fused_kv_write_unusable(r, r, p.to(at::kInt), st, st), "int64");
  expect(fused_kv_write_unusable(r, r, p, st.narrow(1, 0, 2), st), "match");
  expect(fused_kv_write_unusable(at::randn({2, 4, 1, 66}, o).narrow(3, 1, 64), r, p, st, st), "16-byte");
  expect(fused_kv_write_unusable(r, r.cpu(), p, st, st), "device");
}

TEST(FusedKvWriteCuda, WritesTheTwinsBits) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(31);
  int n = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    for (int64_t b : {1, 3}) {
      for (bool views : {false, true}) {
        const int64_t h = 4, d = 128, hq = 28, cap = 10;
        at::Tensor k_twin = at::randn({b, h, cap, d}, o), v_twin = at::randn({b, h, cap, d}, o);
        at::Tensor k_fused = k_twin.clone(), v_fused = v_twin.clone();
        for (int64_t p : {int64_t(0), int64_t(4), cap - 1}) {
          at::Tensor k, v;
          if (views) {  // [b, 1, (hq + 2 h) d] as the fused projection's output, heads split out and transposed
            const at::Tensor y = at::randn({b, 1, (hq + 2 * h) * d}, o);
            k = y.narrow(2, hq * d, h * d).view({b, 1, h, d}).transpose(1, 2);
            v = y.narrow(2, (hq + h) * d, h * d).view({b, 1, h, d}).transpose(1, 2);
          } else {
            k = at::randn({b, h, 1, d}, o);
            v = at::randn({b, h, 1, d}, o);
          }
          const at::Tensor pos = at::full({1}, p, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
          k_twin.index_copy_(2, pos, k);
          v_twin.index_copy_(2, pos, v);
          const char* why = fused_kv_write_unusable(k, v, pos, k_fused, v_fused);
          ASSERT_EQ(why, nullptr) << why;
          fused_kv_write(k, v, pos, k_fused, v_fused);
          const std::string what = std::string(c10::toString(dtype)) + " b " + std::to_string(b) +
                                   (views ? " views" : " contiguous") + " pos " + std::to_string(p);
          ASSERT_TRUE(at::equal(k_fused, k_twin)) << what << ": the keys";
          ASSERT_TRUE(at::equal(v_fused, v_twin)) << what << ": the values";
          ++n;
        }
      }
    }
  }
  EXPECT_EQ(n, 36);  // 3 dtypes x 2 batches x 2 layouts x 3 positions
}

// A fused pair's two stores against their twins', every array bit for bit.
void expect_pair_equal(const Store& lat_fused, const Store& lat_twin, const Store& rope_fused, const Store& rope_twin,
                       const std::string& what) {
  for (const auto& [f, t, store] : {std::tuple<const Store*, const Store*, const char*>{&lat_fused, &lat_twin, "latent"},
                                    {&rope_fused, &rope_twin, "RoPE key"}}) {
    ASSERT_TRUE(at::equal(f->window, t->window)) << what << ": the " << store << "'s ring";
    ASSERT_TRUE(at::equal(f->q.data, t->q.data)) << what << ": the " << store << "'s codes";
    ASSERT_TRUE(at::equal(f->q.scale, t->q.scale)) << what << ": the " << store << "'s scales";
    ASSERT_TRUE(at::equal(f->q.lo, t->q.lo)) << what << ": the " << store << "'s minimums";
  }
}

// The quantized pair (kernels/ops.h fused_ring_write_pair): a latent cache layer's two quantized stores in one launch,
// each sequence's latent picked by its step token's modality; against its twin, at::where and kvcache/quant.h's
// quantized_ring_write a store (the libtorch steps), step after step across the rings' wrap: every array bit for bit,
// with the two stores' own bits and groups, with and without the image set's rows (views of a wider product's
// rows), for bf16, fp16 and float32 rings.
TEST(FusedRingWritePair, RefusesWhatItCannotWriteAndSaysWhy) {
  const Store cpu = random_store(2, 4, 8, 64, 4, 32, at::kFloat, at::kCPU);
  const QuantizedStoreArrays cs{cpu.window, cpu.q, 4, 32};
  const at::Tensor rows = at::randn({2, 1, 64}), pos = at::zeros({1}, at::kLong);
  ASSERT_NE(fused_ring_write_pair_unusable(rows, {}, {}, rows, pos, cs, cs), nullptr);
  const std::string why = testing::argument_error([&] { fused_ring_write_pair(rows, {}, {}, rows, pos, cs, cs); });
  EXPECT_NE(why.find("fused_ring_write_pair"), std::string::npos) << why;
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::Device dev(at::kCUDA);
  const Store lat = random_store(2, 4, 8, 128, 4, 32, at::kBFloat16, dev), rope = random_store(2, 4, 8, 64, 4, 16, at::kBFloat16, dev);
  const QuantizedStoreArrays ls{lat.window, lat.q, 4, 32}, rs{rope.window, rope.q, 4, 16};
  const at::Tensor l = at::randn({2, 1, 128}).to(dev, at::kBFloat16), k = at::randn({2, 1, 64}).to(dev, at::kBFloat16);
  const at::Tensor img = at::zeros({2, 1}, at::TensorOptions().dtype(at::kBool).device(dev)), p = pos.to(dev);
  EXPECT_EQ(fused_ring_write_pair_unusable(l, l, img, k, p, ls, rs), nullptr);
  auto expect = [](const char* got, const char* part) {
    ASSERT_NE(got, nullptr) << part;
    EXPECT_NE(std::string(got).find(part), std::string::npos) << got;
  };
  expect(fused_ring_write_pair_unusable(l, l, {}, k, p, ls, rs), "go together");
  expect(fused_ring_write_pair_unusable(k, {}, {}, l, p, ls, rs), "match");  // the rows swapped
  expect(fused_ring_write_pair_unusable(l, l, img.to(at::kByte), k, p, ls, rs), "bool");
  const Store rope16 = random_store(2, 4, 8, 64, 4, 16, at::kHalf, dev);
  expect(fused_ring_write_pair_unusable(l, {}, {}, k.to(at::kHalf), p, ls, {rope16.window, rope16.q, 4, 16}),
         "differ in dtype");
  expect(fused_ring_write_pair_unusable(l, {}, {}, k, p, ls, {rope.window, rope.q, 4, 24}), "group");
}

TEST(FusedRingWritePairCuda, WritesTheTwinsBitsStepAfterStep) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(41);
  const at::Device dev(at::kCUDA);
  int steps = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (int64_t b : {1, 3}) {
      for (bool two_sets : {false, true}) {
        const int64_t r = 128, hr = 128, w = 4, cap = 2 * w + 5;
        // the latent's store 4-bit in groups of 32, the RoPE key's 8-bit in groups of 16
        Store lat_twin = random_store(b, w, cap, r, 4, 32, dtype, dev), lat_fused = lat_twin.clone();
        Store rope_twin = random_store(b, w, cap, hr, 8, 16, dtype, dev), rope_fused = rope_twin.clone();
        const QuantizedStoreArrays ls{lat_fused.window, lat_fused.q, 4, 32}, rs{rope_fused.window, rope_fused.q, 8, 16};
        for (int64_t p = 0; p < cap; ++p) {
          const at::Tensor y = (at::randn({b, 1, 3584 + hr + 2 * r}) * (1 + p % 3)).to(dev, dtype);
          const at::Tensor k_rope = y.narrow(2, 3584, hr).contiguous();
          const at::Tensor text = y.narrow(2, 3584 + hr, r), image_rows = y.narrow(2, 3584 + hr + r, r);
          const at::Tensor image =
              two_sets ? (at::rand({b, 1}, at::TensorOptions().device(dev)) < 0.5) : at::Tensor();
          const at::Tensor alt = two_sets ? image_rows : at::Tensor();
          const at::Tensor pos = at::full({1}, p, at::TensorOptions().dtype(at::kLong).device(dev));
          const at::Tensor picked = two_sets ? at::where(image.unsqueeze(-1), image_rows, text) : text;
          quantized_ring_write(picked, pos, lat_twin.window, lat_twin.q, 4, 32);
          quantized_ring_write(k_rope, pos, rope_twin.window, rope_twin.q, 8, 16);
          const char* why = fused_ring_write_pair_unusable(text, alt, image, k_rope, pos, ls, rs);
          ASSERT_EQ(why, nullptr) << why;
          fused_ring_write_pair(text, alt, image, k_rope, pos, ls, rs);
          const std::string what = step_label(dtype, b, two_sets, p);
          ASSERT_NO_FATAL_FAILURE(expect_pair_equal(lat_fused, lat_twin, rope_fused, rope_twin, what));
          ++steps;
        }
      }
    }
  }
  EXPECT_EQ(steps, 3 * 2 * 2 * 13);  // dtypes x batches x layouts x positions
}

// The step's RoPE in the latent writes' launch (kernels/ops.h's WriteRope, taken by fused_latent_write and
// fused_ring_write_pair): where it is usable and why not, and on a CUDA device against its twin, fused_rope_pair of
// the key and the queries' RoPE dims and then the write of the rotated key: the stores and the rotated queries bit
// for bit, from views of the fused projection's row as a decode step's are (the queries' RoPE dims a strided view by
// kv group, the key's rows strided, cos and sin one layer's slice of every layer's), for bf16, fp16 and float32.
struct RopeStep {
  at::Tensor text, alt, image, k_pre, k_rot, q_rot;
  WriteRope rope;
};

// b sequences' step with h_kv kv heads of `groups` query heads, R RoPE dims, latents of r; the twin's rotation too.
RopeStep rope_step(int64_t b, int64_t r, bool two_sets, at::ScalarType dtype, at::Device dev) {
  const int64_t h_kv = 4, groups = 7, h_q = h_kv * groups, dh = 128, R = 16, layers = 3;
  const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(dev);
  const at::Tensor y = at::randn({b, 1, h_q * dh + h_kv * R + 2 * r}, o);
  RopeStep st;
  const at::Tensor q_pre = y.narrow(2, 0, h_q * dh).view({b, 1, h_q, dh}).transpose(1, 2);
  st.rope.q = q_pre.narrow(-1, 0, R).reshape({b, h_kv, groups, 1, R});
  st.k_pre = y.narrow(2, h_q * dh, h_kv * R);
  st.text = y.narrow(2, h_q * dh + h_kv * R, r);
  st.alt = two_sets ? y.narrow(2, h_q * dh + h_kv * R + r, r) : at::Tensor();
  st.image = two_sets ? (at::rand({b, 1}, at::TensorOptions().device(dev)) < 0.5) : at::Tensor();
  st.rope.cos = at::randn({b, 1, layers, h_kv, R}, o).select(2, 1);
  st.rope.sin = at::randn({b, 1, layers, h_kv, R}, o).select(2, 1);
  st.rope.cos_q = st.rope.cos.transpose(1, 2).unsqueeze(2);
  st.rope.sin_q = st.rope.sin.transpose(1, 2).unsqueeze(2);
  auto [k_rot, q_rot] = fused_rope_pair(st.k_pre.view({b, 1, h_kv, R}), st.rope.cos, st.rope.sin, st.rope.q,
                                        st.rope.cos_q, st.rope.sin_q);
  st.k_rot = k_rot.reshape({b, 1, h_kv * R});
  st.q_rot = q_rot;
  return st;
}

TEST(WriteRope, RefusesWhatItCannotRotateAndSaysWhy) {
  const WriteRope cpu{at::zeros({1, 1, 4, 16}), at::zeros({1, 1, 4, 16}), at::zeros({1, 4, 7, 1, 16}),
                      at::zeros({1, 4, 1, 1, 16}), at::zeros({1, 4, 1, 1, 16})};
  ASSERT_NE(write_rope_unusable(at::zeros({1, 1, 64}), cpu), nullptr);
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::Device dev(at::kCUDA);
  const RopeStep st = rope_step(2, 128, true, at::kBFloat16, dev);
  EXPECT_EQ(write_rope_unusable(st.k_pre, st.rope), nullptr);
  auto expect = [](const char* got, const char* part) {
    ASSERT_NE(got, nullptr) << part;
    EXPECT_NE(std::string(got).find(part), std::string::npos) << got;
  };
  WriteRope r = st.rope;
  r.cos = r.cos.narrow(3, 0, 15);
  expect(write_rope_unusable(st.k_pre, r), "[b, 1, h_kv, R]");
  r = st.rope;
  r.sin = r.sin.to(at::kHalf);
  expect(write_rope_unusable(st.k_pre, r), "dtype");
  r = st.rope;
  r.cos_q = r.cos_q.narrow(4, 0, 8);
  expect(write_rope_unusable(st.k_pre, r), "broadcast");
  expect(write_rope_unusable(st.k_pre.unsqueeze(1), st.rope), "[b, 1, n]");
  // the writes name it
  const at::Tensor lat = at::zeros({2, 8, 128}, st.k_pre.options()), kst = at::zeros({2, 8, 64}, st.k_pre.options());
  const at::Tensor pos = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(dev));
  r = st.rope;
  r.cos = r.cos.narrow(3, 0, 15);
  expect(fused_latent_write_unusable(st.text, st.alt, st.image, st.k_pre, pos, lat, kst, &r), "[b, 1, h_kv, R]");
  const std::string why = testing::argument_error(
      [&] { fused_latent_write(st.text, st.alt, st.image, st.k_pre, pos, lat, kst, &r); });
  EXPECT_NE(why.find("fused_latent_write"), std::string::npos) << why;
}

TEST(FusedLatentWriteCuda, RotatesAsTheRopePairThenTheWrite) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(43);
  const at::Device dev(at::kCUDA);
  int n = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(dev);
    for (int64_t b : {1, 3}) {
      for (bool two_sets : {false, true}) {
        const int64_t r = 128, cap = 12;
        at::Tensor lat_twin = at::randn({b, cap, r}, o), rope_twin = at::randn({b, cap, 64}, o);
        at::Tensor lat_fused = lat_twin.clone(), rope_fused = rope_twin.clone();
        for (int64_t p : {int64_t(0), int64_t(5), cap - 1}) {
          const RopeStep st = rope_step(b, r, two_sets, dtype, dev);
          const at::Tensor pos = at::full({1}, p, at::TensorOptions().dtype(at::kLong).device(dev));
          fused_latent_write(st.text, st.alt, st.image, st.k_rot, pos, lat_twin, rope_twin);
          const char* why =
              fused_latent_write_unusable(st.text, st.alt, st.image, st.k_pre, pos, lat_fused, rope_fused, &st.rope);
          ASSERT_EQ(why, nullptr) << why;
          const at::Tensor q =
              fused_latent_write(st.text, st.alt, st.image, st.k_pre, pos, lat_fused, rope_fused, &st.rope);
          const std::string what = step_label(dtype, b, two_sets, p);
          ASSERT_TRUE(at::equal(lat_fused, lat_twin)) << what << ": the latent store";
          ASSERT_TRUE(at::equal(rope_fused, rope_twin)) << what << ": the RoPE key's store";
          ASSERT_EQ(q.sizes(), st.q_rot.sizes()) << what;
          ASSERT_TRUE(at::equal(q, st.q_rot)) << what << ": the rotated queries";
          ++n;
        }
      }
    }
  }
  EXPECT_EQ(n, 36);  // 3 dtypes x 2 batches x 2 layouts x 3 positions
}

TEST(FusedRingWritePairCuda, RotatesAsTheRopePairThenTheWrite) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(47);
  const at::Device dev(at::kCUDA);
  int steps = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (int64_t b : {1, 3}) {
      for (bool two_sets : {false, true}) {
        const int64_t r = 128, w = 4, cap = 2 * w + 3;
        Store lat_twin = random_store(b, w, cap, r, 4, 32, dtype, dev), lat_fused = lat_twin.clone();
        Store rope_twin = random_store(b, w, cap, 64, 8, 16, dtype, dev), rope_fused = rope_twin.clone();
        const QuantizedStoreArrays lt{lat_twin.window, lat_twin.q, 4, 32}, rt{rope_twin.window, rope_twin.q, 8, 16};
        const QuantizedStoreArrays lf{lat_fused.window, lat_fused.q, 4, 32}, rf{rope_fused.window, rope_fused.q, 8, 16};
        for (int64_t p = 0; p < cap; ++p) {
          const RopeStep st = rope_step(b, r, two_sets, dtype, dev);
          const at::Tensor pos = at::full({1}, p, at::TensorOptions().dtype(at::kLong).device(dev));
          fused_ring_write_pair(st.text, st.alt, st.image, st.k_rot, pos, lt, rt);
          const char* why = fused_ring_write_pair_unusable(st.text, st.alt, st.image, st.k_pre, pos, lf, rf, &st.rope);
          ASSERT_EQ(why, nullptr) << why;
          const at::Tensor q = fused_ring_write_pair(st.text, st.alt, st.image, st.k_pre, pos, lf, rf, &st.rope);
          const std::string what = step_label(dtype, b, two_sets, p);
          ASSERT_NO_FATAL_FAILURE(expect_pair_equal(lat_fused, lat_twin, rope_fused, rope_twin, what));
          ASSERT_TRUE(at::equal(q, st.q_rot)) << what << ": the rotated queries";
          ++steps;
        }
      }
    }
  }
  EXPECT_EQ(steps, 3 * 2 * 2 * 11);  // dtypes x batches x layouts x positions
}

}  // namespace
}  // namespace vlm2mla
