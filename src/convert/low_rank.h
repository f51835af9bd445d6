// Low-rank factorisations of a layer's stacked K/V projection W = [W_kc; W_v] (METHOD.md section 4):
// W [rows, d] ~ up [rows, r] x down [r, d]. All in float64.
//
// The activation-aware ("whitened") form minimises ||(W - W') X^T||_F for activations X with
// C = X^T X / N. With C = U_s S_s U_s^T, D = W U_s S_s^(1/2) = W C^(1/2) and D = U_d S_d V_d^T,
// METHOD.md writes W_down = S_d^(1/2) V_d^T S_s^(-1/2) U_s^T; substituting V_d^T = S_d^(-1) U_d^T D
// gives the identical W_down = S_d^(-1/2) U_d^T W, which needs no inverse of C. So a rank-deficient
// C (fewer calibration tokens than d, dead channels) is handled exactly: the eigenvalues of C that
// are negative from round-off are clamped to 0 (counted in WhiteningInfo), nothing is inverted, and
// with a well-conditioned C the result is the exact whitened SVD. The only floor is on S_d when W C^(1/2)
// has rank below r (the up/down balance S_d^(+-1/2)); W' = U_d U_d^T W does not depend on it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace vlm2mla::convert {

struct LowRank {
  at::Tensor up;    // [rows, r] float64
  at::Tensor down;  // [r, d] float64
  at::Tensor approx() const { return at::matmul(up, down); }  // [rows, d]
};

struct WhiteningInfo {
  int64_t dim = 0;            // d
  int64_t numerical_rank = 0;  // eigenvalues of C above 1e-12 x the largest
  int64_t clamped = 0;        // eigenvalues < 0 (round-off) set to 0
  int64_t floored_singular = 0;  // singular values of W C^(1/2) among the kept r floored for the balance
  double condition = 0;       // largest / smallest positive eigenvalue of C
};

// W = U S V^T: up = U_r S_r^(1/2), down = S_r^(1/2) V_r^T (MHA2MLA's joint SVD).
LowRank joint_svd(const at::Tensor& w, int64_t r);

// K and V factorised separately with r/2 each (r even): down = [down_k; down_v], up block-diagonal,
// so the cache width equals joint's r. w_k [rows_k, d], w_v [rows_v, d]; up rows = rows_k + rows_v.
LowRank split_svd(const at::Tensor& w_k, const at::Tensor& w_v, int64_t r);

// The rank-r minimiser of ||(W - W') X^T|| for covariance C [d, d] (see the header comment).
LowRank whitened_svd(const at::Tensor& w, const at::Tensor& covariance, int64_t r,
                     WhiteningInfo* info = nullptr);

// ||(W - W') X^T||_F / ||W X^T||_F = sqrt(tr((W-W') C (W-W')^T) / tr(W C W^T)); 0 when W C W^T = 0.
double activation_rel_error(const at::Tensor& w, const at::Tensor& w_approx, const at::Tensor& covariance);

// ||W - W'||_F / ||W||_F.
double parameter_rel_error(const at::Tensor& w, const at::Tensor& w_approx);

}  // namespace vlm2mla::convert
