// The K/V factorisations against their definitions: Eckart-Young for the weight SVDs, METHOD.md's
// explicit whitened formula (with an inverse of C) where C is well-conditioned, optimality where it is
// rank-deficient, and the modality-decoupled case on synthetic activations.
#include <gtest/gtest.h>

#include <cmath>

#include "convert/low_rank.h"
#include "core/error.h"

namespace vlm2mla::convert {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::normal(0.0, 1.0, shape, gen, at::TensorOptions().dtype(at::kDouble));
}

// Covariance of rows X [n, d].
at::Tensor cov_of(const at::Tensor& x) { return x.t().matmul(x) / static_cast<double>(x.size(0)); }

TEST(LowRank, JointSvdIsEckartYoung) {
  at::Tensor w = randn({24, 40}, 1);
  at::Tensor s = at::linalg_svdvals(w);
  for (int64_t r : {1, 5, 24}) {
    LowRank f = joint_svd(w, r);
    EXPECT_EQ(f.up.sizes(), (std::vector<int64_t>{24, r}));
    EXPECT_EQ(f.down.sizes(), (std::vector<int64_t>{r, 40}));
    const double expected = s.narrow(0, r, 24 - r).pow(2).sum().sqrt().item<double>();
    EXPECT_NEAR((w - f.approx()).norm().item<double>(), expected, 1e-9) << "r=" << r;
    // Balanced: up^T up == down down^T == diag(S_r).
    EXPECT_LT((f.up.t().matmul(f.up) - f.down.matmul(f.down.t())).abs().max().item<double>(), 1e-9);
  }
}

TEST(LowRank, SplitSvdIsBlockDiagonalWithHalfRankEach) {
  at::Tensor wk = randn({12, 30}, 2), wv = randn({16, 30}, 3);
  LowRank f = split_svd(wk, wv, 10);
  ASSERT_EQ(f.up.sizes(), (std::vector<int64_t>{28, 10}));
  EXPECT_EQ(f.up.narrow(0, 0, 12).narrow(1, 5, 5).abs().max().item<double>(), 0.0);
  EXPECT_EQ(f.up.narrow(0, 12, 16).narrow(1, 0, 5).abs().max().item<double>(), 0.0);
  at::Tensor approx = f.approx();
  EXPECT_LT((approx.narrow(0, 0, 12) - joint_svd(wk, 5).approx()).abs().max().item<double>(), 1e-9);
  EXPECT_LT((approx.narrow(0, 12, 16) - joint_svd(wv, 5).approx()).abs().max().item<double>(), 1e-9);
  EXPECT_THROW(split_svd(wk, wv, 9), ArgumentError);
}

TEST(LowRank, WhitenedEqualsTheExplicitFormulaWhenCIsWellConditioned) {
  const int64_t d = 20, rows = 14, r = 6;
  at::Tensor w = randn({rows, d}, 4);
  at::Tensor x = randn({500, d}, 5) * at::linspace(0.2, 3.0, d, at::kDouble);  // anisotropic, full rank
  at::Tensor c = cov_of(x);
  WhiteningInfo info;
  LowRank f = whitened_svd(w, c, r, &info);
  EXPECT_EQ(info.numerical_rank, d);
  EXPECT_EQ(info.clamped, 0);
  // METHOD.md: C = U_s S_s U_s^T, D = W U_s S_s^(1/2) = U_d S_d V_d^T,
  // W_up = U_d S_d^(1/2), W_down = S_d^(1/2) V_d^T S_s^(-1/2) U_s^T.
  auto [ev, us] = at::linalg_eigh(c);
  at::Tensor dmat = w.matmul(us) * ev.sqrt().unsqueeze(0);
  auto [ud, sd, vdh] = at::linalg_svd(dmat, false);
  at::Tensor up = ud.narrow(1, 0, r) * sd.narrow(0, 0, r).sqrt().unsqueeze(0);
  at::Tensor down = (sd.narrow(0, 0, r).sqrt().unsqueeze(1) * vdh.narrow(0, 0, r)) .matmul(at::diag(ev.rsqrt())).matmul(us.t());
  EXPECT_LT((f.approx() - up.matmul(down)).abs().max().item<double>(), 1e-9);
  // Same factors up to the sign of each singular vector.
  EXPECT_LT((f.up.abs() - up.abs()).abs().max().item<double>(), 1e-8);
  EXPECT_LT((f.down.abs() - down.abs()).abs().max().item<double>(), 1e-8);
  // It minimises the activation error: below the plain SVD's, and equal to the tail of D's spectrum.
  const double err = activation_rel_error(w, f.approx(), c);
  EXPECT_LT(err, activation_rel_error(w, joint_svd(w, r).approx(), c));
  const double tail = sd.narrow(0, r, rows - r).pow(2).sum().sqrt().item<double>() / sd.pow(2).sum().sqrt().item<double>();
  EXPECT_NEAR(err, tail, 1e-9);
  // The activation error is what it says: ||(W - W') X^T|| / ||W X^T||.
  const double direct = ((w - f.approx()).matmul(x.t())).norm().item<double>() / w.matmul(x.t()).norm().item<double>();
  EXPECT_NEAR(err, direct, 1e-9);
}

TEST(LowRank, WhitenedHandlesARankDeficientCovariance) {
  const int64_t d = 32, rows = 16, r = 4;
  at::Tensor w = randn({rows, d}, 6);
  at::Tensor x = randn({10, d}, 7);  // 10 tokens: C has rank 10 of 32
  at::Tensor c = cov_of(x);
  WhiteningInfo info;
  LowRank f = whitened_svd(w, c, r, &info);
  EXPECT_EQ(info.numerical_rank, 10);
  EXPECT_TRUE(at::isfinite(f.up).all().item<bool>());
  EXPECT_TRUE(at::isfinite(f.down).all().item<bool>());
  // Optimal on the calibration activations: the tail of W X^T's spectrum.
  at::Tensor s = at::linalg_svdvals(w.matmul(x.t()));
  const double tail = s.narrow(0, r, s.size(0) - r).pow(2).sum().sqrt().item<double>() / s.pow(2).sum().sqrt().item<double>();
  EXPECT_NEAR(activation_rel_error(w, f.approx(), c), tail, 1e-9);
  // No blow-up outside the calibration span: W' = U_d U_d^T W is a projection of W.
  EXPECT_LE(f.approx().norm().item<double>(), w.norm().item<double>() + 1e-9);
  // With rank >= rank(W C^(1/2)) the calibration activations are reproduced exactly.
  LowRank full = whitened_svd(w, c, 10);
  EXPECT_LT(activation_rel_error(w, full.approx(), c), 1e-7);
}

// Image and text activations in different subspaces: one whitened SVD over both must share its rank
// between them; the modality-decoupled pair fits each exactly at the same rank.
TEST(LowRank, ModalityDecoupledBeatsWhitenedJointOnSeparateSubspaces) {
  const int64_t d = 32, rows = 24, r = 6;
  at::Tensor w = randn({rows, d}, 8);
  at::Tensor text = at::zeros({400, d}, at::kDouble), image = at::zeros({400, d}, at::kDouble);
  text.narrow(1, 0, 6).copy_(randn({400, 6}, 9));      // text lives in dims 0..5
  image.narrow(1, 16, 6).copy_(randn({400, 6}, 10));   // image in dims 16..21
  at::Tensor c_text = cov_of(text), c_image = cov_of(image);
  at::Tensor c_all = cov_of(at::cat({text, image}, 0));
  LowRank joint = whitened_svd(w, c_all, r);
  LowRank md_text = whitened_svd(w, c_text, r), md_image = whitened_svd(w, c_image, r);
  const double md_t = activation_rel_error(w, md_text.approx(), c_text);
  const double md_i = activation_rel_error(w, md_image.approx(), c_image);
  const double j_t = activation_rel_error(w, joint.approx(), c_text);
  const double j_i = activation_rel_error(w, joint.approx(), c_image);
  EXPECT_LT(md_t, 1e-7);
  EXPECT_LT(md_i, 1e-7);
  EXPECT_GT(j_t + j_i, 0.3) << "text " << j_t << " image " << j_i;
}

TEST(LowRank, ErrorsNameTheProblem) {
  at::Tensor w = randn({8, 12}, 11);
  EXPECT_THROW(joint_svd(w, 9), ArgumentError);
  EXPECT_THROW(joint_svd(w, 0), ArgumentError);
  EXPECT_THROW(whitened_svd(w, at::zeros({12, 12}, at::kDouble), 2), ArgumentError);
  EXPECT_THROW(whitened_svd(w, at::eye(11, at::kDouble), 2), ArgumentError);
}

}  // namespace
}  // namespace vlm2mla::convert
