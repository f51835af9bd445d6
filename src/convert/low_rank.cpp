#include "convert/low_rank.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vlm2mla::convert {

namespace {

void check_rank(const at::Tensor& w, int64_t r, const char* what) {
  VLM2MLA_CHECK(w.dim() == 2, ArgumentError, what, ": W must be 2-D, got ", w.sizes());
  const int64_t max_r = std::min(w.size(0), w.size(1));
  VLM2MLA_CHECK(r > 0 && r <= max_r, ArgumentError, what, ": rank ", r, " outside [1, min(rows, d) = ",
                max_r, "] for W ", w.sizes());
}

// Up/down balanced by S^(1/2) from the left singular vectors u_r [rows, r] and values s_r [r] of
// some matrix whose column space W' lives in: W' = u_r u_r^T W, up = u_r S^(1/2), down = S^(-1/2) u_r^T W.
LowRank balanced(const at::Tensor& w, const at::Tensor& u_r, at::Tensor s_r, int64_t* floored) {
  const double top = s_r.numel() ? s_r[0].item<double>() : 0.0;
  const double floor = std::max(top * 1e-10, 1e-300);
  if (floored) *floored = (s_r < floor).sum().item<int64_t>();
  s_r = s_r.clamp_min(floor);
  LowRank out;
  out.up = u_r * s_r.sqrt().unsqueeze(0);                              // [rows, r]
  out.down = (u_r.t().matmul(w)) / s_r.sqrt().unsqueeze(1);            // [r, d]
  return out;
}

}  // namespace

LowRank joint_svd(const at::Tensor& w0, int64_t r) {
  check_rank(w0, r, "joint SVD");
  at::Tensor w = w0.to(at::kDouble);
  auto [u, s, vh] = at::linalg_svd(w, /*full_matrices=*/false);  // u [rows, k], s [k], vh [k, d]
  LowRank out;
  at::Tensor sq = s.narrow(0, 0, r).sqrt();
  out.up = u.narrow(1, 0, r) * sq.unsqueeze(0);    // [rows, r]
  out.down = vh.narrow(0, 0, r) * sq.unsqueeze(1);  // [r, d]
  return out;
}

LowRank split_svd(const at::Tensor& w_k, const at::Tensor& w_v, int64_t r) {
  VLM2MLA_CHECK(r % 2 == 0, ArgumentError, "split SVD: the latent width ", r,
                " must be even (r/2 for K and r/2 for V)");
  LowRank k = joint_svd(w_k, r / 2), v = joint_svd(w_v, r / 2);
  LowRank out;
  out.down = at::cat({k.down, v.down}, 0);  // [r, d]
  out.up = at::zeros({w_k.size(0) + w_v.size(0), r}, k.up.options());
  out.up.narrow(0, 0, w_k.size(0)).narrow(1, 0, r / 2).copy_(k.up);
  out.up.narrow(0, w_k.size(0), w_v.size(0)).narrow(1, r / 2, r / 2).copy_(v.up);
  return out;
}

LowRank whitened_svd(const at::Tensor& w0, const at::Tensor& c0, int64_t r, WhiteningInfo* info) {
  check_rank(w0, r, "whitened SVD");
  at::Tensor w = w0.to(at::kDouble);
  at::Tensor c = c0.to(w.device(), at::kDouble);
  VLM2MLA_CHECK(c.dim() == 2 && c.size(0) == w.size(1) && c.size(1) == w.size(1), ArgumentError,
                "whitened SVD: covariance must be [", w.size(1), ", ", w.size(1), "], got ", c.sizes());
  c = (c + c.t()) * 0.5;  // exact symmetry for eigh
  auto [evals, evecs] = at::linalg_eigh(c);  // ascending
  const double top = evals.numel() ? evals[-1].item<double>() : 0.0;
  VLM2MLA_CHECK(top > 0, ArgumentError,
                "whitened SVD: the calibration covariance is zero (no activations observed)");
  if (info) {
    info->dim = c.size(0);
    info->clamped = (evals < 0).sum().item<int64_t>();
    info->numerical_rank = (evals > top * 1e-12).sum().item<int64_t>();
    at::Tensor positive = evals.masked_select(evals > top * 1e-12);
    info->condition = top / positive.min().item<double>();
  }
  at::Tensor root = evals.clamp_min(0).sqrt();              // S_s^(1/2) [d]
  at::Tensor d = w.matmul(evecs) * root.unsqueeze(0);       // W U_s S_s^(1/2) [rows, d]
  auto [u, s, vh] = at::linalg_svd(d, /*full_matrices=*/false);
  int64_t floored = 0;
  LowRank out = balanced(w, u.narrow(1, 0, r), s.narrow(0, 0, r), &floored);
  if (info) info->floored_singular = floored;
  return out;
}

double activation_rel_error(const at::Tensor& w0, const at::Tensor& wa, const at::Tensor& c0) {
  at::Tensor w = w0.to(at::kDouble);
  at::Tensor c = c0.to(w.device(), at::kDouble);
  at::Tensor e = w - wa.to(w.device(), at::kDouble);
  const double den = (w.matmul(c) * w).sum().item<double>();
  if (den <= 0) return 0.0;
  const double num = std::max(0.0, (e.matmul(c) * e).sum().item<double>());
  return std::sqrt(num / den);
}

double parameter_rel_error(const at::Tensor& w0, const at::Tensor& wa) {
  at::Tensor w = w0.to(at::kDouble);
  const double den = w.norm().item<double>();
  return den > 0 ? (w - wa.to(w.device(), at::kDouble)).norm().item<double>() / den : 0.0;
}

}  // namespace vlm2mla::convert
