#include "kernels/mla_decode_io.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace vlm2mla {
namespace {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// `name` must be a contiguous `dtype` tensor of `shape` (named `dims`, e.g. "[b, t_cap, r_kv]") on `device`.
void expect(const at::Tensor& t, const char* name, std::initializer_list<at::ScalarType> dtypes,
            const std::vector<int64_t>& shape, const char* dims, at::Device device) {
  std::ostringstream want;
  for (auto it = dtypes.begin(); it != dtypes.end(); ++it) want << (it == dtypes.begin() ? "" : "/") << *it;
  want << " " << dims << " = " << shape_str(shape);
  VLM2MLA_CHECK(t.defined(), ArgumentError, "mla_decode: ", name, " is missing (expected ", want.str(), ")");
  bool dtype_ok = false;
  for (at::ScalarType d : dtypes) dtype_ok = dtype_ok || t.scalar_type() == d;
  VLM2MLA_CHECK(dtype_ok && t.sizes() == at::IntArrayRef(shape), ArgumentError, "mla_decode: ", name,
                " must be ", want.str(), ", got ", t.scalar_type(), " ", shape_str(t.sizes()));
  VLM2MLA_CHECK(t.device() == device, ArgumentError, "mla_decode: ", name, " is on ", t.device(),
                ", the queries on ", device);
}

void expect_float(const at::Tensor& t, const char* name, const std::vector<int64_t>& shape, const char* dims,
                  at::Device device) {
  VLM2MLA_CHECK(t.defined(), ArgumentError, "mla_decode: ", name, " is missing (expected a float tensor ", dims,
                " = ", shape_str(shape), ")");
  VLM2MLA_CHECK(at::isFloatingType(t.scalar_type()), ArgumentError, "mla_decode: ", name,
                " must be a floating-point tensor, got ", t.scalar_type());
  expect(t, name, {t.scalar_type()}, shape, dims, device);
}

void expect_contiguous(const at::Tensor& t, const char* name) {
  VLM2MLA_CHECK(t.is_contiguous(), ArgumentError, "mla_decode: ", name,
                " must be contiguous (cache arrays are read in place, never copied)");
}

}  // namespace

MlaDecodeShape check_mla_decode_inputs(const MlaDecodeInputs& in) {
  MlaDecodeShape s;
  VLM2MLA_CHECK(in.wide_warps == 0 || in.wide_warps == 8 || in.wide_warps == 16, ArgumentError,
                "mla_decode: wide_warps must be 0 (the plan's), 8 or 16, got ", in.wide_warps);
  VLM2MLA_CHECK(in.wgmma_consumers == 0 || in.wgmma_consumers == 2 || in.wgmma_consumers == 3, ArgumentError,
                "mla_decode: wgmma_consumers must be 0 (the plan's), 2 or 3, got ", in.wgmma_consumers);
  VLM2MLA_CHECK(in.wgmma_producers >= -1 && in.wgmma_producers <= 2, ArgumentError,
                "mla_decode: wgmma_producers must be 0 (the plan's), 1, 2 or -1 (none), got ", in.wgmma_producers);
  VLM2MLA_CHECK(in.qa.defined() && in.qa.dim() == 4, ArgumentError,
                "mla_decode: qa must be [n_mod, b, h_q, r_kv], got ",
                in.qa.defined() ? shape_str(in.qa.sizes()) : std::string("nothing"));
  s.n_mod = in.qa.size(0);
  s.b = in.qa.size(1);
  s.h_q = in.qa.size(2);
  s.r_kv = in.qa.size(3);
  s.device = in.qa.device();
  VLM2MLA_CHECK(s.device.is_cpu() || s.device.is_cuda(), ArgumentError, "mla_decode: tensors on ", s.device,
                ": only CPU and CUDA are supported");
  VLM2MLA_CHECK(s.n_mod == 1 || s.n_mod == 2, ArgumentError, "mla_decode: qa's first dim (n_mod) must be 1 or 2, got ",
                s.n_mod);
  VLM2MLA_CHECK(s.b > 0 && s.h_q > 0, ArgumentError, "mla_decode: qa has no sequences or no heads");
  VLM2MLA_CHECK(s.r_kv > 0 && s.r_kv % 8 == 0, ArgumentError, "mla_decode: r_kv (qa's last dim) must be a positive "
                "multiple of 8, got ", s.r_kv);
  expect_float(in.qa, "qa", {s.n_mod, s.b, s.h_q, s.r_kv}, "[n_mod, b, h_q, r_kv]", s.device);
  VLM2MLA_CHECK(in.qr.defined() && in.qr.dim() == 3, ArgumentError, "mla_decode: qr must be [b, h_q, d_rope]");
  s.d_rope = in.qr.size(2);
  VLM2MLA_CHECK(s.d_rope > 0 && s.d_rope % 2 == 0, ArgumentError, "mla_decode: d_rope (qr's last dim) must be "
                "positive and even, got ", s.d_rope);
  expect_float(in.qr, "qr", {s.b, s.h_q, s.d_rope}, "[b, h_q, d_rope]", s.device);
  if (in.qb.defined()) expect_float(in.qb, "qb", {s.n_mod, s.b, s.h_q}, "[n_mod, b, h_q]", s.device);
  VLM2MLA_CHECK(in.acc_out.defined() == in.mass_out.defined(), ArgumentError,
                "mla_decode: give both acc_out and mass_out, or neither");
  if (in.acc_out.defined()) {
    expect(in.acc_out, "acc_out", {at::kFloat, at::kBFloat16}, {s.n_mod, s.b, s.h_q, s.r_kv}, "[n_mod, b, h_q, r_kv]",
           s.device);
    expect(in.mass_out, "mass_out", {in.acc_out.scalar_type()}, {s.n_mod, s.b, s.h_q}, "[n_mod, b, h_q]", s.device);
    VLM2MLA_CHECK(in.acc_out.stride(3) == 1, ArgumentError, "mla_decode: acc_out's last dim must be contiguous");
  }
  expect(in.length, "length", {at::kInt, at::kLong}, {s.b}, "[b]", s.device);
  if (in.start.defined()) expect(in.start, "start", {at::kInt, at::kLong}, {s.b}, "[b]", s.device);
  VLM2MLA_CHECK(in.scale > 0 && std::isfinite(in.scale), ArgumentError, "mla_decode: scale must be positive");

  int64_t hr = 0;  // h_kv * d_rope
  switch (in.format) {
    case MlaCacheFormat::kBf16:
      VLM2MLA_CHECK(in.latent.defined() && in.latent.dim() == 3, ArgumentError,
                    "mla_decode: latent must be bf16 [b, t_cap, r_kv] with ", s.b, " sequences and r_kv ", s.r_kv);
      s.t_cap = in.latent.size(1);
      expect(in.latent, "latent", {at::kBFloat16}, {s.b, s.t_cap, s.r_kv}, "[b, t_cap, r_kv]", s.device);
      VLM2MLA_CHECK(in.k_rope.defined() && in.k_rope.dim() == 3, ArgumentError,
                    "mla_decode: k_rope must be bf16 [b, t_cap, h_kv * d_rope]");
      hr = in.k_rope.size(2);
      break;
    case MlaCacheFormat::kInt4:
      VLM2MLA_CHECK(in.latent_q.data.defined() && in.latent_q.data.dim() == 3, ArgumentError,
                    "mla_decode: latent_q.data must be uint8 [b, t_cap, r_kv / 2]");
      s.t_cap = in.latent_q.data.size(1);
      VLM2MLA_CHECK(in.k_rope_q.data.defined() && in.k_rope_q.data.dim() == 3, ArgumentError,
                    "mla_decode: k_rope_q.data must be uint8 [b, t_cap, h_kv * d_rope / 2]");
      hr = in.k_rope_q.data.size(2) * 2;
      break;
  }
  VLM2MLA_CHECK(hr > 0 && hr % s.d_rope == 0, ArgumentError, "mla_decode: the RoPE key width ", hr,
                " is not a multiple of d_rope ", s.d_rope, " (expected h_kv * d_rope)");
  s.h_kv = hr / s.d_rope;
  VLM2MLA_CHECK(s.h_q % s.h_kv == 0, ArgumentError, "mla_decode: h_q ", s.h_q, " is not a multiple of h_kv ", s.h_kv,
                " (RoPE key width ", hr, " / d_rope ", s.d_rope, ")");
  VLM2MLA_CHECK(s.t_cap > 0, ArgumentError, "mla_decode: the cache has no positions (t_cap = 0)");

  switch (in.format) {
    case MlaCacheFormat::kBf16:
      expect(in.k_rope, "k_rope", {at::kBFloat16}, {s.b, s.t_cap, hr}, "[b, t_cap, h_kv * d_rope]", s.device);
      expect_contiguous(in.latent, "latent");
      expect_contiguous(in.k_rope, "k_rope");
      break;
    case MlaCacheFormat::kInt4: {
      const QuantizedRows& lq = in.latent_q;
      const QuantizedRows& kq = in.k_rope_q;
      expect(lq.data, "latent_q.data", {at::kByte}, {s.b, s.t_cap, s.r_kv / 2}, "[b, t_cap, r_kv / 2]", s.device);
      VLM2MLA_CHECK(lq.scale.defined() && lq.scale.dim() == 3 && lq.scale.size(2) > 0 && s.r_kv % lq.scale.size(2) == 0,
                    ArgumentError, "mla_decode: latent_q.scale must be float16 [b, t_cap, r_kv / group_c] with a "
                    "group size dividing r_kv ", s.r_kv);
      s.group_c = s.r_kv / lq.scale.size(2);
      const int64_t ngc = s.r_kv / s.group_c;
      expect(lq.scale, "latent_q.scale", {at::kHalf}, {s.b, s.t_cap, ngc}, "[b, t_cap, r_kv / group_c]", s.device);
      expect(lq.lo, "latent_q.lo", {at::kHalf}, {s.b, s.t_cap, ngc}, "[b, t_cap, r_kv / group_c]", s.device);
      check_quant_shape(s.r_kv, 4, s.group_c, "mla_decode: latent_q");
      expect(kq.data, "k_rope_q.data", {at::kByte}, {s.b, s.t_cap, hr / 2}, "[b, t_cap, h_kv * d_rope / 2]", s.device);
      VLM2MLA_CHECK(kq.scale.defined() && kq.scale.dim() == 3 && kq.scale.size(2) > 0 && hr % kq.scale.size(2) == 0,
                    ArgumentError, "mla_decode: k_rope_q.scale must be float16 [b, t_cap, h_kv * d_rope / group_r] "
                    "with a group size dividing ", hr);
      s.group_r = hr / kq.scale.size(2);
      const int64_t ngr = hr / s.group_r;
      expect(kq.scale, "k_rope_q.scale", {at::kHalf}, {s.b, s.t_cap, ngr}, "[b, t_cap, h_kv * d_rope / group_r]",
             s.device);
      expect(kq.lo, "k_rope_q.lo", {at::kHalf}, {s.b, s.t_cap, ngr}, "[b, t_cap, h_kv * d_rope / group_r]", s.device);
      check_quant_shape(hr, 4, s.group_r, "mla_decode: k_rope_q");
      for (const at::Tensor* t : {&lq.data, &lq.scale, &lq.lo, &kq.data, &kq.scale, &kq.lo})
        expect_contiguous(*t, "the quantized store (latent_q / k_rope_q)");
      VLM2MLA_CHECK(in.window >= 0, ArgumentError, "mla_decode: window must be >= 0, got ", in.window);
      if (in.window > 0) {
        expect(in.latent_win, "latent_win", {at::kBFloat16}, {s.b, in.window, s.r_kv}, "[b, window, r_kv]", s.device);
        expect(in.k_rope_win, "k_rope_win", {at::kBFloat16}, {s.b, in.window, hr}, "[b, window, h_kv * d_rope]",
               s.device);
        expect_contiguous(in.latent_win, "latent_win");
        expect_contiguous(in.k_rope_win, "k_rope_win");
      }
      break;
    }
  }
  if (s.n_mod == 2) expect(in.modality, "modality", {at::kByte, at::kBool}, {s.b, s.t_cap}, "[b, t_cap]", s.device);
  VLM2MLA_CHECK(in.w_out.defined() == in.o_out.defined(), ArgumentError,
                "mla_decode: give both w_out and o_out, or neither");
  if (in.w_out.defined()) {
    VLM2MLA_CHECK(in.w_out.dim() == 3 && in.w_out.size(0) == s.h_kv && in.w_out.size(1) >= s.n_mod * s.r_kv + s.n_mod,
                  ArgumentError, "mla_decode: w_out must be bf16 [h_kv = ", s.h_kv, ", n >= n_mod * r_kv + n_mod = ",
                  s.n_mod * s.r_kv + s.n_mod, ", d_h], got ", shape_str(in.w_out.sizes()));
    const int64_t d_h = in.w_out.size(2);
    expect(in.w_out, "w_out", {at::kBFloat16}, {s.h_kv, in.w_out.size(1), d_h}, "[h_kv, n, d_h]", s.device);
    expect(in.o_out, "o_out", {at::kBFloat16}, {s.b, s.h_q, d_h}, "[b, h_q, d_h]", s.device);
    VLM2MLA_CHECK(in.w_out.is_contiguous() && in.o_out.is_contiguous(), ArgumentError,
                  "mla_decode: w_out and o_out must be contiguous (the combine reads and writes them in place)");
  }
  VLM2MLA_CHECK(s.b <= INT32_MAX && s.t_cap <= INT32_MAX && s.r_kv <= INT32_MAX && hr <= INT32_MAX, ArgumentError,
                "mla_decode: sizes beyond int32");
  return s;
}

int64_t check_mla_decode_ranges(const MlaDecodeInputs& in, const MlaDecodeShape& s) {
  at::Tensor length = in.length.to(at::kCPU, at::kLong);
  at::Tensor start = in.start.defined() ? in.start.to(at::kCPU, at::kLong) : at::zeros_like(length);
  const int64_t* lp = length.data_ptr<int64_t>();
  const int64_t* sp = start.data_ptr<int64_t>();
  int64_t longest = 0;
  for (int64_t i = 0; i < s.b; ++i) {
    VLM2MLA_CHECK(0 <= sp[i] && sp[i] <= lp[i] && lp[i] <= s.t_cap, ArgumentError, "mla_decode: sequence ", i,
                  " has start ", sp[i], " and length ", lp[i], "; need 0 <= start <= length <= t_cap (", s.t_cap, ")");
    longest = std::max(longest, lp[i] - sp[i]);
  }
  return longest;
}

}  // namespace vlm2mla
