// RoPE tables against the formulas computed independently in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "nn/rope.h"

namespace vlm2mla {
namespace {

std::vector<double> base_inv_freq(double theta, int64_t d) {
  std::vector<double> f;
  for (int64_t k = 0; k < d / 2; ++k) f.push_back(std::pow(theta, -2.0 * k / d));
  return f;
}

void expect_close(const at::Tensor& got, const std::vector<double>& want, double rel = 1e-6) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t k = 0; k < want.size(); ++k) {
    EXPECT_NEAR(got[k].item<double>(), want[k], rel * std::abs(want[k]) + 1e-30) << "pair " << k;
  }
}

TEST(Rope, DefaultAndLinear) {
  RopeParameters p;
  p.rope_theta = 10000.0;
  expect_close(make_rope_table(p, 128).inv_freq, base_inv_freq(1e4, 128));
  p.rope_type = RopeType::kLinear;
  p.factor = 4.0;
  auto want = base_inv_freq(1e4, 128);
  for (auto& w : want) w /= 4.0;
  expect_close(make_rope_table(p, 128).inv_freq, want);
}

TEST(Rope, Llama3ScalingThreeBands) {
  RopeParameters p;
  p.rope_type = RopeType::kLlama3;
  p.rope_theta = 500000.0;
  p.factor = 8.0;
  p.low_freq_factor = 1.0;
  p.high_freq_factor = 4.0;
  p.original_max_position_embeddings = 8192;
  std::vector<double> want;
  int bands[3] = {0, 0, 0};
  for (double f : base_inv_freq(5e5, 128)) {
    const double wavelen = 2 * M_PI / f, low = 8192.0 / 1.0, high = 8192.0 / 4.0;
    if (wavelen < high) {
      want.push_back(f), ++bands[0];
    } else if (wavelen > low) {
      want.push_back(f / 8.0), ++bands[2];
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      want.push_back((1 - smooth) * f / 8.0 + smooth * f), ++bands[1];
    }
  }
  EXPECT_GT(bands[0], 0);
  EXPECT_GT(bands[1], 0);
  EXPECT_GT(bands[2], 0);
  expect_close(make_rope_table(p, 128).inv_freq, want, 2e-6);
}

TEST(Rope, RotationPreservesPairNormsAndMatchesAngles) {
  RopeParameters p;
  RopeTable t = make_rope_table(p, 8);
  at::Tensor pos = at::tensor({0, 3, 7}, at::kLong).view({1, 3});
  RopeCosSin cs = rope_cos_sin(t, pos, at::kFloat);
  at::Tensor x = at::randn({1, 2, 3, 8});
  at::Tensor y = apply_rope(x, cs);
  for (int64_t k = 0; k < 4; ++k) {
    at::Tensor nx = x.select(-1, k).pow(2) + x.select(-1, k + 4).pow(2);
    at::Tensor ny = y.select(-1, k).pow(2) + y.select(-1, k + 4).pow(2);
    EXPECT_TRUE(at::allclose(nx, ny, 1e-5, 1e-6));
  }
  // Pair k of position 3 is rotated by 3 * theta_k.
  const double angle = 3 * std::pow(10000.0, -2.0 * 1 / 8);
  const double a = x[0][0][1][1].item<double>(), b = x[0][0][1][5].item<double>();
  EXPECT_NEAR(y[0][0][1][1].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-5);
  EXPECT_NEAR(y[0][0][1][5].item<double>(), b * std::cos(angle) + a * std::sin(angle), 1e-5);
  // Position 0 is the identity.
  EXPECT_TRUE(at::allclose(y.select(2, 0), x.select(2, 0)));
}

// The fused kernel's switch: on unless VLM2MLA_FUSED_ROPE=0; CPU tensors take the libtorch steps either
// way, in apply_rope's shapes and the MLA key/query shapes (cos broadcast over heads and query groups).
TEST(Rope, FusedSwitchLeavesCpuResultsUnchanged) {
  const char* env = std::getenv("VLM2MLA_FUSED_ROPE");
  const bool before = fused_rope_enabled();
  EXPECT_EQ(before, !(env && std::string(env) == "0"));
  RopeCosSin cs = rope_cos_sin(make_rope_table(RopeParameters{}, 8), at::arange(6, at::kLong).view({2, 3}), at::kBFloat16);
  at::Tensor x = at::randn({2, 3, 4, 8}).to(at::kBFloat16).transpose(1, 2);  // [b, h, s, d]
  at::Tensor k = at::randn({2, 3, 2, 8}).to(at::kBFloat16);                  // [b, s, h_kv, R]
  at::Tensor ck = at::randn({2, 3, 2, 8}).to(at::kBFloat16), sk = at::randn({2, 3, 2, 8}).to(at::kBFloat16);
  at::Tensor q = at::randn({2, 2, 3, 3, 8}).to(at::kBFloat16);               // [b, h_kv, g, s, R]
  at::Tensor cq = ck.transpose(1, 2).unsqueeze(2), sq = sk.transpose(1, 2).unsqueeze(2);  // [b, h_kv, 1, s, R]
  std::vector<at::Tensor> got[2];
  for (bool on : {false, true}) {
    set_fused_rope(on);
    EXPECT_EQ(fused_rope_enabled(), on);
    got[on] = {apply_rope(x, cs), apply_rope(k, ck, sk), apply_rope(q, cq, sq)};
  }
  set_fused_rope(before);
  const std::vector<at::Tensor> want = {x * cs.cos.unsqueeze(1) + rotate_half(x) * cs.sin.unsqueeze(1),
                                        k * ck + rotate_half(k) * sk, q * cq + rotate_half(q) * sq};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(at::equal(got[0][i], want[i])) << i;
    EXPECT_TRUE(at::equal(got[1][i], want[i])) << i;
  }
}

}  // namespace
}  // namespace vlm2mla
