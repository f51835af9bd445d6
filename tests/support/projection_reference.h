// The float64 reference of a projection, y = x w^T (+ b), for the projection kernels' tests (test_gemv.cpp,
// test_gemm_rows.cpp), the bound a kernel that sums in float32 and rounds once to the dtype meets against it, and
// their refusals' check.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "support/test_support.h"

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

// A projection a kernel refuses: its inputs and a piece of the reason the kernel's *_unusable gives.
struct ProjectionRefusal {
  at::Tensor x, w, b;
  const char* expect;
  bool silu = false;  // the SiLU x up form's (test_gemm_rows.cpp)
};

// For each case, unusable(case) gives a reason holding case.expect, and run(case) throws an ArgumentError carrying it.
template <typename Unusable, typename Run>
void expect_projection_refusals(const std::vector<ProjectionRefusal>& cases, Unusable unusable, Run run) {
  for (const ProjectionRefusal& c : cases) {
    const char* why = unusable(c);
    ASSERT_NE(why, nullptr) << c.expect;
    EXPECT_NE(std::string(why).find(c.expect), std::string::npos) << why;
    const std::string error = argument_error([&] { run(c); });
    EXPECT_NE(error.find(why), std::string::npos) << error;
  }
}

}  // namespace vlm2mla::testing
