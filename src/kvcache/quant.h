// Group-wise asymmetric integer quantization of cache rows (the quantized KV caches, METHOD.md
// section 7). The format is shared by the caches, the CPU reference of the decode kernel and the
// CUDA kernel:
//   x [..., n] is cut into groups of `group` consecutive values along the last dim (per-token groups:
//   each cached token's vector is quantized on its own, so a token is final when it is written);
//   per group: lo = min, scale = (max - min) / (2^bits - 1) (1 when max == min), both stored as
//   float16; q = clamp(round((x - lo) / scale), 0, 2^bits - 1); x_hat = q * scale + lo.
//   Packing: 8 / bits codes per byte, code i of a byte in bits [i*bits, (i+1)*bits) (little end
//   first), so for int4 element 2j is the low nibble of byte j.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "kvcache/quant_shape.h"

namespace vlm2mla {

struct QuantizedRows {
  at::Tensor data;   // uint8 [..., n * bits / 8]
  at::Tensor scale;  // float16 [..., n / group]
  at::Tensor lo;     // float16 [..., n / group]
};

// ArgumentError (naming `what`) where quant_shape_problem() finds one.
void check_quant_shape(int64_t n, int64_t bits, int64_t group, const char* what);

// x [..., n] (any float dtype) -> codes and group parameters (computed in float32).
QuantizedRows quantize_rows(const at::Tensor& x, int64_t bits, int64_t group);

// -> [..., n] in `dtype`.
at::Tensor dequantize_rows(const QuantizedRows& q, int64_t bits, int64_t group, at::ScalarType dtype);

// Bytes one row of n values takes (codes + scales + mins).
int64_t quantized_row_bytes(int64_t n, int64_t bits, int64_t group);

// One decode step's write into a quantized store with a full-precision ring of the last w positions
// (kvcache/row_store.h): rows [b, 1, n] go to position pos ([1] int64, on the store's device) of the ring
// `window` [b, w, n] (slot pos % w), after the position leaving it, pos - w, is quantized from that slot
// into q ([b, cap, ...]) at pos - w (at 0 while pos < w: that row is not read before position 0 itself
// leaves the ring and is written there). rows must have the window's dtype. These libtorch steps are the
// twin of the fused CUDA kernel (kernels/ops.h fused_ring_write), which writes the same bits.
void quantized_ring_write(const at::Tensor& rows, const at::Tensor& pos, at::Tensor& window, QuantizedRows& q,
                          int64_t bits, int64_t group);

// Whether RowStore::write_at takes the fused kernel where it can (CUDA stores). On by default;
// VLM2MLA_FUSED_CACHE_WRITE=0 (or set_fused_ring_write(false)) runs the twin's libtorch steps instead.
void set_fused_ring_write(bool on);
bool fused_ring_write_enabled();

}  // namespace vlm2mla
