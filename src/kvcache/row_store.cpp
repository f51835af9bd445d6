#include "kvcache/row_store.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/ops.h"

namespace vlm2mla {

RowStore::RowStore(int64_t batch, int64_t n, int64_t capacity, const CacheSpec& spec,
                   at::ScalarType compute_dtype, at::Device device)
    : batch_(batch), n_(n), capacity_(std::max<int64_t>(capacity, 1)), spec_(spec),
      bits_(cache_type_bits(spec.type)), compute_dtype_(compute_dtype) {
  auto opts = at::TensorOptions().device(device);
  if (bits_ == 0) {
    plain_ = cache_zeros({batch, capacity_, n}, opts.dtype(cache_float_dtype(spec.type)));
    return;
  }
  check_quant_shape(n, bits_, spec.group, "--kv-cache");
  VLM2MLA_CHECK(spec.window >= 1, ArgumentError, "--kv-window must be at least 1, got ", spec.window);
  q_.data = cache_zeros({batch, capacity_, n * bits_ / 8}, opts.dtype(at::kByte));
  q_.scale = cache_zeros({batch, capacity_, n / spec.group}, opts.dtype(at::kHalf));
  q_.lo = cache_zeros({batch, capacity_, n / spec.group}, opts.dtype(at::kHalf));
  window_ = cache_zeros({batch, spec.window, n}, opts.dtype(compute_dtype));
}

int64_t RowStore::quantized_length(int64_t length) const {
  return bits_ == 0 ? 0 : std::max<int64_t>(0, length - spec_.window);
}

void RowStore::grow(int64_t needed, int64_t length) {
  int64_t cap = capacity_;
  while (cap < needed) cap *= 2;
  auto bigger = [&](at::Tensor& t) {
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    shape[1] = cap;
    at::Tensor b = cache_zeros(shape, t.options());
    b.narrow(1, 0, length).copy_(t.narrow(1, 0, length));
    t = b;
  };
  if (bits_ == 0) {
    bigger(plain_);
  } else {
    bigger(q_.data), bigger(q_.scale), bigger(q_.lo);
  }
  capacity_ = cap;
}

void RowStore::append(const at::Tensor& rows, int64_t length) {
  VLM2MLA_CHECK(rows.dim() == 3 && rows.size(0) == batch_ && rows.size(2) == n_, ArgumentError,
                "cache rows of shape ", rows.sizes(), " do not fit [", batch_, ", *, ", n_, "]");
  const int64_t s = rows.size(1), total = length + s;
  if (total > capacity_) grow(total, length);
  if (bits_ == 0) {
    plain_.narrow(1, length, s).copy_(rows);
    return;
  }
  const int64_t w = spec_.window;
  const at::Device dev = rows.device();
  // Positions leaving the window (or never entering it) are quantized: [q_old, q_new).
  const int64_t q_old = quantized_length(length), q_new = quantized_length(total);
  if (q_new > q_old) {
    std::vector<at::Tensor> parts;
    const int64_t from_ring_end = std::min(q_new, length);  // positions still in the ring
    if (from_ring_end > q_old) {
      at::Tensor slots = at::arange(q_old, from_ring_end, at::TensorOptions().dtype(at::kLong).device(dev)).remainder(w);
      parts.push_back(window_.index_select(1, slots));
    }
    if (q_new > length) parts.push_back(rows.narrow(1, 0, q_new - length).to(compute_dtype_));
    at::Tensor leaving = parts.size() == 1 ? parts[0] : at::cat(parts, 1);  // [b, q_new - q_old, n]
    QuantizedRows q = quantize_rows(leaving, bits_, spec_.group);
    q_.data.narrow(1, q_old, q_new - q_old).copy_(q.data);
    q_.scale.narrow(1, q_old, q_new - q_old).copy_(q.scale);
    q_.lo.narrow(1, q_old, q_new - q_old).copy_(q.lo);
  }
  // The newest min(s, w) positions enter the ring.
  const int64_t first = std::max(length, total - w);
  if (total > first) {
    at::Tensor slots = at::arange(first, total, at::TensorOptions().dtype(at::kLong).device(dev)).remainder(w);
    window_.index_copy_(1, slots, rows.narrow(1, first - length, total - first).to(compute_dtype_));
  }
}

at::Tensor RowStore::read(int64_t length) const {
  if (bits_ == 0) return plain_.narrow(1, 0, length);
  const int64_t ql = quantized_length(length);
  std::vector<at::Tensor> parts;
  if (ql > 0) {
    QuantizedRows view{q_.data.narrow(1, 0, ql), q_.scale.narrow(1, 0, ql), q_.lo.narrow(1, 0, ql)};
    parts.push_back(dequantize_rows(view, bits_, spec_.group, compute_dtype_));
  }
  if (length > ql) {
    at::Tensor slots = at::arange(ql, length, at::TensorOptions().dtype(at::kLong).device(window_.device()))
                           .remainder(spec_.window);
    parts.push_back(window_.index_select(1, slots));
  }
  if (parts.empty()) return window_.narrow(1, 0, 0);
  return parts.size() == 1 ? parts[0] : at::cat(parts, 1);
}

void RowStore::reserve(int64_t capacity, int64_t length) {
  if (capacity > capacity_) grow(capacity, length);
}

void RowStore::write_at(const at::Tensor& rows, const at::Tensor& pos) {
  VLM2MLA_CHECK(rows.dim() == 3 && rows.size(0) == batch_ && rows.size(1) == 1 && rows.size(2) == n_,
                ArgumentError, "cache rows of shape ", rows.sizes(), " do not fit [", batch_, ", 1, ", n_, "]");
  if (bits_ == 0) {
    plain_.index_copy_(1, pos, rows.to(plain_.scalar_type()));
    return;
  }
  const at::Tensor r = rows.to(compute_dtype_);
  if (fused_ring_write_enabled() && !fused_ring_write_unusable(r, pos, window_, q_, bits_, spec_.group)) {
    fused_ring_write(r, pos, window_, q_, bits_, spec_.group);  // one launch, the same bits
    return;
  }
  quantized_ring_write(r, pos, window_, q_, bits_, spec_.group);
}

at::Tensor RowStore::read_upto(const at::Tensor& last) const {
  if (bits_ == 0) return plain_;
  const int64_t w = spec_.window;
  at::Tensor j = at::arange(capacity_, at::TensorOptions().dtype(at::kLong).device(window_.device()));
  at::Tensor in_ring = (j > last - w).view({1, capacity_, 1});  // positions >= last + 1 - w
  at::Tensor ring = window_.index_select(1, j.remainder(w));    // [b, capacity, n]
  return at::where(in_ring, ring, dequantize_rows(q_, bits_, spec_.group, compute_dtype_));
}

void RowStore::fill_synthetic(int64_t length) {
  reserve(length, 0);
  if (bits_ == 0) {
    plain_.narrow(1, 0, length).normal_();
    return;
  }
  const int64_t ql = quantized_length(length);
  if (ql > 0) {
    q_.data.narrow(1, 0, ql).random_(0, 256);
    q_.scale.narrow(1, 0, ql).fill_(2.0 / ((1 << bits_) - 1));  // codes span [-1, 1]
    q_.lo.narrow(1, 0, ql).fill_(-1.0);
  }
  window_.normal_();
}

int64_t RowStore::bytes_allocated() const {
  if (bits_ == 0) return plain_.nbytes();
  return q_.data.nbytes() + q_.scale.nbytes() + q_.lo.nbytes() + window_.nbytes();
}

int64_t RowStore::bytes_per_position() const {
  if (bits_ == 0) return n_ * static_cast<int64_t>(plain_.element_size());
  return quantized_row_bytes(n_, bits_, spec_.group);
}

}  // namespace vlm2mla
