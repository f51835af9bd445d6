#include "kvcache/quant.h"

#include "core/env_switch.h"
#include "core/error.h"

namespace vlm2mla {

namespace {
EnvSwitch fused_ring_write_switch(kEnvFusedCacheWrite);
}  // namespace

void set_fused_ring_write(bool on) { fused_ring_write_switch.set(on); }

bool fused_ring_write_enabled() { return fused_ring_write_switch.enabled(); }

void check_quant_shape(int64_t n, int64_t bits, int64_t group, const char* what) {
  const char* why = quant_shape_problem(n, bits, group);
  VLM2MLA_CHECK(!why, ArgumentError, what, ": ", why, " (got ", bits, " bits, group size ", group, ", row width ", n,
                ")");
}

QuantizedRows quantize_rows(const at::Tensor& x, int64_t bits, int64_t group) {
  const int64_t n = x.size(-1);
  check_quant_shape(n, bits, group, "quantize");
  std::vector<int64_t> grouped(x.sizes().begin(), x.sizes().end());
  grouped.back() = n / group;
  grouped.push_back(group);
  at::Tensor g = x.to(at::kFloat).reshape(grouped);  // [..., n/group, group]
  const double levels = static_cast<double>((1 << bits) - 1);
  at::Tensor lo = std::get<0>(g.min(-1));
  at::Tensor hi = std::get<0>(g.max(-1));
  at::Tensor scale = (hi - lo) / levels;
  scale = at::where(scale > 0, scale, at::ones_like(scale));
  // The stored (float16) parameters are what dequantization uses, so quantize against them.
  QuantizedRows q;
  q.scale = scale.to(at::kHalf);
  q.lo = lo.to(at::kHalf);
  at::Tensor s = q.scale.to(at::kFloat).unsqueeze(-1), l = q.lo.to(at::kFloat).unsqueeze(-1);
  at::Tensor codes = ((g - l) / s).round().clamp(0, levels).to(at::kByte);  // [..., n/group, group]
  std::vector<int64_t> packed_shape(x.sizes().begin(), x.sizes().end());
  packed_shape.back() = n * bits / 8;
  const int64_t per_byte = 8 / bits;
  packed_shape.push_back(per_byte);
  at::Tensor c = codes.reshape(packed_shape).to(at::kInt);  // [..., bytes, per_byte]
  at::Tensor packed = at::zeros_like(c.select(-1, 0));
  for (int64_t i = 0; i < per_byte; ++i) packed = packed.bitwise_or(c.select(-1, i) * (int64_t{1} << (i * bits)));
  q.data = packed.to(at::kByte);
  return q;
}

at::Tensor dequantize_rows(const QuantizedRows& q, int64_t bits, int64_t group, at::ScalarType dtype) {
  const int64_t per_byte = 8 / bits, mask = (1 << bits) - 1;
  at::Tensor d = q.data.to(at::kInt);  // [..., bytes]
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < per_byte; ++i) parts.push_back(d.div(int64_t{1} << (i * bits), "floor").bitwise_and(mask));
  at::Tensor codes = at::stack(parts, -1);  // [..., bytes, per_byte]
  std::vector<int64_t> grouped(q.scale.sizes().begin(), q.scale.sizes().end());
  grouped.push_back(group);
  at::Tensor x = codes.reshape(grouped).to(at::kFloat) * q.scale.to(at::kFloat).unsqueeze(-1) +
                 q.lo.to(at::kFloat).unsqueeze(-1);  // [..., n/group, group]
  std::vector<int64_t> out_shape(q.scale.sizes().begin(), q.scale.sizes().end());
  out_shape.back() *= group;
  return x.reshape(out_shape).to(dtype);
}

void quantized_ring_write(const at::Tensor& rows, const at::Tensor& pos, at::Tensor& window, QuantizedRows& q,
                          int64_t bits, int64_t group) {
  const int64_t w = window.size(1);
  at::Tensor slot = pos.remainder(w);                 // the ring slot of pos, holding pos - w when pos >= w
  at::Tensor leaving = window.index_select(1, slot);  // [b, 1, n]
  QuantizedRows out = quantize_rows(leaving, bits, group);
  at::Tensor qpos = (pos - w).clamp_min(0);
  q.data.index_copy_(1, qpos, out.data);
  q.scale.index_copy_(1, qpos, out.scale);
  q.lo.index_copy_(1, qpos, out.lo);
  window.index_copy_(1, slot, rows);
}

int64_t quantized_row_bytes(int64_t n, int64_t bits, int64_t group) {
  return n * bits / 8 + 2 * 2 * (n / group);
}

}  // namespace vlm2mla
