// The float64 reference of a projection, y = x w^T (+ b), for the projection kernels' tests (test_gemv.cpp,
// test_gemm_rows.cpp), and the bound a kernel that sums in float32 and rounds once to the dtype meets against it.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

namespace vlm2mla::testing {

struct ProjectionReference {
  at::Tensor xw;   // x w^T in float64 [rows, out]
  at::Tensor ref;  // x w^T + b
  at::Tensor mag;  // sum |x| |w|: float32 summation's scale
};

// x [rows, in], w [out, in], b [out] or undefined, any dtype
inline ProjectionReference projection_reference(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const at::Tensor xd = x.to(at::kDouble), wd = w.to(at::kDouble);
  ProjectionReference r;
  r.xw = at::matmul(xd, wd.t());
  r.ref = b.defined() ? r.xw + b.to(at::kDouble) : r.xw;
  r.mag = at::matmul(xd.abs(), wd.abs().t());
  return r;
}

// The worst |y - ref| over its bound, |ref| unit + sum |x w| 1e-6 sqrt(in) (unit: the dtype's relative rounding step,
// 2^-8 for bf16, 2^-11 for fp16): at most 1 for a kernel summing in float32 and rounding once.
inline double worst_against_float64(const at::Tensor& y, const ProjectionReference& r, double unit, int64_t in) {
  const at::Tensor bound = r.ref.abs() * unit + r.mag * (1e-6 * std::sqrt(double(in))) + 1e-30;
  return ((y.to(at::kDouble) - r.ref).abs() / bound).max().item<double>();
}

}  // namespace vlm2mla::testing
