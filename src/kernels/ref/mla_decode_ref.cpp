#include "kernels/ref/mla_decode_ref.h"

#include <algorithm>

#include "core/error.h"

namespace vlm2mla {
namespace {

at::Tensor cpu(const at::Tensor& t) { return t.defined() ? t.to(at::kCPU) : t; }

QuantizedRows rows_of(const QuantizedRows& q, int64_t b, int64_t lo, int64_t hi) {
  QuantizedRows r;
  r.data = cpu(q.data[b].slice(0, lo, hi));
  r.scale = cpu(q.scale[b].slice(0, lo, hi));
  r.lo = cpu(q.lo[b].slice(0, lo, hi));
  return r;
}

// The keys of sequence b at positions [lo, hi) as the kernel reads them: [n, width] float64.
at::Tensor keys(const MlaDecodeInputs& in, const at::Tensor& full, const QuantizedRows& quant,
                const at::Tensor& ring, int64_t group, int64_t b, int64_t lo, int64_t hi) {
  switch (in.format) {
    case MlaCacheFormat::kBf16:
      return cpu(full[b].slice(0, lo, hi)).to(at::kDouble);
    case MlaCacheFormat::kInt4: {
      const int64_t qlen = std::max<int64_t>(0, hi - in.window);
      std::vector<at::Tensor> parts;
      const int64_t qhi = std::min(hi, qlen);
      if (qhi > lo) parts.push_back(dequantize_rows(rows_of(quant, b, lo, qhi), 4, group, at::kFloat).to(at::kDouble));
      const int64_t rlo = std::max(lo, qlen);
      if (hi > rlo) {
        at::Tensor slots = at::arange(rlo, hi, at::kLong).remainder(in.window);  // [n_ring]
        parts.push_back(cpu(ring[b]).index_select(0, slots).to(at::kDouble));
      }
      return at::cat(parts, 0);
    }
  }
  throw ArgumentError("mla_decode_ref: unknown cache format");
}

}  // namespace

MlaDecodeOutput mla_decode_ref(const MlaDecodeInputs& in, at::ScalarType dtype) {
  const MlaDecodeShape s = check_mla_decode_inputs(in);
  check_mla_decode_ranges(in, s);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor acc = at::zeros({s.n_mod, s.b, s.h_q, s.r_kv}, f64);  // [n_mod, b, h_q, r_kv]
  at::Tensor mass = at::zeros({s.n_mod, s.b, s.h_q}, f64);         // [n_mod, b, h_q]
  at::Tensor qa = cpu(in.qa).to(at::kDouble), qr = cpu(in.qr).to(at::kDouble);
  at::Tensor qb = in.qb.defined() ? cpu(in.qb).to(at::kDouble) : at::zeros({s.n_mod, s.b, s.h_q}, f64);
  at::Tensor length = cpu(in.length).to(at::kLong);
  at::Tensor start = in.start.defined() ? cpu(in.start).to(at::kLong) : at::zeros_like(length);
  const int64_t gs = s.h_q / s.h_kv;
  for (int64_t b = 0; b < s.b; ++b) {
    const int64_t lo = start[b].item<int64_t>(), hi = length[b].item<int64_t>(), n = hi - lo;
    if (n == 0) continue;  // an empty key range gives zeros
    at::Tensor c = keys(in, in.latent, in.latent_q, in.latent_win, s.group_c, b, lo, hi);  // [n, r_kv]
    at::Tensor k = keys(in, in.k_rope, in.k_rope_q, in.k_rope_win, s.group_r, b, lo, hi)
                       .view({n, s.h_kv, s.d_rope});  // [n, h_kv, R]
    at::Tensor mod = s.n_mod == 2 ? cpu(in.modality[b].slice(0, lo, hi)).ne(0).to(at::kLong)
                                  : at::zeros({n}, at::kLong);  // [n]
    at::Tensor s_lat = at::matmul(qa.select(1, b), c.t());                       // [n_mod, h_q, n]
    at::Tensor idx = mod.view({1, 1, n}).expand({1, s.h_q, n});
    at::Tensor score = s_lat.gather(0, idx).squeeze(0);                          // [h_q, n]
    at::Tensor q_r = qr[b].view({s.h_kv, gs, s.d_rope});                          // [h_kv, gs, R]
    score = score + at::matmul(q_r, k.permute({1, 2, 0})).reshape({s.h_q, n});   // [h_q, n]
    score = score + qb.select(1, b).index_select(0, mod).t();                    // [h_q, n]
    at::Tensor p = at::softmax(score * in.scale, -1);                             // [h_q, n]
    for (int64_t m = 0; m < s.n_mod; ++m) {
      at::Tensor pm = p * mod.eq(m).to(at::kDouble).view({1, n});  // [h_q, n]
      acc[m][b] = at::matmul(pm, c);
      mass[m][b] = pm.sum(-1);
    }
  }
  return {acc.to(dtype), mass.to(dtype), {}};
}

}  // namespace vlm2mla
